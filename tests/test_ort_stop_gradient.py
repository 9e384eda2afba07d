"""The stop-gradient of the motion loss survives the ONNX export: with the ``dragnb::StopGradient`` marker ORT's
gradient equals PyTorch's; without it (``detach`` is dropped by the exporter) it is wrong; a lost marker raises."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import make_tiny_generator

from dragnb.backends import ort_export as E
from dragnb.drag import core, geometry

FB = 2  # the 16x16 block of a 32 px generator


@pytest.fixture(scope="module")
def small_G():
    return make_tiny_generator(img_resolution=32)


def _feeds(G, ws0):
    """Numpy inputs in STEP_INPUTS order: two active points, no mask (so the loss is smooth)."""
    with torch.no_grad():
        x, _ = G.synthesis.run_blocks(torch.from_numpy(ws0), 0, FB + 1, render_rgb=False)
        f0 = geometry.resize_features(x.numpy(), (32, 32))
    handles = np.array([[10, 12], [20, 8]], np.int64)
    r1, r2, tol = core.default_radii(32)
    ref = np.ascontiguousarray(f0[:, handles[:, 0], handles[:, 1]].T)
    return [ws0, np.diag((np.arange(G.num_ws) < 6).astype(np.float32)), handles,
            np.array([[15.0, 12.0], [18.0, 14.0]], np.float32), ref,
            core.window_offsets(r2), core.disk_offsets(r1), np.zeros((1, 1), np.float32),
            np.zeros((1, 1, 1), np.float32), np.array(10.0, np.float32), np.array(tol, np.float32), np.array(False)]


def _torch_grad(G, feeds):
    """PyTorch's gradient: the same module run eagerly, where ``detach`` does detach."""
    step = E.DragStep(G, FB, marker=False)
    step.latent.data = torch.from_numpy(feeds[0].copy())
    step(*[torch.from_numpy(np.asarray(f)) for f in feeds])[0].backward()
    return step.latent.grad.numpy()


def _ort_grad(folder, feeds):
    from onnxruntime.training.api import CheckpointState, Module

    state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    module = Module(str(folder / "training_model.onnx"), state, str(folder / "eval_model.onnx"))
    state.parameters[E.TRAINABLE].data = feeds[0]
    module.lazy_reset_grad()
    module(*feeds)
    return state.parameters[E.TRAINABLE].grad.copy()


@pytest.fixture(scope="module")
def grads(small_G, tmp_path_factory):
    G = small_G
    ws0 = G.mapping(torch.from_numpy(np.random.RandomState(3).randn(1, G.z_dim)).float(), truncation_psi=0.7).numpy()
    feeds = _feeds(G, ws0)
    out = {"torch": _torch_grad(G, feeds)}
    for marker in (True, False):
        folder = tmp_path_factory.mktemp(f"marker_{marker}")
        cfg = E.generate_training_artifacts(G, FB, folder, marker=marker)
        assert cfg["stop_gradient_markers"] == (1 if marker else 0)
        out[marker] = _ort_grad(folder, feeds)
    return out


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_marker_gives_the_torch_gradient(grads):
    assert np.linalg.norm(grads["torch"][:, 6:]) == 0  # untrained rows: exactly no gradient
    assert _rel(grads[True], grads["torch"]) < 1e-4


def test_without_the_marker_the_gradient_is_wrong(grads):
    assert _rel(grads[False], grads["torch"]) > 0.1


def test_marker_count_is_checked(small_G, tmp_path):
    n = E.export_step(small_G, FB, tmp_path / "step.onnx")
    model = onnx.load(str(tmp_path / "step.onnx"))
    assert E.count_markers(model) == n == 1
    E.check_markers(model, n, "ok")
    node = next(x for x in model.graph.node if x.domain == E.MARKER_DOMAIN)
    node.domain, node.op_type = "", "Identity"  # what detach() would have become
    with pytest.raises(E.MarkerMismatch, match="expected 1"):
        E.check_markers(model, n, "tampered graph")


def test_a_marker_lost_during_artifact_generation_raises(small_G, tmp_path, monkeypatch):
    """If ORT's tooling ever drops or rewrites the marker, generation fails instead of training wrongly."""
    from onnxruntime.training import artifacts

    real = artifacts.generate_artifacts

    def lossy(model, **kw):
        real(model, **kw)
        path = f"{kw['artifact_directory']}/training_model.onnx"
        m = onnx.load(path)
        for x in m.graph.node:
            if x.domain == E.MARKER_DOMAIN:
                x.domain, x.op_type = "", "Identity"
        onnx.save(m, path)

    monkeypatch.setattr(artifacts, "generate_artifacts", lossy)
    with pytest.raises(E.MarkerMismatch, match="training_model.onnx"):
        E.generate_training_artifacts(small_G, FB, tmp_path)
