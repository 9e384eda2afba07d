"""The back-end contract (dragnb/backends/base.py), checked on every back-end that imports here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dragnb.backends import load_backend
from dragnb.backends.base import ADAM_BETAS, ADAM_EPS, STATE_KEYS, StepOutput, image_to_uint8
from dragnb.drag import core


@pytest.fixture(params=["torch", "ort"])
def backend_cls(request):
    try:
        return load_backend(request.param)
    except ImportError as e:
        pytest.skip(str(e))


def _ws0(G, seed=0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    return G.mapping(z, truncation_psi=0.7).numpy().astype(np.float32)


def _step_args(f0, handles_rc, targets_rc, render=False):
    r = handles_rc[:, 0]
    c = handles_rc[:, 1]
    return dict(handles_rc=handles_rc, targets_rc=targets_rc, ref_feats=np.ascontiguousarray(f0[:, r, c].T),
                fixed=None, f0_fixed=None, lambda_mask=10.0, r1=3, r2=5, tolerance=2.0, l1_tracking=False,
                lr=2e-3, render_image=render)


H0 = np.array([[30, 36]], dtype=np.int64)        # (row, col)
T0 = np.array([[30.0, 44.0]], dtype=np.float32)


def test_features_and_step_shapes(backend_cls, tiny_generator):
    G = tiny_generator
    b = backend_cls(G, 3)
    b.start(_ws0(G), "w+", 6, 2e-3)
    img, f0 = b.features()
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert f0.dtype == np.float32 and f0.shape == (G.feature_shape(3)[0], 64, 64)
    out = b.step(**_step_args(f0, H0, T0, render=True))
    assert isinstance(out, StepOutput)
    assert out.tracked_rc.dtype == np.int64 and out.tracked_rc.shape == (1, 2)
    assert out.distance.shape == (1,) and not out.converged
    assert out.image.shape == (64, 64, 3) and out.features is None
    np.testing.assert_array_equal(out.image, img)  # the step's image is of the latent before its update
    assert out.loss > 0 and out.mask == 0.0
    out = b.step(**_step_args(f0, out.tracked_rc, T0))
    assert out.image is None


def test_split_forward_renders_the_full_image(tiny_generator):
    """Grad up to the feature block + no-grad rest = one plain synthesis pass."""
    G = tiny_generator
    b = load_backend("torch")(G, 2)
    ws0 = _ws0(G, 3)
    b.start(ws0, "w+", 6, 2e-3)
    img, _ = b.features()
    ref = image_to_uint8(G.synthesis(torch.from_numpy(ws0), noise_mode="const")[0].numpy())
    np.testing.assert_array_equal(img, ref)


@pytest.mark.parametrize("space", ["w", "w+"])
def test_latent_space_structure(backend_cls, tiny_generator, space):
    G = tiny_generator
    b = backend_cls(G, 3)
    ws0 = _ws0(G)
    b.start(ws0, space, 4, 2e-3)
    _, f0 = b.features()
    handles = H0
    for _ in range(3):
        handles = b.step(**_step_args(f0, handles, T0)).tracked_rc
    ws = b.ws()
    assert ws.shape == ws0.shape and ws.dtype == np.float32
    np.testing.assert_array_equal(ws[:, 4:], ws0[:, 4:])  # untrained layers stay
    assert not np.allclose(ws[:, :4], ws0[:, :4])
    if space == "w":
        np.testing.assert_array_equal(ws[:, :4], np.repeat(ws[:, :1], 4, axis=1))
    else:
        assert not np.allclose(ws[:, 0], ws[:, 1])
    st = b.get_state()
    assert set(st) == set(STATE_KEYS)
    assert st["latent"].shape == (1, 4 if space == "w+" else 1, G.w_dim) and int(st["step"]) == 3


def test_state_round_trip_gives_identical_steps(backend_cls, tiny_generator):
    G = tiny_generator
    b = backend_cls(G, 3)
    b.start(_ws0(G), "w+", 6, 2e-3)
    _, f0 = b.features()
    h = b.step(**_step_args(f0, H0, T0)).tracked_rc
    state = b.get_state()
    first = [b.step(**_step_args(f0, h, T0)) for _ in range(3)]
    ws_first = b.ws()
    b2 = backend_cls(G, 3)
    b2.start(_ws0(G, 9), "w", 2, 1e-3)  # different everything: set_state must override it all
    b2.set_state(state)
    second = [b2.step(**_step_args(f0, h, T0)) for _ in range(3)]
    for a, c in zip(first, second):
        assert a.loss == c.loss
        np.testing.assert_array_equal(a.tracked_rc, c.tracked_rc)
    np.testing.assert_array_equal(ws_first, b2.ws())
    with pytest.raises(ValueError):
        b2.set_state({k: v for k, v in state.items() if k != "exp_avg"})


def test_converged_step_does_not_update(backend_cls, tiny_generator):
    G = tiny_generator
    b = backend_cls(G, 3)
    b.start(_ws0(G), "w+", 6, 2e-3)
    _, f0 = b.features()
    ws = b.ws()
    out = b.step(**_step_args(f0, H0, H0.astype(np.float32) + [[0, 1]]))
    assert out.converged and out.distance[0] <= 2.0
    np.testing.assert_array_equal(b.ws(), ws)
    assert int(b.get_state()["step"]) == 0


def test_adam_is_the_ort_rule(tiny_generator):
    """Two updates by hand: eps outside the bias correction (not torch.optim.Adam's placement)."""
    b = load_backend("torch")(tiny_generator, 3)
    b.start(_ws0(tiny_generator), "w+", 6, 1e-3)
    p0 = b.get_state()["latent"].astype(np.float64)
    rng = np.random.default_rng(0)
    g1, g2 = (rng.normal(size=p0.shape) * 1e-6 for _ in range(2))  # tiny, like latent gradients
    b1, b2 = ADAM_BETAS
    m = v = 0.0
    p = p0
    for t, g in enumerate((g1, g2), start=1):
        b._adam(torch.from_numpy(g.astype(np.float32)), 1e-3)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - 1e-3 * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + ADAM_EPS)
    np.testing.assert_allclose(b.get_state()["latent"], p, rtol=0, atol=1e-6)
    # torch.optim.Adam puts eps inside: measurably different for gradients this small.
    q = torch.from_numpy(p0.astype(np.float32)).requires_grad_(True)
    opt = torch.optim.Adam([q], lr=1e-3, eps=ADAM_EPS)
    for g in (g1, g2):
        q.grad = torch.from_numpy(g.astype(np.float32))
        opt.step()
    assert np.abs(q.detach().numpy() - p).max() > 1e-5


def test_motion_loss_zero_outside_and_border_windows(tiny_generator):
    """Points on the border: windows and disks are clipped; tracked points stay inside."""
    b = load_backend("torch")(tiny_generator, 3)
    b.start(_ws0(tiny_generator), "w+", 6, 2e-3)
    _, f0 = b.features()
    handles = np.array([[0, 0], [63, 63], [0, 63]], dtype=np.int64)
    targets = np.array([[6.0, 3.0], [57.0, 60.0], [5.0, 58.0]], dtype=np.float32)
    for _ in range(3):
        out = b.step(**_step_args(f0, handles, targets))
        handles = out.tracked_rc
        assert np.isfinite(out.loss)
        assert (handles >= 0).all() and (handles <= 63).all()
    _, _, dist = core.motion_loss(torch.from_numpy(f0), torch.from_numpy(handles), torch.from_numpy(targets),
                                  torch.from_numpy(core.disk_offsets(3)))
    assert torch.isfinite(dist).all()
