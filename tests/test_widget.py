"""The workbench without a browser: front-end messages fed to its event handlers (ipyevents mouse dicts,
ipycanvas key events), buttons clicked with ``.click()``; checks the session state and the canvas commands
that were sent (captured from ipycanvas' canvas manager and decoded)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from ipycanvas.canvas import _CANVAS_MANAGER, COMMANDS
from PIL import Image

import dragnb
from dragnb.checkpoints import BUNDLED, load_generator
from dragnb.drag import core
from dragnb.session import DragSession
from dragnb.testing import UNIMPORTABLE_SRC
from dragnb.widgets import render
from dragnb.widgets.drawing import CanvasMap, scaled_rgba
from dragnb.widgets.internals import distance_map, next_position, pca_rgb
from dragnb.widgets.workbench import Workbench

S = 8  # canvas pixels per image pixel: the 64 px tiny model at 512
NAMES = {v: k for k, v in COMMANDS.items()}


# ----------------------------------------------------------------------------
# Helpers


class Drawn:
    """Canvas commands sent to the front end, decoded to (layer model id, command name, args, buffers)."""

    def __init__(self):
        self.raw = []

    def record(self, command, buffers=()):
        self.raw.append((command, list(buffers)))

    def commands(self):
        out, layer = [], None
        for command, buffers in self.raw:
            batch = command if command and isinstance(command[0], list) else [command]
            bufs = iter(buffers)
            for c in batch:
                name, args = NAMES[c[0]], c[1]
                n = c[2] if len(c) > 2 else 0
                own = [next(bufs) for _ in range(n)]
                if name == "switchCanvas":
                    layer = args[0].removeprefix("IPY_MODEL_")
                else:
                    out.append((layer, name, args, own))
        return out

    def on(self, canvas, name=None):
        return [(n, a, b) for layer, n, a, b in self.commands() if layer == canvas.model_id and name in (None, n)]

    def clear(self):
        self.raw.clear()


@pytest.fixture
def drawn(monkeypatch):
    d = Drawn()
    monkeypatch.setattr(_CANVAS_MANAGER, "_send_custom", d.record)
    return d


@pytest.fixture
def wb(tiny_generator, drawn, tmp_path):
    w = Workbench(session=DragSession(tiny_generator, seed=1), models_dir=tmp_path / "models")
    w.save_path.value = str(tmp_path / "out" / "drag")
    yield w
    w.stop()
    w.wait(30)


def mouse(wb, kind, x=None, y=None, **kw):
    """An ipyevents mouse message at canvas pixel (x, y), the canvas shown 1:1 (``kw`` may give other
    displayed coordinates and size)."""
    msg = {"type": kind, "relativeX": x, "relativeY": y, "boundingRectWidth": wb.canvas.width,
           "boundingRectHeight": wb.canvas.height, "button": 0, "buttons": 0 if kind == "mouseup" else 1,
           "altKey": False, "shiftKey": False, "ctrlKey": False, "metaKey": False}
    msg.update(kw)
    wb._mouse._handle_mouse_msg(None, msg, None)


def click(wb, x, y, **kw):
    mouse(wb, "mousedown", x, y, **kw)
    mouse(wb, "mouseup", x, y, **kw)


def canvas_xy(x, y):
    """Canvas pixel of image pixel (x, y)'s centre."""
    return (x + 0.5) * S, (y + 0.5) * S


def key(wb, k, ctrl=False):
    """An ipyevents key message (sent while the mouse is over the canvas)."""
    wb._mouse._handle_mouse_msg(None, {"type": "keydown", "key": k, "shiftKey": False, "ctrlKey": ctrl,
                                       "metaKey": False, "altKey": False}, None)


def wait_until(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def decode(buffer) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(buffer)))


# ----------------------------------------------------------------------------
# Coordinates


def test_canvas_map_is_exact():
    m = CanvasMap(8)
    assert m.to_canvas(0, 0) == (4, 4) and m.to_canvas(10, 3) == (84, 28)
    assert m.to_image(*m.to_canvas(12.25, 40)) == (12.25, 40)
    assert m.pixel(0, 0, 64, 64) == (0, 0) and m.pixel(7.9, 8.0, 64, 64) == (0, 1)  # the pixel under the cursor
    assert m.pixel(600, -5, 64, 64) == (63, 0)                                       # clipped into the image
    assert m.pixel_rect(2, 3, 4, 3) == (16, 24, 24, 8)
    m2 = CanvasMap(0.5, ox=100)                                                      # a large image shown smaller
    assert m2.pixel(*m2.to_canvas(700, 9), 1024, 1024) == (700, 9)


def test_the_actions_sit_above_the_image(wb):
    """Step, Run / Stop, Undo and the resets are in one row above the canvas: seen with the image whatever the
    width (the other controls wrap below it in a narrow window)."""
    left, panel = wb.children[0].children
    toolbar, canvas = left.children[:2]
    assert canvas is wb.canvas and wb.step_button in toolbar.children and wb.run_button in toolbar.children
    assert wb.undo_button in toolbar.children and wb.step_button not in panel.children
    widths = [int(b.layout.width.removesuffix("px")) + 4 for b in toolbar.children]  # 2 px margin each side
    assert sum(widths) <= wb.canvas.width
    assert wb.children[0].layout.flex_flow == "row wrap"
    # In a narrow notebook the column and the canvas shrink (the canvas at most its pixel size, its aspect kept).
    assert left.layout.flex == "0 1 auto" and left.layout.min_width == "0"
    lay = wb.canvas.layout
    assert (lay.width, lay.max_width, lay.height) == ("100%", f"{wb.canvas.width}px", "auto")
    assert "dragnb-image" in wb.canvas._dom_classes and "image-rendering: pixelated" in wb._controls.css.value


