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
the status line show, and the pacing of a run's frames), ``history.py`` (the loss curve and trails of each
state Undo returns to) and ``files.py`` (save and load). The parts act through the workbench's underscored
members. Errors of any action appear in the widget's error line, in words for people.
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
from .controls import CANVAS_CLASS, SESSION_MODEL, Controls, connect, model_options, row, session_model_value
from .drawing import CanvasMap, put_image
from .history import History
from .internals import InternalsView
from .jobs import Jobs, run_loop
from .picture import PictureControls, open_image
from .pointer import Pointer

MAX_TRAIL = 1000         # positions kept per handle trail
EVENTS_GRACE = 1.0       # seconds: a click the canvas saw with no ipyevents message by then: no ipyevents front end
NO_EVENTS = ("Clicks reach the image but not the workbench: this front end lacks the ipyevents widget, so points, "
             "mask and keys cannot be used with the mouse. JupyterLab and Notebook 7 have it once ipyevents is "
             "installed; VS Code and Colab need a setting (docs/frontends.md). From code: "
             "wb.add_point((x, y), (x, y)), wb.run().")
INTERNALS_EVERY = 0.5    # seconds between internals-view updates during a run, at least
INTERNALS_SHARE = 0.2    # of a run's wall clock the internals view may take, about (an update is a generator
                         # forward and a PCA: on a slow machine more than INTERNALS_EVERY, then it waits longer)


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
        **session_args: for a new session, the other arguments of :class:`DragSession` (``seed``,
            ``truncation_psi``, ``backend``, ``latent_space``, drag parameters). A model given by name or path
            here (not inside a session) is the one the model menu shows selected.
    """

    def __init__(self, session: DragSession | None = None, model=None, models_dir=None, display_size: int = 512,
                 **session_args):
        if session is not None and (model is not None or session_args):
            raise ValueError("give a session, or a model and the session's settings, not both")
        from ..checkpoints import DEFAULT_MODEL, user_models_dir  # imports torch: not at this module's import

        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else user_models_dir()
        self.display_size = int(display_size)
        self._draw_lock = threading.RLock()   # one frame at a time, whichever thread draws it
        self._jobs = Jobs()
        self._pace = render.Pace()
        self._next_image: np.ndarray | None = None  # the newest image of a step not drawn yet
        self._last_step = None                      # the StepResult the status line shows, if it shows one
        self._in_internals = False
        self._events_seen = False  # an ipyevents message has arrived: its front end is there
        if session is None and model is None:
            self._model_value = DEFAULT_MODEL
        elif isinstance(model, (str, os.PathLike)):
            self._model_value = os.fspath(model)
        elif session is not None:  # named by its model's name or file, if it was opened from one unchanged
            self._model_value = session_model_value(session)
        else:  # a Generator object
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
        self._attach(session if session is not None else DragSession(model=model, **session_args))

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
        self._losses: list[tuple[int, float, float, float]] = []  # (step, loss, lambda * mask, motion)
        self._history = History()                               # the curve and trails Undo returns to
        mask = session.mask
        self._movable = None if mask is None else ~mask         # bool [H, W]: painted region allowed to move
        self._pointer.reset()
        self.selected: int | None = None                        # point index for Delete and the internals view
        self._internals_time = 0.0   # when the internals view was last updated (time.monotonic())
        self._internals_cost = 0.0   # seconds that update took
        options, self._model_value = model_options(self.models_dir, self._model_value)
        self._controls.offer(session, options)
        self._sync_controls()
        # The column is as wide as the canvas, and narrower where the notebook is (flex-shrink, no minimum):
        # the canvas then shrinks with it, so the image and the actions above it stay in view together.
        left = widgets.VBox([self._controls.toolbar(), self.canvas, self.status,
                             row(self.loss_canvas, self.progress, align_items="center"),
                             self.message, self.confirm, self.error, self._controls.css],
                            layout=widgets.Layout(width=f"{max(cw, 320)}px", flex="0 1 auto", min_width="0"))
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
        # Shown at its pixel size at most, smaller in a narrow notebook (height follows the aspect ratio; the
        # pointer maps displayed pixels to canvas pixels), never smoothed (the CANVAS_CLASS style).
        self.canvas = MultiCanvas(3, width=cw, height=ch,
                                  layout=widgets.Layout(width="100%", max_width=f"{cw}px", height="auto",
                                                        flex="0 0 auto"))
        self.canvas.add_class(CANVAS_CLASS)
        self.image_layer, self.mask_layer, self.marks_layer = self.canvas[0], self.canvas[1], self.canvas[2]
        # Keys through ipyevents too: it takes them while the mouse is over the canvas, where a canvas' own key
        # events need focus, and focusing the canvas by a click would place a point.
        self._mouse = Event(source=self.canvas, watched_events=["mousedown", "mousemove", "mouseup", "mouseleave",
                                                                "keydown"], ignore_modifier_key_events=True)
        self._mouse.on_dom_event(self._guarded(self._pointer.on_mouse))
        # A second watcher only to keep the browser/JupyterLab context menu away from right-clicks (the first
        # must not prevent the default of every mouse event: a click on the canvas should still take the focus
        # away from a text field).
        self._menu = Event(source=self.canvas, watched_events=["contextmenu"], prevent_default_action=True)
        self.canvas.on_client_ready(self._guarded(lambda: self._redraw(image=True)))
        # ipycanvas reports clicks by itself: one that ipyevents does not report too shows that its front end is
        # missing, which would otherwise leave the user clicking at a canvas that never answers.
        self.canvas.on_mouse_down(self._guarded(lambda _x, _y: self._check_events()))

    def _check_events(self) -> None:
        if self._events_seen:
            return

        def check():
            if not self._events_seen:
                self._show_error(NO_EVENTS)

        timer = threading.Timer(EVENTS_GRACE, check)
        timer.daemon = True
        timer.start()

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
        text = render.error_text(e) if isinstance(e, BaseException) else str(e)
        self.error.value = f"<span style='color:#c62828'>&#9888; {html.escape(text)}</span>"

    def _clear_error(self) -> None:
        self.last_error = None
        self.error.value = ""

    def _say(self, text: str, html_text: str = "") -> None:
        """Show ``text`` (then ``html_text``, already HTML) on the message line; "" clears it."""
        body = html.escape(text) + html_text
        self.message.value = f"<span style='color:#555'>{body}</span>" if body else ""

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
        """Record one StepResult (trail, loss curve) and draw it as one frame (image, marks, loss curve, status)
        - during a run only when a frame is due (``render.Pace``); the run draws its last step at its end."""
        now = time.monotonic()
        running = self._jobs.running
        self._pace.record(now, r.ms, timed=running)
        if not r.converged:  # as the session: a step that starts a drag converged takes no undo snapshot
            self._history.before_step(self, r.step)
        for trail, hp in zip(self._trails, r.handle_points):
            if trail[-1] != hp:
                trail.append(hp)
                del trail[:-MAX_TRAIL]
        if not r.converged:  # a converged step made no update: its losses are not a loss of the drag
            self._losses.append((r.step, r.loss, self.session.params["lambda_mask"] * r.mask, r.motion))
        if r.image is not None:
            self._next_image = r.image
        self._pace.undrawn = r
        if not running or self._pace.due(now):
            self._draw_step()

    def _draw_step(self) -> None:
        """Draw the latest step result not drawn yet (if any) as one frame."""
        r = self._pace.undrawn
        if r is None:
            return
        start = time.monotonic()
        image, self._next_image = self._next_image, None
        with self._frame():
            if image is not None:
                self._draw_image(image)
            self._draw_marks()
            self._draw_loss()
        self.frames += 1
        self._last_step = r
        self._status_step()
        self._pace.drawn(start, time.monotonic())
        gap = max(INTERNALS_EVERY, self._internals_cost / INTERNALS_SHARE)
        if not self._jobs.running or time.monotonic() - self._internals_time > gap:
            self._update_internals()

    def _status_step(self, state: str | None = None) -> None:
        """The status line of the last step drawn, in ``state`` (None: running, converged or none)."""
        r = self._last_step
        if state is None:
            state = "converged" if r.converged else "running" if self._jobs.running else ""
        last = self._losses[-1] if self._losses else None
        self.status.value = render.status_step(self.session, r, None if last is None else last[1:], state,
                                               self._movable, self._pace)

    def step(self):
        """One optimisation step (the Step button); returns the StepResult (None on error or while running)."""
        if self._jobs.busy():
            self._say("busy: wait for the current action (or Stop the run)")
            return None
        self._clear_error()
        if not self._has_points():
            return None
        self._status_preparing()
        try:
            r = self.session.step()
        except Exception:
            self._status_idle()
            raise
        self._show_step(r)
        return r

    def _has_points(self) -> bool:
        """True if there is a pair to drag; else say how to place one (Step and Run with nothing to do)."""
        self._say("")
        if self.session.target_points:
            return True
        self._say("Place a point pair first: click the image for a handle, then again for its target."
                  if self._pointer.pending is None else "Click the image for the handle's target first.")
        return False

    def run(self, max_steps: int | None = None) -> None:
        """Start stepping in a worker thread until convergence, ``max_steps`` (default: the control) or Stop."""
        if self._jobs.busy():
            return
        self._clear_error()
        if not self._has_points():
            return
        self._jobs.stop_requested = False
        self._history.close_drag()  # a run is a drag of its own
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
        put_image(self.image_layer, img, self.map.scale)
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
        hover = self._pointer.hover if self.mode.value == "mask" else None
        brush = None if hover is None else (*hover, self.brush.value * self.map.scale)
        render.draw_marks(self.marks_layer, self.map, handles, targets, self._trails, self.selected,
                          self._jobs.ghosts(), self._pointer.pending, brush)

    def _draw_loss(self) -> None:
        render.draw_loss(self.loss_canvas, self._losses)

    def _status_idle(self, state: str = "") -> None:
        self._last_step = None
        self.status.value = render.status_idle(self.session, self._movable, self._pace, state)

    def _status_preparing(self) -> None:
        """Before a step: say so if it starts the drag (F0 first, the longest step of a drag)."""
        if self.session.needs_f0 and self.session.target_points:
            self.status.value = render.status_preparing(self.session, self._jobs.running)

    def _update_internals(self) -> None:
        """Redraw the internals view from the session's features (one generator forward), if it is shown."""
        if not self.internals_toggle.value or self._in_internals:
            return
        self._in_internals = True  # selecting the point below must not draw a second time
        try:
            start = time.monotonic()
            features, refs = self.session.tracking_features()
            p = self.session.params
            self.internals.set_points(len(self.session.target_points), self.selected)
            with self._draw_lock:
                self.internals.show(features, refs, self.session.handle_points, self.session.target_points,
                                    p["r1"], p["r2"], p["l1_tracking"], compat=p["compat"])
            self._internals_time = time.monotonic()
            self._internals_cost = self._internals_time - start
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
