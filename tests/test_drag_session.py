"""DragSession on the tiny test generator: convergence, mask, points, undo/reset, save/load, stop, bad input."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest

from dragnb.drag.params import DragParams
from dragnb.session import DragSession, StepResult

DRAG = ((36, 30), (44, 30))  # (x, y) handle -> target: 8 px = 12.5 % of the 64 px width


def fingerprint(s: DragSession):
    """Everything a failed call must leave unchanged."""
    return (s.handle_points, s.target_points, None if s.mask is None else s.mask.tobytes(), s.ws.tobytes(),
            s.params, s.num_steps, len(s._history), s.seed)


# ----------------------------------------------------------------------------
# The algorithm


def test_single_point_drag_converges(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    img0 = s.image
    assert s.params["tolerance"] == 2.0 and (s.params["r1"], s.params["r2"]) == (3, 5)
    assert s.params["feature_block"] == 3 and s.params["num_layers"] == 6
    assert s.add_point(handle=DRAG[0], target=DRAG[1]) == 0
    results = list(s.run())
    assert isinstance(results[0], StepResult)
    assert [r.step for r in results] == list(range(len(results)))
    last = results[-1]
    assert last.converged and len(results) <= 200
    (hx, hy), (tx, ty) = s.handle_points[0], s.target_points[0]
    assert math.hypot(tx - hx, ty - hy) <= s.params["tolerance"]
    assert last.distance[0] <= s.params["tolerance"]
    np.testing.assert_array_equal(results[0].image, img0)  # step 0 shows the seed image
    assert not np.array_equal(s.image, img0)
    assert all(r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8 for r in results)
    assert all(r.ms > 0 and np.isfinite(r.loss) for r in results)
    # Converged: another step changes nothing.
    ws = s.ws
    assert s.step().converged
    np.testing.assert_array_equal(s.ws, ws)


def test_needs_f0_marks_the_first_step_of_a_drag(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    s.add_point(handle=(20, 30), target=(30, 30))
    assert s.needs_f0
    s.step()
    assert not s.needs_f0
    list(s.run(max_steps=2))  # a new run() continues the optimisation: no F0
    assert not s.needs_f0
    s.move_point(0, target=(32, 30))
    assert s.needs_f0


def test_mask_keeps_the_fixed_region(tiny_generator):
    fixed = np.zeros((64, 64), bool)
    fixed[:, :20] = True  # the left third must not change

    def change_in_fixed(mask):
        s = DragSession(tiny_generator, seed=2)
        img0 = s.image.astype(float)
        s.add_point(handle=DRAG[0], target=DRAG[1])
        if mask is not None:
            s.set_mask(mask)
        results = list(s.run())
        assert results[-1].converged
        assert (results[-1].mask > 0) == (mask is not None)
        return np.abs(s.image.astype(float) - img0).mean(-1)[fixed].mean()

    without, with_mask = change_in_fixed(None), change_in_fixed(fixed)
    assert with_mask < 0.6 * without, (with_mask, without)


def test_three_pairs(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    for h, t in [((20, 20), (26, 22)), ((44, 24), (40, 30)), ((32, 48), (32, 41))]:
        s.add_point(handle=h, target=t)
    results = list(s.run())
    assert results[-1].converged
    assert len(results[-1].distance) == 3 and max(results[-1].distance) <= s.params["tolerance"]


def test_border_points_never_crash(tiny_generator):
    s = DragSession(tiny_generator, seed=1)
    s.add_point(handle=(0, 0), target=(5, 6))
    s.add_point(handle=(63, 63), target=(58, 60))
    s.add_point(handle=(63, 0), target=(63, 7))
    for r in s.run(8):
        assert all(0 <= x <= 63 and 0 <= y <= 63 for x, y in r.handle_points)
        assert np.isfinite(r.loss)


@pytest.mark.parametrize("space", ["w", "w+"])
def test_w_and_w_plus(tiny_generator, space):
    s = DragSession(tiny_generator, seed=0, latent_space=space)
    ws0 = s.ws
    s.add_point(handle=DRAG[0], target=DRAG[1])
    results = list(s.run())
    assert results[-1].converged
    ws = s.ws
    np.testing.assert_array_equal(ws[:, 6:], ws0[:, 6:])  # only the first num_layers = 6 ws are optimised
    rows_equal = all(np.array_equal(ws[0, 0], ws[0, i]) for i in range(6))
    assert rows_equal == (space == "w")


# ----------------------------------------------------------------------------
# Points, history


def test_point_editing(tiny_generator):
    s = DragSession(tiny_generator)
    assert s.add_point(handle=(10.4, 20.6), target=(15.5, 20)) == 0
    assert s.handle_points == [(10.0, 21.0)]  # handles snap to pixels; targets stay fractional
    assert s.target_points == [(15.5, 20.0)]
    assert s.add_point((30, 30), (35, 30)) == 1
    s.move_point(0, target=(12, 25))
    s.move_point(-1, handle=(31, 31))
    assert s.target_points[0] == (12.0, 25.0) and s.handle_points[1] == (31.0, 31.0)
    s.remove_point(0)
    assert s.handle_points == [(31.0, 31.0)]
    s.clear_points()
    assert s.handle_points == [] and s.target_points == []


def test_undo_and_reset(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    img0, ws0 = s.image, s.ws
    assert not s.can_undo and s.undo() is False
    s.add_point(handle=DRAG[0], target=DRAG[1])
    list(s.run(5))  # drag 1
    img1, ws1, h1 = s.image, s.ws, s.handle_points
    assert not np.array_equal(ws1, ws0)
    list(s.run(5))  # drag 2 (each run() call is one drag)
    assert s.undo()
    np.testing.assert_array_equal(s.ws, ws1)
    np.testing.assert_array_equal(s.image, img1)
    assert s.handle_points == h1 and s.num_steps == 5
    assert s.undo()
    np.testing.assert_array_equal(s.ws, ws0)
    np.testing.assert_array_equal(s.image, img0)
    assert s.handle_points == [(36.0, 30.0)] and s.num_steps == 0
    assert not s.undo()
    # Steps after an undo continue a fresh drag from the restored state.
    list(s.run(3))
    s.reset()
    np.testing.assert_array_equal(s.image, img0)
    np.testing.assert_array_equal(s.ws, ws0)
    assert s.handle_points == [(36.0, 30.0)] and s.num_steps == 0
    assert s.undo()  # reset is undoable
    assert s.num_steps == 3 and not np.array_equal(s.ws, ws0)


def test_undo_after_step_calls_and_edit(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    ws0 = s.ws
    s.add_point(handle=DRAG[0], target=DRAG[1])
    s.step()
    s.step()
    s.move_point(0, target=(40, 36))  # ends the drag made of two step() calls
    s.step()
    assert s.undo()  # before the step after the edit: edited target kept
    assert s.target_points == [(40.0, 36.0)] and s.num_steps == 2
    assert s.undo()
    np.testing.assert_array_equal(s.ws, ws0)
    assert s.target_points == [(44.0, 30.0)]


def test_set_seed_and_params(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    img0 = s.image
    s.add_point(handle=DRAG[0], target=DRAG[1])
    s.set_seed(5)
    assert s.seed == 5 and s.handle_points == [] and not np.array_equal(s.image, img0)
    s.set_seed(0)
    np.testing.assert_array_equal(s.image, img0)
    s.set_params(lr=1e-3, r1=2.5, r2=4, tolerance=1.5, feature_block=2, num_layers=3, l1_tracking=True)
    p = s.params
    assert (p["lr"], p["r1"], p["r2"], p["tolerance"], p["feature_block"], p["num_layers"]) == (1e-3, 2.5, 4, 1.5, 2, 3)
    assert set(p) == set(DragParams.names())
    s.add_point(handle=DRAG[0], target=DRAG[1])
    s.step()
    ws = s.ws
    s.set_params(feature_block=1)  # a new back-end keeps the latent
    np.testing.assert_array_equal(s.ws, ws)
    assert s.step().step == 1


def test_render_every(tiny_generator):
    s = DragSession(tiny_generator, seed=0, render_every=3, tolerance=0.5)
    s.add_point(handle=DRAG[0], target=DRAG[1])
    results = list(s.run(7))
    assert [r.image is not None for r in results] == [False, False, True, False, False, True, True]
    assert len(s.recording) == 3


# ----------------------------------------------------------------------------
# Save / load, auto-save


@pytest.mark.parametrize("form", ["folder", "npz", "model_path"])
def test_save_load_continues_identically(tiny_generator, tiny_model_path, tmp_path, form):
    model = tiny_model_path if form == "model_path" else tiny_generator
    mask = np.zeros((64, 64), bool)
    mask[50:] = True

    def fresh():
        s = DragSession(model, seed=4, tolerance=0.5)
        s.add_point(handle=DRAG[0], target=DRAG[1])
        s.set_mask(mask)
        list(s.run(2))  # a finished drag in the history
        s.add_point(handle=(20, 40), target=(24, 44))
        return s

    a = fresh()
    ref = [a.step() for _ in range(8)]
    b = fresh()
    for _ in range(3):
        b.step()
    path = tmp_path / ("s.npz" if form == "npz" else "saved")
    b.save(path)
    c = DragSession.load(path)
    assert c.handle_points == b.handle_points and c.params == b.params
    np.testing.assert_array_equal(c.mask, mask)
    cont = [c.step() for _ in range(5)]
    for r, q in zip(ref[3:], cont):
        assert (r.step, r.loss, r.handle_points, r.distance) == (q.step, q.loss, q.handle_points, q.distance)
        np.testing.assert_array_equal(r.image, q.image)
    np.testing.assert_array_equal(a.ws, c.ws)
    # The history came along: undo twice goes back before the first drag.
    assert c.undo() and c.undo()
    assert c.num_steps == 0 and c.handle_points == [(36.0, 30.0)]


def test_autosave_after_each_drag(tiny_generator, tmp_path):
    s = DragSession(tiny_generator, seed=0, autosave_dir=tmp_path / "auto")
    s.add_point(handle=DRAG[0], target=DRAG[1])
    s.step()
    assert DragSession.load(tmp_path / "auto").num_steps == 1  # saved after every step
    list(s.run(3))
    assert (tmp_path / "auto" / "session.json").exists()
    t = DragSession.load(tmp_path / "auto")
    np.testing.assert_array_equal(t.ws, s.ws)
    assert t.num_steps == 4 and t.can_undo
    # session.json is a readable copy; the npz alone is authoritative (one atomic rename per save).
    (tmp_path / "auto" / "session.json").write_text("{}")
    assert DragSession.load(tmp_path / "auto").num_steps == 4


def test_every_edit_is_durable_once_it_returns(tiny_generator, tmp_path):
    """With an autosave folder, what a crash right after any call would leave is what that call made."""
    auto = tmp_path / "auto"
    s = DragSession(tiny_generator, seed=2, autosave_dir=auto)
    assert DragSession.load(auto).seed == 2  # a crash before the first step leaves the session too
    s.add_point(handle=DRAG[0], target=DRAG[1])
    assert DragSession.load(auto).handle_points == [DRAG[0]]
    s.move_point(0, target=(30, 36))
    assert DragSession.load(auto).target_points == [(30.0, 36.0)]
    fixed = np.zeros((64, 64), bool)
    fixed[:8] = True
    s.set_mask(fixed)
    np.testing.assert_array_equal(DragSession.load(auto).mask, fixed)
    s.set_params(lr=1e-3, r1=2.5)
    assert DragSession.load(auto).params["r1"] == 2.5
    s.set_latent_space("w")
    assert DragSession.load(auto).latent_space == "w"
    s.set_seed(5, truncation_psi=0.5)
    t = DragSession.load(auto)
    assert (t.seed, t.truncation_psi, t.handle_points) == (5, 0.5, [])
    np.testing.assert_array_equal(t.ws, s.ws)


def test_loading_into_its_own_autosave_folder_keeps_it(tiny_generator, tmp_path):
    auto = tmp_path / "auto"
    s = DragSession(tiny_generator, seed=0, autosave_dir=auto)
    s.add_point(handle=DRAG[0], target=DRAG[1])
    list(s.run(3))
    t = DragSession.load(auto, autosave_dir=auto)
    assert t.num_steps == 3 and DragSession.load(auto).num_steps == 3 and t.can_undo


def test_a_run_that_starts_converged_is_no_undo_step(tiny_generator):
    """Run again after convergence: one converged step, no update; Undo still goes back before the real drag."""
    s = DragSession(tiny_generator, seed=0, tolerance=3.0)
    s.add_point(handle=(20, 30), target=(24, 30))
    s.step()
    before = s.ws
    assert list(s.run(200))[-1].converged
    n, ws = s.num_steps, s.ws
    again = list(s.run(200))
    assert len(again) == 1 and again[0].converged
    np.testing.assert_array_equal(s.ws, ws)
    assert s.undo()
    assert s.num_steps == 1 and np.array_equal(s.ws, before) and n > 2


# ----------------------------------------------------------------------------
# stop()


def test_stop_from_another_thread(tiny_generator):
    s = DragSession(tiny_generator, seed=0, tolerance=0.1)
    s.add_point(handle=DRAG[0], target=DRAG[1])
    results = []
    started = threading.Event()

    def consume():
        for r in s.run(200):
            results.append(r)
            started.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(30)
    s.stop()
    worker.join(30)
    assert not worker.is_alive()
    n = len(results)
    assert 1 <= n < 200 and not results[-1].converged
    assert s.num_steps == n
    # A new run() after stop() continues.
    assert len(list(s.run(2))) == 2


def test_stop_from_another_thread_while_this_one_runs(tiny_generator):
    s = DragSession(tiny_generator, seed=0, tolerance=0.1)
    s.add_point(handle=DRAG[0], target=DRAG[1])
    results = []
    for r in s.run(200):
        results.append(r)
        if len(results) == 3:
            t = threading.Thread(target=s.stop)
            t.start()
            t.join()
    assert len(results) == 3


def test_stop_from_an_asyncio_task(tiny_generator):
    s = DragSession(tiny_generator, seed=0, tolerance=0.1)
    s.add_point(handle=DRAG[0], target=DRAG[1])

    async def main():
        results = []

        async def stopper():
            while len(results) < 2:
                await asyncio.sleep(0.005)
            s.stop()

        task = asyncio.create_task(stopper())
        async for r in s.arun(200):
            results.append(r)
        await task
        return results

    results = asyncio.run(main())
    assert 2 <= len(results) < 200


# ----------------------------------------------------------------------------
# Bad input: a clear error, state unchanged


BAD_POINTS = [
    ((64, 10), (10, 10), ValueError),       # outside (x too large)
    ((10, 10), (10, -1), ValueError),       # outside (y negative)
    ((math.nan, 10), (10, 12), ValueError),
    ((10, 10), (math.inf, 10), ValueError),
    ((10, 10), (10, 10), ValueError),       # handle == target
    (("a", 10), (10, 12), TypeError),
    ("ab", (10, 12), TypeError),
    (None, (10, 12), TypeError),
    ((1, 2, 3), (10, 12), TypeError),
    (5, (10, 12), TypeError),
    ((True, 2), (10, 12), TypeError),
]

BAD_PARAMS = [
    ({"foo": 1}, ValueError),
    ({"r1": -1}, ValueError),
    ({"r2": -2}, ValueError),
    ({"r2": 0}, ValueError),
    ({"r2": 2.5}, TypeError),
    ({"tolerance": -1}, ValueError),
    ({"lr": 0}, ValueError),
    ({"lr": "fast"}, TypeError),
    ({"lr": math.nan}, ValueError),
    ({"lambda_mask": -1}, ValueError),
    ({"max_steps": 0}, ValueError),
    ({"feature_block": 99}, ValueError),
    ({"num_layers": 0}, ValueError),
    ({"l1_tracking": "yes"}, TypeError),
    ({"render_every": 0}, ValueError),
    ({"noise_mode": "loud"}, ValueError),
    ({"r1": 2000}, ValueError),          # bounded by the image: memory stays bounded
    ({"r2": 2000}, ValueError),
    ({"r1": math.inf}, ValueError),
    ({"tolerance": 1e9}, ValueError),
    ({"max_steps": 10**12}, ValueError),
    ({"lr": 1e6}, ValueError),
    ({"lambda_mask": math.nan}, ValueError),
]


@pytest.fixture(scope="module")
def edited_session(tiny_generator):
    s = DragSession(tiny_generator, seed=0)
    s.add_point(handle=DRAG[0], target=DRAG[1])
    mask = np.zeros((64, 64), bool)
    mask[:5] = True
    s.set_mask(mask)
    list(s.run(2))
    return s


@pytest.mark.parametrize("handle,target,exc", BAD_POINTS)
def test_bad_points(edited_session, handle, target, exc):
    s = edited_session
    before = fingerprint(s)
    with pytest.raises(exc):
        s.add_point(handle=handle, target=target)
    if handle is not None:  # move_point(handle=None) means "keep the handle"
        with pytest.raises(exc):
            s.move_point(0, handle=handle, target=target)
    assert fingerprint(s) == before


@pytest.mark.parametrize("params,exc", BAD_PARAMS)
def test_bad_params(edited_session, tiny_generator, params, exc):
    s = edited_session
    before = fingerprint(s)
    with pytest.raises(exc):
        s.set_params(**params)
    assert fingerprint(s) == before
    with pytest.raises(exc):
        DragSession(tiny_generator, **params)


def test_bad_calls(edited_session, tiny_generator):
    s = edited_session
    before = fingerprint(s)
    bad = [
        (lambda: s.set_mask(np.zeros((32, 32), bool)), ValueError),
        (lambda: s.set_mask(np.zeros((64, 64), np.uint8)), TypeError),
        (lambda: s.set_mask(np.zeros((64, 64), np.float32)), TypeError),
        (lambda: s.set_mask(None), TypeError),
        (lambda: s.set_seed(-1), ValueError),
        (lambda: s.set_seed(2**32), ValueError),
        (lambda: s.set_seed(1.5), TypeError),
        (lambda: s.set_seed("3"), TypeError),
        (lambda: s.move_point(5, target=(3, 3)), ValueError),
        (lambda: s.move_point(5, target=(3, 3)), IndexError),
        (lambda: s.remove_point("0"), TypeError),
        (lambda: s.run(0), ValueError),
        (lambda: s.run(2.5), TypeError),
    ]
    for call, exc in bad:
        with pytest.raises(exc):
            call()
        assert fingerprint(s) == before
    for kwargs, exc in [({"backend": "tf"}, ValueError), ({"seed": -1}, ValueError), ({"seed": 2**32}, ValueError),
                        ({"latent_space": "z"}, ValueError), ({"truncation_psi": "x"}, TypeError)]:
        with pytest.raises(exc):
            DragSession(tiny_generator, **kwargs)
    with pytest.raises(TypeError):
        DragSession(42)


def test_step_without_points(tiny_generator):
    s = DragSession(tiny_generator)
    before = fingerprint(s)
    with pytest.raises(ValueError, match="no points"):
        s.step()
    with pytest.raises(ValueError, match="no points"):
        s.run()
    assert fingerprint(s) == before


def test_point_pairs_are_bounded(tiny_generator):
    from dragnb.session.points import MAX_POINTS

    s = DragSession(tiny_generator, seed=0)
    for i in range(MAX_POINTS):
        s.add_point(handle=(i % 60, i // 60 * 4), target=(i % 60, i // 60 * 4 + 2))
    before = s.handle_points
    with pytest.raises(ValueError, match="at most"):
        s.add_point(handle=(1, 60), target=(3, 60))
    assert s.handle_points == before