@pytest.mark.parametrize("shown", [300, 1024])  # displayed CSS pixels of the 512 px canvas
def test_clicks_on_a_canvas_shown_smaller_or_larger_land_on_their_pixel(wb, shown):
    """ipyevents reports displayed pixels and the displayed size: a click maps to the image pixel under it."""
    k = shown / wb.canvas.width

    def at(x, y):  # the displayed position of image pixel (x, y)'s centre, rounded as ipyevents does
        cx, cy = canvas_xy(x, y)
        return {"relativeX": round(cx * k), "relativeY": round(cy * k), "boundingRectWidth": shown,
                "boundingRectHeight": shown}

    for kind in ("mousedown", "mouseup"):
        mouse(wb, kind, **at(10, 40))
    assert wb._pointer.pending == (10, 40)
    for kind in ("mousedown", "mouseup"):
        mouse(wb, kind, **at(50, 3))
    assert wb.session.handle_points == [(10.0, 40.0)] and wb.session.target_points == [(50.0, 3.0)]
    mouse(wb, "mousedown", **at(50, 3), button=2)  # a right-click on the displayed target deletes its pair
    assert wb.session.target_points == []


def test_session_or_model_not_both(tiny_generator):
    with pytest.raises(ValueError, match="not both"):
        Workbench(session=DragSession(tiny_generator), model="toyfaces")
    with pytest.raises(ValueError, match="not both"):
        Workbench(session=DragSession(tiny_generator), seed=3)


def test_model_menu_lists_the_model_once(tiny_model_path, tmp_path):
    """A workbench made from a model and the session's settings shows that model selected, listed once."""
    wb = Workbench(model=tiny_model_path, seed=3, truncation_psi=0.5, lr=0.004, models_dir=tmp_path)
    assert (wb.session.seed, wb.session.truncation_psi, wb.session.params["lr"]) == (3, 0.5, 0.004)
    values = [v for _, v in wb.model.options]
    assert wb.model.value == str(tiny_model_path) and values.count(str(tiny_model_path)) == 1
    assert "(the given session's model)" not in [label for label, _ in wb.model.options]


def test_a_given_session_on_a_listed_model_is_listed_once(tiny_model_path, tmp_path):
    """A session opened from the bundled model or a checkpoint in the models folder is that menu entry (not a
    second "(the given session's model)"); an in-memory generator's session has the entry of its own."""
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    listed = shutil.copy(tiny_model_path, models / "tiny.safetensors")
    wb = Workbench(session=DragSession(str(tmp_path / "models" / ".." / "models" / "tiny.safetensors")),
                   models_dir=models)
    labels = [label for label, _ in wb.model.options]
    assert wb.model.value == str(listed) and labels.count("tiny.safetensors") == 1
    assert "(the given session's model)" not in labels
    if BUNDLED["toyfaces"].exists():
        wb = Workbench(session=DragSession(), models_dir=models)
        labels = [label for label, _ in wb.model.options]
        assert wb.model.value == "toyfaces" and labels.count("toyfaces (bundled)") == 1
        assert "(the given session's model)" not in labels
    wb = Workbench(session=DragSession(load_generator(listed)), models_dir=models)
    assert wb.model.value == "" and wb.model.options[0][0] == "(the given session's model)"


# ----------------------------------------------------------------------------
# Mouse


def test_click_handle_then_target_draws_the_pair(wb, drawn):
    assert (wb.canvas.width, wb.canvas.height) == (512, 512)
    drawn.clear()
    click(wb, *canvas_xy(20, 30))
    assert wb.session.target_points == [] and wb._pointer.pending == (20, 30)
    click(wb, 283, 245)  # inside image pixel (35, 30)
    assert wb.session.handle_points == [(20.0, 30.0)] and wb.session.target_points == [(35.0, 30.0)]
    assert "1 point pair" in wb.status.value
    circles = [a[:2] for n, a, _ in drawn.on(wb.marks_layer, "fillCircle")]
    assert circles[-2:] == [list(canvas_xy(35, 30)), list(canvas_xy(20, 30))]  # target blue, then handle red
    assert [a for n, a, _ in drawn.on(wb.marks_layer, "set") if a[0] == 0][-1][1] == "rgb(230,30,30)"


def test_a_front_end_without_ipyevents_is_named(wb, monkeypatch):
    """A click that ipycanvas reports but ipyevents never does: the widget says why clicks do nothing."""
    from dragnb.widgets import workbench

    monkeypatch.setattr(workbench, "EVENTS_GRACE", 0.05)
    wb.marks_layer._handle_frontend_event(None, {"event": "mouse_down", "x": 10, "y": 20}, None)
    wait_until(lambda: wb.last_error is not None)
    assert "lacks the ipyevents widget" in wb.error.value and "wb.add_point" in wb.error.value


def test_no_warning_where_ipyevents_works(wb, monkeypatch):
    from dragnb.widgets import workbench

    monkeypatch.setattr(workbench, "EVENTS_GRACE", 0.05)
    click(wb, *canvas_xy(5, 5))
    wb.marks_layer._handle_frontend_event(None, {"event": "mouse_down", "x": 44, "y": 44}, None)
    time.sleep(0.3)
    assert wb.last_error is None and wb._pointer.pending == (5, 5)


