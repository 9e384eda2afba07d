"""The bundled weights as the model card states them: fidelity and every part present, on 256 held-out
seeds (seed z's come from RandomState(seed); training batches from a different generator stream)."""

import pytest
import torch

import dragnb
from dragnb.toy.train import evaluate

torch.set_num_threads(1)


@pytest.mark.slow  # 256 renders and generations
def test_bundled_model_fidelity_and_parts():
    G = dragnb.load_generator("toyfaces")
    assert G.img_resolution == 128 and sum(p.numel() for p in G.parameters()) < 2_000_000
    r = evaluate(G, seeds=range(256), tol=0.015)
    assert r["psnr_db"] >= 28.0, r["psnr_db"]
    for part in ("eye_white_left", "eye_white_right", "pupil_left", "pupil_right", "mouth", "nose"):
        assert r["parts"][part]["found"] >= 0.95, (part, r["parts"][part])
