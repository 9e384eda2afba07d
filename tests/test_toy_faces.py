"""The procedural face renderer behind the toyfaces model: determinism, continuity, masks, segmentation."""

import numpy as np
import pytest
import torch

from dragnb.toy import faces

torch.set_num_threads(1)

SMALL_KEYS = [k for k in faces.SEGMENT_KEYS if k not in ("background", "hair", "face")]


def test_seed_to_params_is_reproducible_and_in_range():
    assert faces.z_from_seed(7).shape == (1, faces.NUM_PARAMS)
    assert np.array_equal(faces.z_from_seed(7), np.random.RandomState(7).randn(1, faces.NUM_PARAMS))
    p = faces.params_from_seed(7)
    assert p == faces.params_from_seed(7)
    assert list(p) == list(faces.PARAM_NAMES)
    for name, lo, hi, _ in faces.PARAMS:
        assert lo <= p[name] <= hi
    assert p != faces.params_from_seed(8)


def test_seed_convention_matches_the_generator():
    from dragnb.stylegan import z_from_seed

    assert np.array_equal(z_from_seed(3, faces.NUM_PARAMS), faces.z_from_seed(3, faces.NUM_PARAMS))


def test_params_depend_on_normalised_z_only():
    z = faces.z_from_seed(1)
    assert faces.params_from_z(z) == pytest.approx(faces.params_from_z(3.0 * z), abs=1e-6)  # up to the 1e-8 epsilon


def test_render_is_deterministic():
    p = faces.params_from_seed(5)
    a, ma = faces.render(p, 64, masks=True)
    b, mb = faces.render(p, 64, masks=True)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert mb.shape == (len(faces.PARTS), 64, 64)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert np.array_equal(faces.render_seed(5), a)


def test_masks_sum_to_one_and_explain_the_image():
    p = faces.params_from_seed(11)
    img, m = faces.render(p, 64, masks=True)
    np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-6)
    assert m.min() >= 0 and m.max() <= 1
    recon = np.einsum("phw,pc->hwc", m, faces.face_colors(p))
    assert np.abs(recon - img).max() <= 0.5 + 1e-3
    for i, part in enumerate(faces.PARTS):  # every part is drawn, small parts several pixels big
        assert m[i].sum() >= (6 if part in faces.SMALL_PARTS else 30), part


def test_part_colours_stay_near_nominal():
    for seed in range(20):
        cols = faces.face_colors(faces.params_from_seed(seed))
        nominal = np.array([faces.PART_COLORS[p] for p in faces.PARTS], float)
        # Each colour stays nearer its own nominal colour than any other part's, and flat parts classify.
        d = np.linalg.norm(nominal[:, None] - nominal[None], axis=-1) + 1e9 * np.eye(len(nominal))
        assert (np.linalg.norm(cols - nominal, axis=1) < 0.45 * d.min(1)).all()
        flat = np.rint(cols).astype(np.uint8)[None]  # [1, P, 3]
        assert list(faces.classify(flat)[0]) == list(range(len(faces.PARTS)))


def test_image_changes_continuously_with_params():
    p = faces.params_from_seed(2)
    base = faces.render(p, 64).astype(float)
    for name, lo, hi, _ in faces.PARAMS:
        diffs = []
        for frac in (0.01, 0.04):
            q = dict(p)
            q[name] = float(np.clip(p[name] + frac * (hi - lo), lo, hi) if p[name] + frac * (hi - lo) <= hi
                            else p[name] - frac * (hi - lo))
            diffs.append(np.abs(faces.render(q, 64).astype(float) - base).mean())
        assert diffs[0] < 0.4, name  # a 1% step moves few pixel values (no jumps)
        assert diffs[1] > 0, name  # every parameter changes the picture


def test_params_change_continuously_with_z():
    z = faces.z_from_seed(4)[0]
    dz = np.random.RandomState(0).randn(faces.NUM_PARAMS)
    p0 = np.array(list(faces.params_from_z(z).values()))
    spans = np.array([hi - lo for _, lo, hi, _ in faces.PARAMS])
    steps = [np.abs(np.array(list(faces.params_from_z(z + e * dz).values())) - p0) / spans for e in (1e-3, 1e-2)]
    assert steps[0].max() < 2e-3 and steps[1].max() < 2e-2