def test_drag_moves_a_point_and_clicks_delete(wb):
    wb.add_point((20, 30), (35, 30))
    wb.add_point((40, 10), (40, 20))
    mouse(wb, "mousedown", *canvas_xy(35, 30))
    mouse(wb, "mousemove", *canvas_xy(38, 33))
    assert wb.session.target_points[0] == (35.0, 30.0)  # committed on release
    mouse(wb, "mouseup", *canvas_xy(40, 34))
    assert wb.session.target_points[0] == (40.0, 34.0) and wb.session.handle_points[0] == (20.0, 30.0)
    mouse(wb, "mousedown", *canvas_xy(20, 30))          # the handle; released outside the canvas
    mouse(wb, "mousemove", *canvas_xy(22, 28))
    mouse(wb, "mouseleave", -3, 100)
    assert wb.session.handle_points[0] == (22.0, 28.0)
    click(wb, *canvas_xy(40, 20), button=2)             # right-click a target: its pair goes
    assert wb.session.target_points == [(40.0, 34.0)]
    click(wb, *canvas_xy(22, 28), altKey=True)          # Alt+click a handle
    assert wb.session.target_points == [] and wb.last_error is None


def test_shortcuts_step_run_stop_undo_without_placing_a_point(wb):
    wb.add_point((20, 30), (35, 30))
    key(wb, "s")
    assert wb.session.num_steps == 1 and wb.session.target_points == [(35.0, 30.0)]  # no point was placed
    wb.max_steps.value = 10_000
    key(wb, " ")
    assert wb.running
    wait_until(lambda: wb.session.num_steps >= 3)
    key(wb, " ")
    assert wb.wait(30) and not wb.running and "stopped" in wb.message.value
    key(wb, "u")
    assert wb.session.num_steps == 1
    key(wb, "c", ctrl=True)  # a browser shortcut: not the workbench's
    assert wb.session.num_steps == 1 and wb._pointer.pending is None and wb.last_error is None


def test_keys_escape_delete_undo(wb):
    click(wb, *canvas_xy(5, 5))
    key(wb, "Escape")
    assert wb._pointer.pending is None
    wb.add_point((20, 30), (35, 30))
    wb.add_point((40, 10), (40, 20))
    key(wb, "Delete")  # the last added pair is selected
    assert wb.session.target_points == [(35.0, 30.0)]
    wb.step()
    key(wb, "z", ctrl=True)
    assert wb.session.num_steps == 0


# ----------------------------------------------------------------------------
# Stepping


def test_status_says_when_a_step_starts_the_drag(wb, monkeypatch):
    """The first step after an edit computes F0 first (the longest step of a drag): the status line says so."""
    seen = []
    real = wb.session.step

    def step():
        seen.append(wb.status.value)
        return real()

    monkeypatch.setattr(wb.session, "step", step)
    wb.add_point((20, 30), (35, 30))
    assert wb.session.needs_f0
    wb.step()
    wb.step()
    assert "starting the drag" in seen[0] and "step 1" in seen[0]
    assert "starting the drag" not in seen[1] and not wb.session.needs_f0
    assert "step 2" in wb.status.value and "ms/step" in wb.status.value


def test_step_draws_the_image_and_status(wb, drawn):
    wb.step_button.click()  # no points: the widget says what to do, in words for people
    assert "Place a point pair first: click the image" in wb.message.value and wb.last_error is None
    wb.run_button.click()
    assert "Place a point pair first" in wb.message.value and not wb.running
    wb.add_point((20, 30), (35, 30))
    drawn.clear()
    wb.step_button.click()
    wb.step_button.click()
    assert wb.session.num_steps == 2 and wb.last_error is None and wb.error.value == ""
    assert "step 2" in wb.status.value and "loss" in wb.status.value and "ms/step" in wb.status.value
    puts = drawn.on(wb.image_layer, "putImageData")
    assert len(puts) == 2
    # The image goes at its own size (64 px, 1/64 of the canvas' pixels) and the canvas scales it, smoothing off.
    np.testing.assert_array_equal(decode(puts[-1][2][0]), scaled_rgba(wb.last_image, 1))
    sent = [(n, a) for n, a, _ in drawn.on(wb.image_layer)]
    i = len(sent) - 1 - sent[::-1].index(("putImageData", [0, 0]))
    assert sent[i - 1] == ("setTransform", [S, 0, 0, S, 0, 0]) and sent[i + 1] == ("resetTransform", [])
    assert ("set", [wb.image_layer.ATTRS["image_smoothing_enabled"], False]) in sent[:i]
    assert len(drawn.on(wb.loss_canvas, "strokeLines")) >= 2  # the loss curve
    assert wb.frames == 2 and len(wb._losses) == 2


def test_run_and_stop_from_the_button(wb):
    wb.add_point((20, 30), (35, 30))
    wb.max_steps.value = 10_000
    wb.run_button.click()
    assert wb.running and wb.run_button.description == "Stop" and wb.step_button.disabled
    wait_until(lambda: wb.session.num_steps >= 3)
    wb.run_button.click()  # Stop
    assert wb.wait(30)
    n = wb.session.num_steps
    time.sleep(0.2)
    assert wb.session.num_steps == n < 10_000 and not wb.running
    assert wb.run_button.description == "Run" and not wb.step_button.disabled
    assert "stopped" in wb.status.value and f"step {n}" in wb.status.value and 1 <= wb.frames <= n
    assert len(wb._trails) == 1 and wb.last_error is None


