"""Drags on the bundled ``toyfaces`` model mean something and converge.

Every drag runs through the public ``dragnb.DragSession`` API with the model's own default parameters
(its ``drag_defaults``, see docs/models.md), and every effect is measured on the generated image by colour
segmentation (``dragnb.toy.faces``), never by the tracker alone. Distances are fractions of the image
width W. Each case runs on several seeds, alternating sides and directions, and asserts on all of them;
the failure message lists every seed's numbers.

``render_every`` only controls which steps ``run()`` renders a frame for (the optimisation is the same), so
the drags here render only their last step.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

import dragnb
from dragnb.toy import dragcheck, faces

torch.set_num_threads(1)

SEEDS = (0, 1, 2, 3, 4, 5)
MAX_STEPS = dragcheck.MAX_STEPS


@functools.cache
def _model():
    return dragnb.load_generator("toyfaces")


def _width() -> int:
    return _model().img_width


@functools.cache
def _seed_image(seed: int) -> np.ndarray:
    return dragnb.DragSession(_model(), seed=seed).image


def _drag(seed: int, handle, target, mask=None) -> dict:
    """One single-point drag to convergence (or MAX_STEPS) with the model's defaults."""
    return dragcheck.drag(_model(), seed, handle, target, mask=mask, max_steps=MAX_STEPS)


def _eyes(image) -> dict:
    return dragcheck.eyes(image)


def _fmt(rows) -> str:
    return "; ".join(f"seed {s}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in r.items()) for s, r in rows)


# ----------------------------------------------------------------------------
# Drags mean something (the drags themselves: dragnb.toy.dragcheck)


@functools.cache
def _mouth_drag(seed: int) -> dict:
    """The right corner (odd seeds) or the left corner (even seeds) dragged 8% of W outward."""
    return dragcheck.mouth_corner(_model(), seed)


@pytest.mark.slow  # whole drags on six seeds
def test_mouth_corner_drag_widens_the_mouth():
    rows = [(s, _mouth_drag(s)) for s in SEEDS]
    assert all(r["widen"] >= 0.04 for _, r in rows), _fmt(rows)


@pytest.mark.slow  # whole drags on six seeds
def test_mouth_corner_drag_keeps_the_eyes_still():
    rows = [(s, _mouth_drag(s)) for s in SEEDS]
    assert all(r["eyes"] < 0.012 for _, r in rows), _fmt(rows)


@functools.cache
def _head_drag(seed: int) -> dict:
    return dragcheck.head_top(_model(), seed)


@pytest.mark.slow  # whole drags on six seeds
def test_head_top_drag_raises_the_head():
    rows = [(s, _head_drag(s)) for s in SEEDS]
    assert all(r["rise"] >= 0.04 for _, r in rows), _fmt(rows)


@functools.cache
def _eye_drag(seed: int) -> dict:
    """Alternately the left and the right eye, dragged 6% of W outward (seeds 0-3) or inward (4, 5) from its
    centre (eye white + pupil centroid); the eye's movement along the drag, as a fraction of the drag."""
    return dragcheck.eye(_model(), seed)


@pytest.mark.slow  # whole drags on six seeds
def test_eye_drag_moves_the_eye():
    rows = [(s, _eye_drag(s)) for s in SEEDS]
    assert all(r["fraction"] >= 0.60 for _, r in rows), _fmt(rows)


# ----------------------------------------------------------------------------
# A single-point drag of 8-15% of W converges, and a mask keeps its region


def _convergence_case(seed: int, case: int):
    """(handle, target) of a few kinds of drag of 8-15% of W on the face of ``seed``."""
    img = _seed_image(seed)
    seg = faces.segment(img)
    w = _width()
    x0, y0, x1, y1 = seg["face"][3]
    if case == 0:  # head top up 12%
        hx, hy = faces.head_top(img)
        return (hx, hy), (hx, hy - 0.12 * w)
    if case == 1:  # right cheek outward 10%
        h = (x1 - 1.0, seg["face"][1])
        return h, (h[0] + 0.10 * w, h[1])
    if case == 2:  # chin down 8%
        h = (seg["face"][0], y1 - 1.0)
        return h, (h[0], h[1] + 0.08 * w)
    if case == 3:  # mouth corner outward 15%
        (lx, ly), _ = faces.mouth_corners(img)
        return (lx, ly), (lx - 0.15 * w, ly)
    nx, ny = seg["nose"][:2]  # nose sideways 10%
    return (nx, ny), (nx + 0.10 * w, ny)


CONVERGENCE_CASES = [(seed, case) for case in range(5) for seed in (case, case + 5)]


@pytest.mark.slow  # whole drags on six seeds
def test_single_point_drags_converge_within_tolerance():
    rows = []
    for seed, case in CONVERGENCE_CASES:
        handle, target = _convergence_case(seed, case)
        r = _drag(seed, handle, target)
        length = float(np.hypot(target[0] - handle[0], target[1] - handle[1])) / _width()
        assert 0.08 - 1e-9 <= length <= 0.15 + 1e-9
        end = float(np.hypot(r["tracked"][0] - target[0], r["tracked"][1] - target[1]))
        rows.append((seed, {"case": case, "drag": length, "steps": r["steps"], "converged": r["converged"],
                            "end": end, "tol": r["tolerance"]}))
    assert all(r["converged"] and r["steps"] <= MAX_STEPS and r["end"] <= r["tol"] for _, r in rows), _fmt(rows)


@pytest.mark.slow  # whole drags on six seeds
def test_mask_keeps_the_fixed_region():
    """The mouth corner dragged 10% of W outward with the upper half of the image fixed, and without a mask:
    the fixed region's pixels change far less with the mask."""
    rows = []
    for seed in (0, 1, 2):
        img = _seed_image(seed)
        (x, y), _ = faces.mouth_corners(img)
        h = img.shape[0]
        fixed = np.zeros(img.shape[:2], bool)
        fixed[: int(0.55 * h)] = True  # hair, eyes and the top of the nose
        target = (x - 0.10 * _width(), y)
        change = {}
        for name, mask in (("free", None), ("masked", fixed)):
            r = _drag(seed, (x, y), target, mask=mask)
            change[name] = float(np.abs(r["after"].astype(float) - img.astype(float))[fixed].mean())
        rows.append((seed, change))
    assert all(r["free"] > 1.0 and r["masked"] < 0.4 * r["free"] for _, r in rows), _fmt(rows)


# ----------------------------------------------------------------------------
# The W space is smooth


def _geometry(image) -> dict:
    seg = faces.segment(image)
    e = _eyes(image)
    (mlx, _), (mrx, _) = faces.mouth_corners(image)
    return {"head_top_y": faces.head_top(image)[1], "face_x": seg["face"][0], "face_y": seg["face"][1],
            "left_eye_x": e["left"][0], "right_eye_x": e["right"][0], "eye_y": 0.5 * (e["left"][1] + e["right"][1]),
            "nose_x": seg["nose"][0], "mouth_width": mrx - mlx}


PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7))


