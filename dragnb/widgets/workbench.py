"""``dragnb.Workbench``: DragGAN in a notebook, drawn on an ipycanvas ``MultiCanvas``::

    wb = dragnb.Workbench()              # the bundled model; or Workbench(session=s) / Workbench(model="file")
    wb                                   # click a handle, then its target; press Step or Run

Canvas layers, bottom to top: the image; the mask overlay (the painted region that may move, tinted; the
rest, kept fixed, darkened); handle trails, arrows and points (handles red, targets blue). Small images are
shown scaled up (128 px at 512); ``drawing.CanvasMap`` is the one canvas <-> image conversion. The widget
drives :class:`~dragnb.session.DragSession` only.

:class:`Workbench` holds the session and the widget's state and wires its parts together:
``controls.py`` (the widgets beside the canvas and what a change of each does), ``pointer.py`` (mouse and
keys on the canvas), ``edits.py`` (the session edits, applied at once or queued while a step is in
flight), ``jobs.py`` (Run's steps and long actions in a worker thread), ``render.py`` (what the layers and
the status line show) and ``files.py`` (save and load). The parts act through the workbench's underscored
members. Errors of any action appear in the widget's error line.
"""

from __future__ import annotations

import html
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas
from ipyevents import Event

from ..session import DragSession
from . import edits, files, render
from .controls import SESSION_MODEL, Controls, connect, model_options, row
from .drawing import CanvasMap, scaled_rgba
from .internals import InternalsView
from .jobs import Jobs, run_loop
from .picture import PictureControls, open_image
from .pointer import Pointer

MAX_TRAIL = 1000         # positions kept per handle trail
INTERNALS_EVERY = 0.5    # seconds between internals-view updates during a run


