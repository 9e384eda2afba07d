"""DragGAN on StyleGAN3 (the NVIDIA-made test networks of tests/data/sg3): the features of a synthesis layer
(layer 5 by default, as the official code), and the ORT back-end agreeing with PyTorch step by step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dragnb.checkpoints import load_generator
from dragnb.session import DragSession

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data" / "sg3"
POINTS = [((20, 30), (26, 30)), ((36, 40), (36, 46)), ((40, 20), (36, 18))]  # (x, y) handle -> target
MASK = np.zeros((64, 64), bool)
MASK[44:60, 44:60] = True


@pytest.fixture(scope="module")
def sg3t():
    return load_generator(DATA / "sg3t64.safetensors")


@pytest.fixture(scope="module")
def sg3r():
    return load_generator(DATA / "sg3r64.safetensors")


def _drag(G, backend, steps, points=POINTS, mask=MASK, **kw):
    s = DragSession(G, seed=1, backend=backend, render_every=1000, **kw)
    for h, t in points:
        s.add_point(handle=h, target=t)
    if mask is not None:
        s.set_mask(mask)
    ws0 = s.ws
    return s, list(s.run(max_steps=steps)), s.ws - ws0


def _compare(a, b, da, db):
    """The acceptance bounds: tracked points equal every step, loss within 0.1 %, ws change within 0.1 %."""
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.handle_points == y.handle_points, f"step {x.step}"
        assert abs(x.loss - y.loss) <= 1e-3 * abs(x.loss), f"step {x.step}: {x.loss} vs {y.loss}"
    assert np.linalg.norm(da) > 0
    assert np.linalg.norm(da - db) <= 1e-3 * np.linalg.norm(da)
    assert np.abs(a[-1].image.astype(int) - b[-1].image).max() <= 2


def test_default_feature_layer_is_the_official_one(sg3t):
    s = DragSession(sg3t, seed=0)
    assert s.params["feature_block"] == 5
    c, h, w = sg3t.feature_shape(5)
    assert (c, h, w) == (16, 52, 52)  # layer 5 with its margins, resized to the image for tracking
    feats, _ = s.tracking_features()
    assert feats.shape[0] == c and feats.shape[-2:] == (64, 64)


def test_torch_drag_moves_points_with_any_layer_and_w(sg3t):
    for kw in ({"feature_block": 8}, {"latent_space": "w"}, {"feature_block": 14}):
        s, res, d = _drag(sg3t, "torch", 3, **kw)
        assert len(res) == 3 and np.linalg.norm(d) > 0 and res[-1].image.shape == (64, 64, 3)
        if "latent_space" in kw:
            # W: one latent for the first num_layers (6) ws, the rest untouched (as the official code)
            assert np.allclose(d[0, 0], d[0, 5]) and not d[0, 6:].any()


def test_ort_agrees_with_torch_three_points_and_mask(sg3t):
    _, a, da = _drag(sg3t, "torch", 10)
    s, b, db = _drag(sg3t, "ort", 10)
    assert s.backend_name == "ort"
    _compare(a, b, da, db)
    # The exported folder alone (torch-free model) drags the same way.
    folder = s.ort_artifacts
    s2 = DragSession(folder, seed=1, render_every=1000)
    assert s2.G.num_blocks == 15 and s2.params["feature_block"] == 5
    for h, t in POINTS:
        s2.add_point(handle=h, target=t)
    s2.set_mask(MASK)
    c = list(s2.run(max_steps=3))
    assert [r.handle_points for r in c] == [r.handle_points for r in b[:3]]


@pytest.mark.slow
def test_ort_agrees_with_torch_on_config_r(sg3r):
    """Config R: 1x1 convolutions and radially symmetric (2-D) down-sampling filters in the training graph."""
    _, a, da = _drag(sg3r, "torch", 5, feature_block=7)
    _, b, db = _drag(sg3r, "ort", 5, feature_block=7)
    _compare(a, b, da, db)


def test_session_file_and_workbench_on_a_stylegan3_checkpoint(tmp_path):
    path = DATA / "sg3t64.safetensors"
    s = DragSession(str(path), seed=2, render_every=1000)
    s.add_point(handle=(20, 30), target=(26, 30))
    list(s.run(max_steps=2))
    saved = s.save(tmp_path / "s.json")
    s2 = DragSession.load(saved)
    assert s2.num_steps == s.num_steps and np.array_equal(s2.ws, s.ws) and np.array_equal(s2.image, s.image)
    from dragnb.widgets.workbench import Workbench

    wb = Workbench(session=s2, display_size=128)
    assert wb.session is s2


@pytest.mark.slow  # an ONNX export of a StyleGAN3 generator
def test_onnx_inference_export_matches(tmp_path, sg3t):
    """dragnb.export on StyleGAN3: the ONNX synthesis graph renders NVIDIA's image (as the PyTorch one does)."""
    from dragnb.backends.onnx_export import OnnxGenerator, export_mapper, export_synthesis

    og = OnnxGenerator(export_mapper(sg3t, tmp_path / "m.onnx"), export_synthesis(sg3t, tmp_path / "s.onnx"))
    d = np.load(DATA / "sg3t64.npz")
    ws = og.mapping(d["z"][:1], 0.7)
    assert np.abs(og.render(ws)[0] - d["img_psi07"][0]).max() <= 1e-3


@pytest.mark.slow  # a second ORT export of the StyleGAN3 step
def test_transform_is_part_of_the_ort_artifacts(sg3t):
    """The user transform is a buffer of the exported graphs: a moved image gets its own artifacts, and ORT
    drags it as PyTorch does."""
    from dragnb.backends.ort_cache import cache_key

    key0 = cache_key(sg3t, 5)[0]
    sg3t.set_transform(translate=(0.1, 0.0), angle=5.0)
    try:
        assert cache_key(sg3t, 5)[0] != key0
        _, a, da = _drag(sg3t, "torch", 3, mask=None)
        _, b, db = _drag(sg3t, "ort", 3, mask=None)
        _compare(a, b, da, db)
    finally:
        sg3t.set_transform()
    assert cache_key(sg3t, 5)[0] == key0


@pytest.mark.slow
def test_official_mode_on_stylegan3_agrees_across_backends(sg3t):
    """compat="official" on a StyleGAN3 network: PyTorch (the official dense map and grid_sample) and ORT (our
    sampled features) take the same drag to rounding (no mask: a mask's L1 signs would amplify the rounding)."""
    pytest.importorskip("onnxruntime")
    s_t, a, da = _drag(sg3t, "torch", 8, mask=None, compat="official", r1=2)  # 64 px: the official r1 rounds to 0
    s_o, b, db = _drag(sg3t, "ort", 8, mask=None, compat="official", r1=2)
    assert s_t.params["r1"] == s_o.params["r1"] == 2 and s_t.params["lr"] == 1e-3
    _compare(a, b, da, db)
