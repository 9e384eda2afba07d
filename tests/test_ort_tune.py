"""Pivotal tuning on ONNX Runtime: the same losses as PyTorch at every step, the artifacts cached and verified,
the weights read back into a PyTorch generator, and the copied runtime runs without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from dragnb.projection.ort_tune import OrtPivotalTuner, ensure_tune_artifacts, verify  # noqa: E402
from dragnb.projection.projector import to_tensor, to_uint8  # noqa: E402
from dragnb.projection.tuning import PivotalTuner, locality_batch  # noqa: E402


@pytest.fixture(scope="module")
def pivot_and_picture(tiny_generator):
    G = tiny_generator
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(np.random.RandomState(5).randn(1, G.z_dim)).float(), truncation_psi=0.7)
        other = G.mapping(torch.from_numpy(np.random.RandomState(6).randn(1, G.z_dim)).float())
        picture = to_uint8(G.synthesis(other))
    return ws.numpy(), picture


def test_ort_and_torch_tuning_agree(tiny_generator, pivot_and_picture):
    G = tiny_generator
    ws, picture = pivot_and_picture
    settings = dict(num_steps=8, lr=1e-2, render_every=1)
    o = OrtPivotalTuner(G, ws, picture, None, threads=1, **settings)
    t = PivotalTuner(G, ws, picture, None, **settings)
    a, b = list(o.run()), list(t.run())
    assert np.allclose([s.loss for s in a], [s.loss for s in b], rtol=5e-3)   # per iteration within 0.5 %
    assert abs(a[-1].psnr - b[-1].psnr) < 0.1
    assert np.abs(o.render().astype(int) - t.render().astype(int)).max() <= 2
    T = o.generator()  # the ORT weights in a PyTorch generator render what ORT renders
    with torch.no_grad():
        img = to_uint8(T.synthesis(torch.from_numpy(ws)))
    assert np.abs(img.astype(int) - o.render().astype(int)).max() <= 1
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in tiny_generator.state_dict().items())


def test_artifacts_are_cached_and_verified(tiny_generator, tmp_path):
    folder = ensure_tune_artifacts(tiny_generator)
    m = json.loads((folder / "manifest.json").read_text())
    assert verify(folder, m["key"]) is None
    assert set(m["config"]["trainable"]).isdisjoint(m["config"]["frozen"])
    assert not any(n.endswith("noise_strength") for n in m["config"]["trainable"])
    assert ensure_tune_artifacts(tiny_generator) == folder  # cached: same folder
    with open(folder / "checkpoint", "r+b") as f:  # a damaged file is found and the set made again
        f.seek(100)
        f.write(b"\0" * 8)
    assert verify(folder, m["key"]) is not None
    with pytest.warns(UserWarning, match="regenerating"):
        assert ensure_tune_artifacts(tiny_generator) == folder
    assert verify(folder, m["key"]) is None


def test_runtime_copy_runs_without_torch(tiny_generator, pivot_and_picture, tmp_path):
    G = tiny_generator
    ws, picture = pivot_and_picture
    folder = ensure_tune_artifacts(G)
    tuner = PivotalTuner(G, ws, picture, None, num_steps=3)
    reg_ws, reg_images = locality_batch(tuner.tuned, tuner.pivot, tuner.settings)
    from dragnb.projection.ort_tune import noise_feeds

    np.savez(tmp_path / "in.npz", pivot=ws, target=to_tensor(picture).numpy(), reg_ws=reg_ws, reg_target=reg_images,
             **noise_feeds(G, None))
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['tune_runtime.py', *sys.argv[1:]]\n"
            "import runpy; runpy.run_path('tune_runtime.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, ".", str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                        "--steps", "3", "--threads", "1"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 3
    with np.load(tmp_path / "out.npz") as z:
        assert set(z.files) == set(json.loads((folder / "manifest.json").read_text())["config"]["trainable"])