@pytest.mark.parametrize("pair", PAIRS)
def test_w_interpolation_changes_geometry_monotonically(pair):
    G = _model()
    with torch.no_grad():
        w = [G.mapping(torch.from_numpy(dragnb.z_from_seed(s, G.z_dim)).float(), truncation_psi=0.7) for s in pair]
        ts = np.linspace(0.0, 1.0, 11)
        images = [G.synthesis((1 - t) * w[0] + t * w[1], noise_mode="const") for t in ts]
    images = [((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy() for x in images]
    geo = [_geometry(im) for im in images]
    bad = []
    for k in geo[0]:
        q = np.array([g[k] for g in geo])
        slack = 1.0 if k == "mouth_width" else 0.3  # mouth corners are whole columns; centroids: <= 0.15 px seen
        total = q[-1] - q[0]
        steps = np.diff(q) * (1 if total >= 0 else -1)
        if steps.min() < -slack:
            bad.append(f"{k}: {np.round(q, 2).tolist()}")
    assert not bad, bad


# ----------------------------------------------------------------------------
# The mechanism: a model's tuned drag defaults (safetensors metadata -> G.drag_defaults -> DragSession)


def test_bundled_model_carries_its_drag_defaults():
    from dragnb.toy.train import DRAG_DEFAULTS

    assert _model().drag_defaults == DRAG_DEFAULTS
    p = dragnb.DragSession(_model(), seed=0).params
    assert {k: p[k] for k in DRAG_DEFAULTS} == DRAG_DEFAULTS


def test_drag_defaults_round_trip_and_explicit_params_override(tmp_path):
    from conftest import make_tiny_generator

    G = make_tiny_generator()
    official = dragnb.DragSession(G, seed=0).params  # no drag_defaults: the official rules
    assert (official["feature_block"], official["num_layers"], official["tolerance"]) == (3, 6, 2.0)
    tuned = {"feature_block": 4, "num_layers": 8, "r1": 5, "tolerance": 1.5, "lr": 3e-3}  # any values
    path = dragnb.save_generator(G, tmp_path / "g.safetensors", drag_defaults=tuned)
    G2 = dragnb.load_generator(path)
    assert G2.drag_defaults == tuned
    assert dragnb.load_generator(dragnb.save_generator(G2, tmp_path / "h.safetensors")).drag_defaults == tuned
    assert dragnb.load_generator(dragnb.save_generator(G2, tmp_path / "i.safetensors", drag_defaults={})
                                 ).drag_defaults == {}

    s = dragnb.DragSession(G2, seed=0)
    assert {k: s.params[k] for k in tuned} == tuned
    assert s.params["r2"] == official["r2"] and s.params["lambda_mask"] == official["lambda_mask"]
    s = dragnb.DragSession(G2, seed=0, tolerance=2.5, num_layers=4, lr=1e-3)  # explicit params win
    assert (s.params["tolerance"], s.params["num_layers"], s.params["lr"]) == (2.5, 4, 1e-3)
    assert s.params["feature_block"] == 4
    s.set_params(tolerance=None)  # None = "derived from the model": the model's tuned value
    assert s.params["tolerance"] == 1.5
    s.add_point(handle=(30, 30), target=(34, 30))
    s.step()
    s.save(tmp_path / "sess")
    assert dragnb.DragSession.load(tmp_path / "sess").params == s.params


def test_bad_drag_defaults_are_rejected(tmp_path):
    from conftest import make_tiny_generator

    from dragnb.checkpoints.native import CheckpointError

    G = make_tiny_generator()
    with pytest.raises(TypeError):
        dragnb.save_generator(G, tmp_path / "g.safetensors", drag_defaults=[("r1", 3)])
    G.drag_defaults = {"feature_block": "big"}
    with pytest.raises(TypeError):  # validated with the other parameters
        dragnb.DragSession(G, seed=0)
    G.drag_defaults = {"r1": 4, "from_the_future": 1}
    with pytest.warns(UserWarning, match="from_the_future"):
        assert dragnb.DragSession(G, seed=0).params["r1"] == 4
    # metadata that is not a JSON object
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in G.state_dict().items()}
    meta = {"format": "dragnb-generator", "format_version": "1", "config": json.dumps(G.cfg.to_dict()),
            "drag_defaults": "[1, 2]"}
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="drag_defaults"):
        dragnb.load_generator(tmp_path / "bad.safetensors")