def test_frames_are_paced_when_steps_outrun_the_display(wb, drawn, monkeypatch):
    """A run draws a step only when a frame is due, always its last step, and reports wall-clock steps/s."""
    pace = render.Pace()
    assert pace.gap == pace.MIN_GAP and pace.due(0.0)
    pace.drawn(10.0, 10.02)            # a frame that took 20 ms: the next comes at least 20 ms / SHARE later
    assert pace.gap == pytest.approx(0.02 / pace.SHARE) and not pace.due(10.1) and pace.due(10.03 + pace.gap)
    for i in range(5):
        pace.record(20 + 0.05 * i, 30.0)
    assert pace.steps_per_s == pytest.approx(20) and pace.compute_ms == 30
    pace.record(21, 30.0, timed=False)  # a single step (the Step button): no rate
    assert pace.steps_per_s is None

    monkeypatch.setattr(render.Pace, "MIN_GAP", 3600.0)  # the display takes forever: only the first frame is due
    wb.add_point((20, 30), (35, 30))
    results, show_step = [], wb._show_step
    wb._show_step = lambda r: (results.append(r), show_step(r))
    drawn.clear()
    wb.run(6)
    assert wb.wait(30) and wb.session.num_steps == 6
    assert wb.frames == 2  # the first step, then the last one when the run ended
    assert len(drawn.on(wb.image_layer, "putImageData")) == 2
    np.testing.assert_array_equal(wb.last_image, results[-1].image)  # the canvas shows the last step
    assert "step 6" in wb.status.value and "steps/s" in wb.status.value and "max steps" in wb.status.value
    assert len(wb._losses) == 6 and len(wb._trails[0]) >= 2  # every step is in the loss curve and the trail


def test_internals_updates_keep_to_their_share_of_a_run(wb, monkeypatch):
    """An internals update slower than INTERNALS_EVERY waits its cost / INTERNALS_SHARE: it cannot run every step."""
    from dragnb.widgets import workbench

    monkeypatch.setattr(workbench, "INTERNALS_EVERY", 0.0)
    wb.add_point((20, 30), (35, 30))
    wb.internals_toggle.value = True
    updates, update = [], wb._update_internals

    def slow_update():
        updates.append(wb.session.num_steps)
        update()
        wb._internals_cost = 3600.0  # as if it took an hour

    wb._update_internals = slow_update
    wb.run(8)
    assert wb.wait(30) and wb.session.num_steps == 8
    assert len(updates) <= 3  # the first frame's, and the run's end (not one per step)


def test_edits_during_a_run_land_between_steps(wb, drawn):
    wb.add_point((20, 30), (35, 30))
    wb.max_steps.value = 10_000
    shown, go_on = threading.Event(), threading.Event()
    show_step = wb._show_step

    def held_show_step(r):  # hold the worker after drawing a step, before the step boundary
        show_step(r)
        shown.set()
        go_on.wait(30)

    wb._show_step = held_show_step
    wb.run()
    assert shown.wait(30)
    drawn.clear()
    click(wb, *canvas_xy(50, 50))
    click(wb, *canvas_xy(50, 58))  # a new pair while the run is between two steps
    wb.lr.value = 0.004
    assert len(wb._jobs.queued) == 2 and len(wb.session.target_points) == 1 and wb.session.params["lr"] == 0.002
    assert "queued" in wb.message.value
    assert [a for _, a, _ in drawn.on(wb.marks_layer, "setLineDash")][0] == [[6, 4]]  # the queued pair, dashed
    n = wb.session.num_steps
    wb._show_step = show_step
    go_on.set()
    wait_until(lambda: wb.session.num_steps >= n + 2)  # applied, and the run went on with both pairs
    assert wb.session.target_points[1] == (50.0, 58.0) and wb.session.params["lr"] == 0.004
    wb.stop()
    assert wb.wait(30)
    assert wb._jobs.queued == [] and len(wb._trails) == 2 and wb.last_error is None


def test_undo_and_reset_image(wb):
    seed_image = wb.session.image
    wb.add_point((20, 30), (35, 30))
    wb.run(5)
    assert wb.wait(30) and wb.session.num_steps == 5
    wb.undo_button.click()
    assert wb.session.num_steps == 0
    wb.run(3)
    wb.wait(30)
    wb.reset_image_button.click()
    np.testing.assert_array_equal(wb.last_image, seed_image)
    assert wb.session.handle_points == [(20.0, 30.0)]
    wb.reset_points_button.click()
    assert wb.session.target_points == [] and wb._trails == []


def test_undo_reset_and_load_restore_the_curve_and_trails(wb):
    """Undo, Reset image and Load show the loss curve and trails of the state they return to."""
    wb.add_point((20, 30), (35, 30))
    wb.run(4)
    assert wb.wait(30)
    curve, trails = list(wb._losses), [list(t) for t in wb._trails]
    assert [e[0] for e in curve] == [0, 1, 2, 3]
    wb.run(3)
    assert wb.wait(30) and len(wb._losses) == 7
    wb.undo()
    assert wb.session.num_steps == 4 and wb._losses == curve and wb._trails == trails
    wb.run(2)  # the curve goes on from the state undone to: no line over the undone steps
    assert wb.wait(30) and [e[0] for e in wb._losses] == [0, 1, 2, 3, 4, 5]
    curve, trails = list(wb._losses), [list(t) for t in wb._trails]
    wb.reset_image()
    assert wb._losses == [] and wb._trails == [[(20.0, 30.0)]]
    wb.undo()  # the reset undone
    assert wb.session.num_steps == 6 and wb._losses == curve and wb._trails == trails
    wb.save_session()
    wb.reset_points()
    wb.load_session()
    assert wb.wait(60) and wb.last_error is None and wb.session.num_steps == 6
    assert wb._losses == curve and wb._trails == trails
    wb.undo()  # the history came with it
    assert wb.session.num_steps == 4 and [e[0] for e in wb._losses] == [0, 1, 2, 3]


