"""Projection and pivotal tuning in PyTorch on the tiny test generator: observable, stoppable, reproducible, the
model left alone, and the tuned weights' delta file round trip. The acceptance bars on the bundled model are in
tests/test_projection_quality.py (slow)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import make_tiny_generator

import dragnb
from dragnb.projection import PivotalTuner, Projector
from dragnb.projection.delta import DeltaError, apply_delta, load_delta, save_delta, weight_delta
from dragnb.projection.losses import MultiScaleSSIM, ReconstructionLoss, num_scales, psnr
from dragnb.projection.projector import lr_schedule, to_tensor, to_uint8


def _picture(G, seed=5):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        return to_uint8(G.synthesis(G.mapping(z, truncation_psi=0.7)))


def _state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def test_losses():
    x = to_tensor(np.random.RandomState(0).randint(0, 255, (64, 64, 3)).astype(np.uint8))
    assert float(MultiScaleSSIM(3, 3)(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(MultiScaleSSIM(3, 3)(x, -x)) > 0.5
    assert num_scales(128, 128) == 4 and num_scales(64, 32) == 2 and num_scales(8, 8) == 1
    loss = ReconstructionLoss(64, 64)
    total, l2, p = loss(x, x * 0.9)
    assert float(total) == pytest.approx(float(l2) + 0.1 * float(p), rel=1e-6)
    assert loss.name == "1 l2 + 0.1 ms-ssim" and ReconstructionLoss(64, 64, perceptual="none").name == "l2"
    with pytest.raises(ValueError):
        ReconstructionLoss(64, 64, perceptual="lpips")
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf") and psnr(a, a + 255) == pytest.approx(0.0)
    assert lr_schedule(0.0, 0.1) == 0.0 and lr_schedule(0.5, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("space", ["w+", "w"])
def test_projection_is_observable_and_improves(tiny_generator, space):
    G = tiny_generator
    before = _state(G)
    target = _picture(G)
    p = Projector(G, target, latent_space=space, num_steps=40, render_every=10, w_avg_samples=500)
    steps = list(p.run())
    assert [s.step for s in steps] == list(range(40))
    assert all((s.image is not None) == (s.step % 10 == 0 or s.step == 39) for s in steps)
    assert steps[0].image.shape == (64, 64, 3) and steps[0].image.dtype == np.uint8
    r = p.result()
    assert r.ws.shape == (1, G.num_ws, G.w_dim) and r.ws.dtype == np.float32
    if space == "w":
        assert np.allclose(r.ws, r.ws[:, :1])
    assert r.psnr > steps[0].psnr + 3 and r.steps == 40 and len(r.history) == 40
    assert set(r.noise) == {n for n, _ in G.synthesis.named_buffers() if n.endswith("noise_const")}
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())  # the model is left alone


def test_projection_stops_and_continues(tiny_generator):
    G = tiny_generator
    target = _picture(G)
    p = Projector(G, target, num_steps=12, w_avg_samples=200)
    it = p.run()
    first = [next(it) for _ in range(3)]
    p.stop()
    assert list(it) == [] and len(first) == 3
    rest = list(p.run())
    assert [s.step for s in rest] == list(range(3, 12))
    # same numbers as one uninterrupted run
    q = Projector(G, target, num_steps=12, w_avg_samples=200)
    whole = list(q.run())
    assert [s.loss for s in first + rest] == pytest.approx([s.loss for s in whole], rel=1e-5)


def test_stop_from_another_thread(tiny_generator):
    p = Projector(tiny_generator, _picture(tiny_generator), num_steps=10_000, w_avg_samples=100)
    threading.Timer(0.3, p.stop).start()
    n = sum(1 for _ in p.run())
    assert 0 < n < 10_000


def test_project_function_and_bad_targets(tiny_generator, tmp_path):
    from PIL import Image

    G = tiny_generator
    path = tmp_path / "pic.png"
    Image.fromarray(_picture(G)).resize((200, 150)).save(path)
    seen = []
    r = dragnb.project(G, path, num_steps=5, w_avg_samples=100, callback=lambda s: seen.append(s.step) or s.step == 2)
    assert seen == [0, 1, 2] and r.steps == 3
    with pytest.raises(ValueError, match="target must be uint8"):
        Projector(G, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="latent_space"):
        Projector(G, _picture(G), latent_space="z")


def test_pivotal_tuning_fits_the_pivot_and_leaves_the_model(tiny_generator, tmp_path):
    G = tiny_generator
    before = _state(G)
    target = _picture(G, seed=9)
    proj = Projector(G, target, num_steps=30, w_avg_samples=300)
    for _ in proj.run():
        pass
    r = proj.result()
    t = PivotalTuner(G, r.ws, target, r.noise, num_steps=30, lr=3e-3, render_every=5)
    steps = list(t.run())
    assert len(steps) == 30 and steps[0].psnr == pytest.approx(r.psnr, abs=0.05)  # tuning starts at the projection
    assert steps[-1].psnr > steps[0].psnr + 1 and steps[-1].image is not None
    assert steps[0].locality == pytest.approx(0.0, abs=1e-7)  # nothing changed yet at the regulariser's latents
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    T = t.generator()
    delta = weight_delta(G, T)
    assert delta and all(k.startswith("synthesis.") for k in delta)
    assert not any(k.endswith("noise_strength") for k in delta)  # noise strengths are not trained
    path = save_delta(tmp_path / "tuned.safetensors", G, delta, {"psnr": steps[-1].psnr})
    loaded, info = load_delta(path, G)
    assert info["psnr"] == steps[-1].psnr and set(loaded) == set(delta)
    R = apply_delta(G, loaded)
    with torch.no_grad():
        ws = torch.from_numpy(r.ws)
        assert np.abs(to_uint8(R.synthesis(ws)).astype(int) - to_uint8(T.synthesis(ws)).astype(int)).max() <= 1
    with pytest.raises(DeltaError, match="another base"):
        load_delta(path, make_tiny_generator(seed=1))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(DeltaError):
        load_delta(tmp_path / "bad.safetensors", G)