class Workbench(widgets.VBox):
    """The DragGAN workbench: display it (it is an ipywidgets ``VBox``) and drag.

    Every control is an attribute (``wb.seed``, ``wb.max_steps``, ``wb.step_button``, ...; see
    :class:`~dragnb.widgets.controls.Controls`).

    Args:
        session: a :class:`DragSession` to drive; None builds ``DragSession(model)``.
        model: model for a new session (None = the bundled model; a name, a checkpoint path or a Generator).
        models_dir: folder whose checkpoints the model dropdown offers (default ``$DRAGNB_MODELS`` or
            ``~/.cache/dragnb/models``).
        display_size: canvas pixels of the image's longer side (the image is scaled to it).
    """

    def __init__(self, session: DragSession | None = None, model=None, models_dir=None, display_size: int = 512):
        if session is not None and model is not None:
            raise ValueError("give a session or a model, not both")
        from ..checkpoints import DEFAULT_MODEL, user_models_dir  # imports torch: not at this module's import

        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else user_models_dir()
        self.display_size = int(display_size)
        self._draw_lock = threading.RLock()   # one frame at a time, whichever thread draws it
        self._jobs = Jobs()
        self._in_internals = False
        if session is None and model is None:
            self._model_value = DEFAULT_MODEL
        elif isinstance(model, (str, os.PathLike)):
            self._model_value = os.fspath(model)
        else:  # a session, or a Generator object
            self._model_value = SESSION_MODEL
        self.last_error: BaseException | None = None
        self.last_image: np.ndarray | None = None  # uint8 [H, W, 3] last image drawn
        self.frames = 0                       # step frames drawn (for tests and curious users)
        super().__init__()
        self._controls = Controls()
        for name, w in self._controls.widgets().items():
            setattr(self, name, w)
        self._panel = self._controls.panel()
        self._picture = PictureControls()  # "Open image" (widgets/picture.py)
        self._panel.children = (*self._panel.children, self._picture.box())
        self._picture.open_button.on_click(self._guarded(lambda _b: self.open_image()))
        self._pointer = Pointer(self)
        connect(self)
        self._attach(session if session is not None else DragSession(model=model))

    # ------------------------------------------------------------------ building

    def _attach(self, session: DragSession) -> None:
        """Drive ``session`` from now on: size the canvases, reset the widget state, sync the controls, draw."""
        self.session = session
        H, W = session.H, session.W
        s = self.display_size / max(H, W)
        self.map = CanvasMap(s)
        cw, ch = round(W * s), round(H * s)
        if getattr(self, "canvas", None) is None or (self.canvas.width, self.canvas.height) != (cw, ch):
            self._make_canvas(cw, ch)
        if getattr(self, "internals", None) is None or (self.internals.width, self.internals.height) != (W, H):
            if getattr(self, "internals", None) is not None:
                self.internals.close()
            self.internals = InternalsView(W, H)
            self.internals.point.observe(self._guarded(lambda _ch: self._update_internals()), "value")
        # Per-image widget state.
        self._reset_trails()                                   # (x, y) positions each handle was tracked along
        self._losses: list[tuple[int, float, float]] = []      # (step, loss, lambda * mask)
        mask = session.mask
        self._movable = None if mask is None else ~mask         # bool [H, W]: painted region allowed to move
        self._pointer.reset()
        self.selected: int | None = None                        # point index for Delete and the internals view
        self._internals_time = 0.0
        self._controls.offer(session, model_options(self.models_dir, self._model_value))
        self._sync_controls()
        left = widgets.VBox([self.canvas, self.status, row(self.loss_canvas, self.progress, align_items="center"),
                             self.message, self.error], layout=widgets.Layout(width=f"{max(cw, 320)}px"))
        self._internals_box = widgets.VBox([self.internals],
                                           layout=widgets.Layout(display="flex" if self.internals_toggle.value
                                                                 else "none"))
        self.children = [row(left, self._panel, flex_flow="row wrap"), self._internals_box]
        self._redraw(image=True)
        self._status_idle()

    def _make_canvas(self, cw: int, ch: int) -> None:
        """A new ``cw`` x ``ch`` canvas (the old one closed), its layers and its mouse and key events."""
        if getattr(self, "canvas", None) is not None:
            for w in (self._mouse, self._menu, self.canvas):
                w.close()
        self.canvas = MultiCanvas(3, width=cw, height=ch,
                                  layout=widgets.Layout(width=f"{cw}px", height=f"{ch}px", flex="0 0 auto"))
        self.image_layer, self.mask_layer, self.marks_layer = self.canvas[0], self.canvas[1], self.canvas[2]
        self._mouse = Event(source=self.canvas, watched_events=["mousedown", "mousemove", "mouseup", "mouseleave"])
        self._mouse.on_dom_event(self._guarded(self._pointer.on_mouse))
        # A second watcher only to keep the browser/JupyterLab context menu away from right-clicks (preventing
        # the default of mousedown would also stop the canvas from taking focus for the keys).
        self._menu = Event(source=self.canvas, watched_events=["contextmenu"], prevent_default_action=True)
        self.canvas.on_key_down(self._guarded(self._pointer.on_key))
        self.canvas.on_client_ready(self._guarded(lambda: self._redraw(image=True)))

    def _sync_controls(self) -> None:
        """Set every control from the session (without acting on the change)."""
        self._controls.show(self.session, self._model_value)

    # ------------------------------------------------------------------ errors and messages

    def _guarded(self, fn):
        """Wrap a callback so that its exceptions show in the widget instead of vanishing into a log."""
        def call(*args):
            try:
                return fn(*args)
            except Exception as e:  # every failure is shown to the user
                self._show_error(e)
        return call

    def _show_error(self, e) -> None:
        self.last_error = e if isinstance(e, BaseException) else RuntimeError(str(e))
        text = f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e)
        self.error.value = f"<span style='color:#c62828'>&#9888; {html.escape(text)}</span>"

    def _clear_error(self) -> None:
        self.last_error = None
        self.error.value = ""

    def _say(self, text: str) -> None:
        self.message.value = f"<span style='color:#555'>{html.escape(text)}</span>"

    # ------------------------------------------------------------------ edits (see edits.py)

    @property
    def running(self) -> bool:
        """True while Run's worker thread is stepping."""
        return self._jobs.running

    def _reset_trails(self) -> None:
        self._trails = [[h] for h in self.session.handle_points]

    def add_point(self, handle, target) -> None:
        """Add a pair, (x, y) image pixels (what two clicks do)."""
        edits.add_point(self, handle, target)

    def move_point(self, i: int, handle=None, target=None) -> None:
        """Move the handle and/or target of pair ``i`` (what dragging a point does)."""
        edits.move_point(self, i, handle, target)

    def remove_point(self, i: int) -> None:
        """Delete pair ``i`` (right-click / Alt+click / Delete key)."""
        edits.remove_point(self, i)

    def reset_points(self) -> None:
        """Remove every pair (the Reset points button)."""
        edits.reset_points(self)

    def reset_image(self) -> None:
        """Back to the seed image, handles where they were placed (the Reset image button; undoable)."""
        edits.reset_image(self)

    def undo(self) -> None:
        """Back to before the last drag (the Undo drag button)."""
        edits.undo(self)

    def set_mask(self, movable: np.ndarray | None) -> None:
        """Set the painted region: bool [H, W], True = allowed to move (the session keeps the rest fixed)."""
        edits.set_mask(self, movable)

    def clear_mask(self) -> None:
        """No mask (the Clear mask button)."""
        self.set_mask(None)

    # ------------------------------------------------------------------ stepping

    def _show_step(self, r) -> None:
        """Record and draw one StepResult (trail, loss curve, image, status): one frame."""
        for trail, hp in zip(self._trails, r.handle_points):
            if trail[-1] != hp:
                trail.append(hp)
                del trail[:-MAX_TRAIL]
        self._losses.append((r.step, r.loss, self.session.params["lambda_mask"] * r.mask))
        with self._frame():
            if r.image is not None:
                self._draw_image(r.image)
            self._draw_marks()
            self._draw_loss()
        self.frames += 1
        self.status.value = render.status_step(r, self.session.params["lambda_mask"], self._jobs.running,
                                               self._movable)
        if not self._jobs.running or time.monotonic() - self._internals_time > INTERNALS_EVERY:
            self._update_internals()

    def step(self):
        """One optimisation step (the Step button); returns the StepResult (None on error or while running)."""
        if self._jobs.busy():
            self._say("busy: wait for the current action (or Stop the run)")
            return None
        self._clear_error()
        r = self.session.step()
        self._show_step(r)
        return r

    def run(self, max_steps: int | None = None) -> None:
        """Start stepping in a worker thread until convergence, ``max_steps`` (default: the control) or Stop."""
        if self._jobs.busy():
            return
        if not self.session.target_points:
            raise ValueError("add a handle and a target first (click the image twice)")
        self._clear_error()
        self._jobs.stop_requested = False
        self._jobs.set_running(True)
        self._controls.set_busy(True, run=True)
        self._jobs.start(run_loop, "dragnb-run", self, max_steps)

    def stop(self) -> None:
        """Stop a run before its next step (the Stop button; safe from any thread)."""
        self._jobs.stop_requested = True
        self.session.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run or long action has finished; False on timeout."""
        return self._jobs.wait(timeout)

    # ------------------------------------------------------------------ drawing

    @contextmanager
    def _frame(self):
        """One frame: drawing lock (any thread) + one ``hold_canvas`` batch."""
        with self._draw_lock, hold_canvas():
            yield

    def _redraw(self, image: bool = True) -> None:
        """Draw every layer again (``image``: fetch and draw the session's current image too)."""
        img = self.session.image if image else None
        with self._frame():
            if img is not None:
                self._draw_image(img)
            self._draw_mask()
            self._draw_marks()
            self._draw_loss()
        self._update_internals()

    def _draw_image(self, img: np.ndarray) -> None:
        self.image_layer.put_image_data(scaled_rgba(img, self.map.scale), 0, 0)
        self.last_image = img

    def _draw_mask(self) -> None:
        render.draw_mask(self.mask_layer, self._movable if self.show_mask.value else None, self.map.scale)

    def _draw_marks(self) -> None:
        handles, targets = self.session.handle_points, self.session.target_points
        if len(self._trails) != len(handles):
            self._trails = [[h] for h in handles]
        drag = self._pointer.drag
        if drag is not None:  # show the point being dragged where the mouse is
            i, part, xy = drag
            if i < len(handles):
                (handles if part == "handle" else targets)[i] = xy
        render.draw_marks(self.marks_layer, self.map, handles, targets, self._trails, self.selected,
                          self._jobs.ghosts(), self._pointer.pending)

    def _draw_loss(self) -> None:
        render.draw_loss(self.loss_canvas, self._losses)

    def _status_idle(self) -> None:
        self.status.value = render.status_idle(self.session, self._movable)

    def _update_internals(self) -> None:
        """Redraw the internals view from the session's features (one generator forward), if it is shown."""
        if not self.internals_toggle.value or self._in_internals:
            return
        self._in_internals = True  # selecting the point below must not draw a second time
        try:
            self._internals_time = time.monotonic()
            features, refs = self.session.tracking_features()
            p = self.session.params
            self.internals.set_points(len(self.session.target_points), self.selected)
            with self._draw_lock:
                self.internals.show(features, refs, self.session.handle_points, self.session.target_points,
                                    p["r1"], p["r2"], p["l1_tracking"], official=p["compat"] == "official")
        finally:
            self._in_internals = False

    # ------------------------------------------------------------------ files

    def open_image(self, source=None, tune: bool | None = None, **kwargs) -> None:
        """Project a picture (default: the uploaded one, else the path field) into the model, tune it if asked
        (default: the tune box), show it live, then drag it (in the background; see ``widgets/picture.py``)."""
        open_image(self, source, tune, **kwargs)

    def save_png(self) -> Path:
        """The current image as ``<save as>.png`` (no overlays)."""
        return files.save_png(self)

    def save_gif(self) -> None:
        """The recorded steps as ``<save as>.gif`` with overlays, at canvas size (in the background)."""
        files.save_gif(self)

    def save_mp4(self) -> None:
        """The recorded steps as ``<save as>.mp4`` with overlays, at canvas size (in the background)."""
        files.save_mp4(self)

    def save_session(self) -> Path:
        """The session (points, mask, latents, optimizer state, history) as the folder ``<save as>_session``."""
        return files.save_session(self)

    def load_session(self) -> None:
        """Replace the session by the one saved at the ``session`` path (in the background)."""
        files.load_session(self)