# ----------------------------------------------------------------------------
# Mask


def test_mask_brush_paints_movable_region_and_shift_erases(wb, drawn):
    wb.mode.value = "mask"
    wb.brush.value = 3
    drawn.clear()
    mouse(wb, "mousedown", *canvas_xy(10, 20))
    mouse(wb, "mousemove", *canvas_xy(30, 20))
    mouse(wb, "mouseup", *canvas_xy(30, 20))
    fixed = wb.session.mask
    assert fixed is not None and fixed.shape == (64, 64)
    assert not fixed[20, 10:31].any() and not fixed[23, 20] and fixed[24, 20] and fixed[0, 0]  # the stroke moves
    assert wb.session.target_points == []  # no points were placed in mask mode
    overlay = decode(drawn.on(wb.mask_layer, "putImageData")[-1][2][0])
    assert overlay.shape == (64, 64, 4) and overlay[20, 20, 3] < overlay[0, 0, 3]  # scaled by the canvas
    assert "movable" in wb.status.value
    mouse(wb, "mousedown", *canvas_xy(10, 20), shiftKey=True)  # erase the whole stroke
    mouse(wb, "mousemove", *canvas_xy(30, 20), shiftKey=True)
    mouse(wb, "mouseup", *canvas_xy(30, 20), shiftKey=True)
    assert wb.session.mask is None


def test_mask_modes_brush_preview_and_solid_strokes(wb, drawn):
    """Visible Movable / Fixed modes, a brush circle under the cursor, a brush that suits the image, strokes
    without gaps however fast the mouse moves, and a solid outline."""
    assert wb.brush.value == 4 and wb.paint.value == "movable"  # 1/16 of the 64 px image
    wb.mode.value = "mask"
    drawn.clear()
    mouse(wb, "mousemove", *canvas_xy(30, 30), buttons=0)
    circles = [a for _, a, _ in drawn.on(wb.marks_layer, "strokeCircle")]
    assert circles[-1] == [*canvas_xy(30, 30), 4 * S]  # the brush preview, radius in canvas pixels
    mouse(wb, "mouseleave", -3, 100, buttons=0)
    assert wb._pointer.hover is None
    mouse(wb, "mousedown", *canvas_xy(5, 10))
    mouse(wb, "mousemove", *canvas_xy(55, 10))  # one fast move: the stroke is still continuous
    mouse(wb, "mouseup", *canvas_xy(55, 10))
    movable = ~wb.session.mask
    assert movable[6:15, 5:56].all() and not movable[16, 30] and not movable[10, 61]
    overlay = decode(drawn.on(wb.mask_layer, "putImageData")[-1][2][0])
    assert overlay[6, 30, 3] == 255 and overlay[10, 30, 3] < 255  # a solid edge around a tinted inside
    wb.paint.value = "fixed"  # paint what stays: back to fixed under the second stroke
    mouse(wb, "mousedown", *canvas_xy(30, 5))
    mouse(wb, "mouseup", *canvas_xy(30, 15))
    assert wb.session.mask[10, 30] and not wb.session.mask[10, 10]
    mouse(wb, "mousedown", *canvas_xy(30, 10), shiftKey=True)  # Shift paints the other region: movable
    mouse(wb, "mouseup", *canvas_xy(30, 10), shiftKey=True)
    assert not wb.session.mask[10, 30] and wb.last_error is None


# ----------------------------------------------------------------------------
# Controls and files


def test_controls_reach_the_session(wb):
    wb.add_point((20, 30), (35, 30))
    wb.lr.value = 0.01
    wb.r1.value = 4.5
    wb.tolerance.value = 3
    wb.feature_block.value = 2
    wb.latent_space.value = "w"
    p = wb.session.params
    assert (p["lr"], p["r1"], p["tolerance"], p["feature_block"]) == (0.01, 4.5, 3, 2)
    assert wb.session.latent_space == "w" and wb.last_error is None
    wb.seed.value = 7  # a new image would drop the pair: asked first
    assert wb.session.seed == 1 and wb.seed.value == 1 and wb.confirm.layout.display == "flex"
    assert "drops 1 point pair" in wb.confirm_text.value
    wb.confirm_yes.click()
    assert wb.session.seed == wb.seed.value == 7 and wb.session.target_points == []  # a new image
    assert wb.confirm.layout.display == "none"
    wb.psi.value = 0.5  # nothing to lose: at once
    assert wb.session.truncation_psi == 0.5 and wb.confirm.layout.display == "none"
    wb.random_seed_button.click()
    assert wb.session.seed == wb.seed.value
    wb.max_steps.value = 5
    assert wb.session.params["max_steps"] == 5
    wb.r1.min = -10
    wb.r1.value = -1.0  # refused by the session: shown, and the control snaps back
    assert isinstance(wb.last_error, ValueError) and wb.r1.value == wb.session.params["r1"] == 4.5