def test_segmentation_finds_every_part_on_renders():
    for seed in range(40):
        img, m = faces.render_seed(seed, masks=True)
        seg = faces.segment(img)
        exact = faces.part_centroids_from_masks(m)
        for key in faces.SEGMENT_KEYS:
            assert key in seg, (seed, key)
        for key in SMALL_KEYS:
            err = np.hypot(seg[key][0] - exact[key][0], seg[key][1] - exact[key][1])
            assert err < 0.015 * 64, (seed, key, err)
        assert seg["eye_white_left"][0] < seg["eye_white_right"][0]
        assert seg["pupil_left"][0] < seg["pupil_right"][0]


def test_segmentation_attributes_edge_blends_to_touching_parts():
    # A skin-mouth blend is nearer the nose colour than either end; it must not be called nose.
    skin, mouth = np.array(faces.PART_COLORS["face"]), np.array(faces.PART_COLORS["mouth"])
    blend = np.rint(0.5 * skin + 0.5 * mouth).astype(np.uint8)[None, None]
    assert faces.PARTS[int(faces.classify(blend)[0, 0])] in ("face", "mouth")


def test_landmarks_follow_the_parameters():
    p = faces.params_from_seed(9)
    img = faces.render(p, 64)
    (xl, yl), (xr, yr) = faces.mouth_corners(img)
    wider = dict(p, mouth_width=p["mouth_width"] + 0.08)
    (xl2, _), (xr2, _) = faces.mouth_corners(faces.render(wider, 64))
    assert xl2 < xl and xr2 > xr
    assert (xr2 - xl2) - (xr - xl) == pytest.approx(2 * 0.08 * p["head_ry"] * 64, abs=1.5)
    top = faces.head_top(img)
    higher = faces.head_top(faces.render(dict(p, head_y=p["head_y"] - 0.05), 64))
    assert higher[1] == pytest.approx(top[1] - 0.05 * 64, abs=0.4)  # sub-pixel
    eyes = faces.eye_centres(img)
    apart = faces.eye_centres(faces.render(dict(p, eye_spacing=p["eye_spacing"] + 0.06), 64))
    assert apart["right"][0] - apart["left"][0] > eyes["right"][0] - eyes["left"][0] + 1.0


def test_training_batch_is_a_function_of_seed_and_step():
    from dragnb.toy.train import make_batch

    a, b = make_batch(0, 3, 2, 64, 6.0), make_batch(0, 3, 2, 64, 6.0)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    z, img, w = a
    assert z.shape == (2, faces.NUM_PARAMS) and img.shape == (2, 3, 64, 64) and w.shape == (2, 1, 64, 64)
    assert img.min() >= -1 and img.max() <= 1
    assert w.min() == 1.0 and w.max() == 7.0  # small parts weigh 1 + part_weight
    assert not torch.equal(make_batch(0, 4, 2, 64, 6.0)[0], z)


def test_segmentation_ignores_dark_blobs_outside_the_eyes():
    img = faces.render_seed(3)
    ref = faces.segment(img)
    img = img.copy()
    img[2:8, 2:8] = faces.PART_COLORS["pupil"]  # bigger than a pupil, not in an eye white
    seg = faces.segment(img)
    for key in ("pupil_left", "pupil_right"):
        assert seg[key][:2] == pytest.approx(ref[key][:2]), key


def test_one_eye_and_the_mouth_move_on_their_own():
    """eye_dx_* moves that eye only; mouth_dx moves the mouth only (the toy drag tests rely on it)."""
    p = faces.params_from_seed(2)
    seg = faces.segment(faces.render(p, 64))
    shifted = faces.segment(faces.render(dict(p, eye_dx_right=p["eye_dx_right"] + 0.1), 64))
    assert shifted["eye_white_right"][0] > seg["eye_white_right"][0] + 1.0
    assert shifted["eye_white_left"][:2] == pytest.approx(seg["eye_white_left"][:2], abs=1e-6)
    assert shifted["mouth"][:2] == pytest.approx(seg["mouth"][:2], abs=1e-6)
    moved = faces.segment(faces.render(dict(p, mouth_dx=p["mouth_dx"] - 0.1), 64))
    assert moved["mouth"][0] < seg["mouth"][0] - 1.0
    for key in ("eye_white_left", "eye_white_right", "nose"):
        assert moved[key][:2] == pytest.approx(seg[key][:2], abs=1e-6), key