def test_compat_toggle(wb, tmp_path, drawn):
    """The mode toggle sets compat; unset parameters follow the mode; a refused mode snaps back."""
    assert wb.compat.value == "dragnb" and wb.label.layout.display == "none"  # unconditional: no class control
    wb.compat.value = "official"  # the 64 px model: the official r1 rounds to 0 and there is no block 5
    assert isinstance(wb.last_error, ValueError) and wb.compat.value == wb.session.params["compat"] == "dragnb"
    wb.r1.value = 2
    wb.feature_block.value = 2  # set: it stays in either mode
    wb.compat.value = "official"
    p = wb.session.params
    assert wb.last_error is None and (p["compat"], p["lr"], p["lambda_mask"], p["r1"]) == ("official", 1e-3, 20, 2)
    assert (wb.lr.value, wb.lambda_mask.value) == (1e-3, 20)  # the controls show the mode's values
    wb.add_point((20, 30), (35, 30))
    assert wb.step() is not None and wb.last_error is None
    wb.compat.value = "blog"  # the blog sample's loop: block 2 stays (set), no mask term
    p = wb.session.params
    assert wb.last_error is None and (p["compat"], p["lambda_mask"], p["l1_tracking"]) == ("blog", 0.0, True)
    wb.mode.value = "mask"  # paint a movable stroke: blog mode says it is ignored
    mouse(wb, "mousedown", *canvas_xy(10, 50))
    mouse(wb, "mouseup", *canvas_xy(30, 50))
    assert wb.session.mask is not None and "mask ignored" in wb.status.value
    r = wb.step()
    assert r is not None and r.mask == 0.0 and wb.last_error is None
    wb.compat.value = "dragnb"
    assert wb.session.params["lr"] == 2e-3


def test_class_control_of_a_conditional_model(drawn, tmp_path):
    from conftest import make_tiny_generator

    G = make_tiny_generator(c_dim=4)
    w = Workbench(session=DragSession(G, seed=1, c=2), models_dir=tmp_path / "models")
    assert w.label.layout.display == "" and (w.label.min, w.label.max, w.label.value) == (-1, 3, 2)
    w.add_point((20, 30), (35, 30))
    w.label.value = 0  # a new image: points cleared
    assert w.session.class_index == 0 and w.session.target_points == []
    np.testing.assert_array_equal(w.last_image, DragSession(G, seed=1, c=0).image)
    w.label.value = -1  # the all-zeros label
    assert w.session.class_index is None and not w.session.c.any() and w.last_error is None


def test_a_new_seed_asks_before_dropping_points_mask_and_drag(wb):
    wb.add_point((20, 30), (35, 30))
    wb.set_mask(np.ones((64, 64), bool))
    wb.step()
    image = wb.session.image
    wb.seed.value = 5
    assert "drops 1 point pair, the mask, the drag and its undo history" in wb.confirm_text.value
    wb.confirm_no.click()  # keep: nothing changed
    assert wb.session.seed == wb.seed.value == 1 and wb.session.num_steps == 1 and wb.session.mask is not None
    np.testing.assert_array_equal(wb.session.image, image)
    wb.psi.value = 0.4
    assert "psi 0.4" in wb.confirm_text.value and wb.psi.value == wb.session.truncation_psi != 0.4
    wb.confirm_yes.click()
    assert wb.session.truncation_psi == wb.psi.value == 0.4 and wb.session.target_points == []
    assert wb.session.mask is None and wb._movable is None and wb.last_error is None
    wb.undo()
    assert "Nothing to undo." in wb.message.value and wb.last_error is None


def test_save_files_and_load_session(wb, tmp_path):
    wb.add_point((20, 30), (35, 30))
    wb.run(4)
    assert wb.wait(30)
    png = wb.save_png()
    assert Image.open(png).size == (64, 64)
    wb.save_gif_button.click()
    assert wb.progress.layout.visibility == "visible" and wb.save_mp4_button.disabled  # a long action
    assert wb.wait(60) and wb.last_error is None and wb.progress.layout.visibility == "hidden"
    with Image.open(tmp_path / "out" / "drag.gif") as im:
        assert im.n_frames >= 2 and im.size == (512, 512)
    wb.save_mp4_button.click()
    assert wb.wait(60) and wb.last_error is None
    assert (tmp_path / "out" / "drag.mp4").stat().st_size > 0 and "drag.mp4" in wb.message.value
    wb.save_session_button.click()
    assert wb.load_path.value == str(tmp_path / "out" / "drag_session")
    wb.reset_points()
    wb.load_button.click()
    assert wb.wait(60) and wb.last_error is None
    assert wb.session.target_points == [(35.0, 30.0)] and wb.session.num_steps == 4
    assert "loaded session" in wb.message.value


def test_saved_files_are_linked_beside_the_notebook(wb, tmp_path, monkeypatch):
    """Files saved under the notebook's folder (the kernel's working directory) are linked in the message."""
    monkeypatch.chdir(tmp_path)
    wb.save_path.value = "out/my drag"
    wb.save_png()
    assert "saved <a href='out/my%20drag.png' target='_blank'" in wb.message.value
    wb.save_path.value = str(tmp_path.parent / "elsewhere" / "drag")
    wb.save_png()
    assert "elsewhere/drag.png (outside this notebook's folder)" in wb.message.value


def test_model_dropdown_lists_checkpoints_and_switches(tiny_generator, tmp_path, drawn):
    models = tmp_path / "models"
    models.mkdir()
    small = dragnb.Generator(dragnb.GeneratorConfig(z_dim=8, w_dim=16, img_resolution=32, channel_base=256,
                                                    channel_max=16, mapping_layers=2))
    path = dragnb.save_generator(small, models / "small.safetensors")
    (models / "broken.pkl").write_bytes(b"not a pickle")
    wb = Workbench(session=DragSession(tiny_generator), models_dir=models)
    assert {str(path), str(models / "broken.pkl")} < {v for _, v in wb.model.options}
    wb.model.value = str(models / "broken.pkl")
    assert wb.wait(60) and wb.last_error is not None and "&#9888;" in wb.error.value
    assert wb.model.value == "" and wb.session.H == 64  # still the session's model
    wb.model.value = str(path)
    assert wb.wait(60) and wb.last_error is None
    assert (wb.session.H, wb.map.scale, wb.canvas.width) == (32, 16, 512)
    click(wb, *CanvasMap(16).to_canvas(3, 4))
    click(wb, *CanvasMap(16).to_canvas(9, 4))
    assert wb.session.handle_points == [(3.0, 4.0)] and wb.session.target_points == [(9.0, 4.0)]
    wb.internals_toggle.value = True
    assert (wb.internals.width, wb.internals.height) == (32, 32) and wb.last_error is None


def test_errors_show_in_the_widget_in_words_for_people(wb):
    click(wb, *canvas_xy(5, 5))
    click(wb, *canvas_xy(5, 5))  # target on the handle
    assert wb.session.target_points == [] and "differ" in wb.message.value
    wb.load_path.value = "/nonexistent/session"
    wb.load_button.click()
    wb.wait(30)
    assert isinstance(wb.last_error, FileNotFoundError) and "&#9888;" in wb.error.value
    assert "no such session file" in wb.error.value and "Error" not in wb.error.value
    wb.undo_button.click()  # nothing to undo is no error
    assert "Nothing to undo." in wb.message.value and wb.last_error is None and wb.error.value == ""
    assert render.error_text(ValueError("r1 must be > 0")) == "R1 must be > 0."
    assert render.error_text(KeyError("x")) == "Something went wrong (KeyError: 'x')."


def test_messages_belong_to_the_action_that_made_them(wb):
    click(wb, *canvas_xy(20, 30))
    assert "Handle at (20, 30): now click where it should go" in wb.message.value
    click(wb, *canvas_xy(35, 30))  # the target is placed: the hint goes
    assert wb.message.value == "" and len(wb.session.target_points) == 1
    click(wb, *canvas_xy(5, 5))
    key(wb, "Escape")              # the half-placed pair is dropped: so is its hint
    assert wb.message.value == "" and wb._pointer.pending is None
    wb.save_session_button.click()
    assert "saved session" in wb.message.value
    wb.reset_points_button.click()  # the next action ends the message
    assert wb.message.value == ""
    wb.add_point((20, 30), (35, 30))
    wb.save_png()
    wb.run(2)
    assert wb.wait(30) and "saved" not in wb.message.value and "run ended" in wb.message.value
    wb.step()
    assert wb.message.value == ""


# ----------------------------------------------------------------------------
# Internals view


def test_pca_and_distance_map():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(8, 12, 10)).astype(np.float32)
    rgb, basis = pca_rgb(feat)
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.uint8 and basis.shape == (3, 8)
    rgb2, basis2 = pca_rgb(feat, -basis)  # signs follow the previous basis: colours stay steady
    np.testing.assert_allclose(basis2, -basis)
    d = distance_map(feat, feat[:, 4, 7], l1=False)
    assert d.shape == (12, 10) and d[4, 7] == 0 and np.unravel_index(d.argmin(), d.shape) == (4, 7)
    l1 = distance_map(feat, feat[:, 0, 0], l1=True)
    np.testing.assert_allclose(l1[2, 3], np.abs(feat[:, 2, 3] - feat[:, 0, 0]).sum(), rtol=1e-5)


@pytest.mark.parametrize("l1", [False, True])
def test_internals_tracking_matches_the_drag_core(l1):
    """The view's numpy distance map and next tracked position equal core.feature_distance and track_points."""
    import torch

    rng = np.random.default_rng(1)
    feat = rng.normal(size=(16, 20, 24)).astype(np.float32)
    ref = rng.normal(size=16).astype(np.float32)
    d = core.feature_distance(torch.from_numpy(feat - ref[:, None, None]), l1).numpy()
    np.testing.assert_allclose(distance_map(feat, ref, l1), d if l1 else np.sqrt(d), rtol=1e-5)
    for handle in [(0, 0), (23, 19), (10, 7), (2, 18)]:  # corners and edges clip the window
        for r2 in (1, 3, 6):
            rc = core.xy_to_rc(handle).round().astype(np.int64)
            tracked = core.track_points(torch.from_numpy(feat), torch.from_numpy(ref[None]), torch.from_numpy(rc),
                                        torch.from_numpy(core.window_offsets(r2)), l1=l1)
            assert next_position(feat, ref, handle, r2, l1) == tuple(core.rc_to_xy(tracked.numpy())[0])


def test_widget_modules_import_without_torch():
    """The workbench and its internals view load no torch at import (torch made unimportable in a child)."""
    script = UNIMPORTABLE_SRC + (
        'make_unimportable("torch")\n'
        "import dragnb.widgets.workbench, dragnb.widgets.internals\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch']\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]


def test_internals_view_draws_features_and_distance(wb, drawn):
    wb.add_point((20, 30), (35, 30))
    wb.step()
    drawn.clear()
    wb.internals_toggle.value = True
    assert wb._internals_box.layout.display == "flex" and wb.last_error is None
    puts = drawn.on(wb.internals.canvas, "putImageData")
    assert len(puts) == 3  # features (PCA), the distance heat-map and its colour bar
    s = 256 / 64  # each panel's image is scaled by the canvas transform and placed by its offset
    assert [a for _, a, _ in drawn.on(wb.internals.canvas, "setTransform")] == [
        [s, 0, 0, s, 0, wb.internals.TITLE], [s, 0, 0, s, 256 + wb.internals.GAP, wb.internals.TITLE]]
    texts = [a[0] for _, a, _ in drawn.on(wb.internals.canvas, "fillText")]
    assert texts[:2] == ["features (first 3 principal components as RGB)",
                         "tracking distance (point 0, to its reference)"]  # the panels' titles
    assert "far" in texts and "close (where tracking moves the handle)" in texts  # the colour bar's labels
    assert "point 0" in wb.internals.caption.value and "next tracked position" in wb.internals.caption.value
    assert drawn.on(wb.internals.canvas, "fillRects")  # the r1 disk
    features, refs = wb.session.tracking_features()
    assert features.shape[1:] == (64, 64) and refs.shape == (1, features.shape[0])


@pytest.mark.slow
def test_backend_dropdown_switches_to_onnx_runtime(wb, monkeypatch):
    from dragnb.backends import load_backend

    try:
        load_backend("ort")
    except ImportError as e:
        pytest.skip(f"ONNX Runtime training is not installed: {e}")
    import tqdm.auto

    bars = []
    real_tqdm = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **kw: bars.append(kw.get("disable")) or real_tqdm(*a, **kw))
    wb.add_point((20, 30), (35, 30))
    wb.step()
    wb.backend.value = "ort"  # exports the training artifacts on first use (cached in artifacts/)
    assert wb.wait(300) and wb.last_error is None, wb.last_error
    assert all(bars), "a tqdm bar was shown: the workbench's own bar is the one to show"
    assert wb.session.backend_name == "ort" and wb.progress.layout.visibility == "hidden"
    r = wb.step()
    assert r.step == 1 and wb.last_error is None and "ort" not in wb.error.value


def test_session_methods_the_widget_uses(tiny_generator):
    """set_seed(truncation_psi=), set_latent_space, set_backend and tracking_features: what the widget calls."""
    s = DragSession(tiny_generator, seed=1)
    s.add_point(handle=(20, 30), target=(35, 30))
    feat, ref = s.tracking_features()
    assert feat.shape == (feat.shape[0], 64, 64) and ref.shape == (1, feat.shape[0])
    np.testing.assert_array_equal(ref[0], feat[:, 30, 20])  # before the first step: the feature at the handle
    s.step()
    s.step()
    feat2, ref2 = s.tracking_features()
    np.testing.assert_array_equal(ref2, ref)                # after: still F0 at the initial handle
    assert np.abs(feat2 - feat).max() > 0                   # while the features moved
    ws = s.ws
    s.set_latent_space("w")
    assert s.latent_space == "w"
    np.testing.assert_array_equal(s.ws, ws)
    with pytest.raises(ValueError):
        s.set_latent_space("z")
    with pytest.raises(ValueError):
        s.set_backend("tf")
    s.set_seed(2, truncation_psi=0.5)
    assert (s.seed, s.truncation_psi, s.target_points) == (2, 0.5, [])
    with pytest.raises(TypeError):
        s.set_seed(3, truncation_psi="high")
    assert (s.seed, s.truncation_psi) == (2, 0.5)


def test_run_end_message_says_why(wb):
    """A run that reaches its targets says "converged", one cut short says "max steps"."""
    wb.add_point((20, 30), (35, 30))
    wb.run(2)
    assert wb.wait(30) and "run ended: max steps" in wb.message.value
    wb.session.set_params(tolerance=100.0)  # every handle is within tolerance: the next step converges
    wb.run(50)
    assert wb.wait(30) and "run ended: converged" in wb.message.value, wb.message.value
    assert "<i>converged</i>" in wb.status.value


def test_a_converged_step_reports_the_last_real_loss(wb):
    """A converged step makes no update: the status and the loss curve keep the last loss of the drag."""
    wb.add_point((20, 30), (35, 30))
    r = wb.step()
    wb.session.set_params(tolerance=100.0)
    r2 = wb.step()
    assert r2.converged and len(wb._losses) == 1
    assert f"loss {r.loss:.4g}" in wb.status.value and "converged" in wb.status.value
    wb.reset_image()
    wb.step()  # converged at once: no loss yet
    assert "loss -" in wb.status.value and wb._losses == []


def test_device_dropdown_offers_what_works_and_switches(wb):
    """The device is shown and switchable like the back-end; on a CPU-only machine the CPU is all it offers, and a
    refused device leaves the session and the dropdown as they were."""
    import torch

    assert wb.device.value == wb.session.device == "cpu"
    if not torch.cuda.is_available():
        assert list(wb.device.options) == ["cpu"]
    wb.add_point((20, 30), (35, 30))
    wb.step()
    ws = wb.session.ws
    wb.device.options = ["cpu", "cuda:7"]  # as if offered, then gone: the switch is refused
    wb.device.value = "cuda:7"
    assert wb.wait(60)
    assert isinstance(wb.last_error, ValueError) and "cuda:7" in str(wb.last_error)
    assert wb.session.device == "cpu" and wb.device.value == "cpu"
    np.testing.assert_array_equal(wb.session.ws, ws)
    r = wb.step()
    assert r.step == 1
