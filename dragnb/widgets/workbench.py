"""``dragnb.Workbench``: DragGAN in a notebook, drawn on an ipycanvas ``MultiCanvas``::

    wb = dragnb.Workbench()              # the bundled model; or Workbench(session=s) / Workbench(model="file")
    wb                                   # click a handle, then its target; press Step or Run

Canvas layers, bottom to top: the image; the mask overlay (the painted region that may move, tinted; the
rest, kept fixed, darkened); handle trails, arrows and points (handles red, targets blue). Small images are
shown scaled up (128 px at 512); ``drawing.CanvasMap`` is the one canvas <-> image conversion. The widget
drives :class:`~dragnb.drag.session.DragSession` only.

Mouse (via ipyevents, which reports buttons and modifier keys). Points mode: a click places a handle, the
next its target; dragging a point moves it; right-click or Alt+click on a point deletes its pair. Mask mode:
the brush paints the region allowed to move, Shift+drag erases. Keys, once the canvas has focus: Escape
drops a half-placed pair, Delete/Backspace deletes the selected pair, Ctrl/Cmd+Z undoes the last drag.

Run: the steps run in a worker thread (ipykernel 7 does not keep driving asyncio tasks started from a
widget callback once the cell has finished, see ipython/ipykernel#1510), and each result is drawn from
that thread, one ``hold_canvas`` batch per frame under one drawing lock. The kernel keeps serving clicks:
Stop ends the loop before the next step, and edits made while a step is in flight are queued and applied
at the step boundary (shown dashed until then). Errors of any action appear in the widget's error line.
"""

from __future__ import annotations

import html
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas, MultiCanvas, hold_canvas
from ipyevents import Event

from ..backends.ort_model import ArtifactModel
from ..checkpoints import BUNDLED, DEFAULT_MODEL, user_models_dir
from ..drag.session import DragSession
from .drawing import ARROW, HANDLE, TARGET, TRAIL, CanvasMap, arrow, dot, scaled_rgba
from .internals import InternalsView

HIT_RADIUS = 10          # canvas pixels: how close a click must be to grab or delete a point
POINT_RADIUS = 6         # canvas pixels
MAX_TRAIL = 1000         # positions kept per handle trail
LOSS_STEPS = 300         # steps shown in the loss curve
INTERNALS_EVERY = 0.5    # seconds between internals-view updates during a run
CHECKPOINT_GLOBS = ("*.safetensors", "*.pkl", "*.pt")
SESSION_MODEL = ""       # model dropdown value for "the model this session was built with"
BACKEND_OPTIONS = (("PyTorch", "torch"), ("ONNX Runtime", "ort"))
PARAM_NAMES = ("lr", "lambda_mask", "r1", "r2", "tolerance", "max_steps", "feature_block")


def _row(*children, **layout) -> widgets.HBox:
    return widgets.HBox(list(children), layout=widgets.Layout(**layout))


class Workbench(widgets.VBox):
    """The DragGAN workbench: display it (it is an ipywidgets ``VBox``) and drag.

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
        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else user_models_dir()
        self.display_size = int(display_size)
        self._draw_lock = threading.RLock()   # one frame at a time, whichever thread draws it
        self._queue_lock = threading.Lock()   # guards _running and _queued
        self._queued: list[tuple[Callable[[], None], bool, tuple | None]] = []  # (edit, changes image, ghost pair)
        self._running = False
        self._stop_requested = False
        self._job: threading.Thread | None = None
        self._syncing = False                 # controls being set from the session: ignore their observers
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
        self._build_controls()
        self._attach(session if session is not None else DragSession(model=model))

    # ------------------------------------------------------------------ building

    def _build_controls(self) -> None:
        W = widgets
        desc = {"description_width": "92px"}

        def field(cls, description, width="300px", **kw):
            return cls(description=description, style=desc, layout=W.Layout(width=width), **kw)

        def button(description, icon="", tooltip="", width="96px"):
            return W.Button(description=description, icon=icon, tooltip=tooltip,
                            layout=W.Layout(width=width, flex="0 0 auto"))

        self.step_button = button("Step", "step-forward", "one optimisation step")
        self.run_button = button("Run", "play", "run until converged, max steps, or Stop")
        self.undo_button = button("Undo drag", "undo", "back to before the last drag", "108px")
        self.reset_points_button = button("Reset points", "times", "remove every point pair", "150px")
        self.reset_image_button = button("Reset image", "refresh", "back to the seed image (undoable)", "150px")
        self.mode = W.ToggleButtons(options=[("Points", "points"), ("Mask", "mask")], value="points",
                                    tooltips=["place and drag points", "paint the region allowed to move"],
                                    style={"button_width": "72px"})
        self.internals_toggle = W.ToggleButton(description="Internals", icon="eye", layout=W.Layout(width="108px"),
                                               tooltip="features, r1 / r2, tracking distance, motion directions")
        self.brush = W.IntSlider(value=4, min=1, max=32, description="brush", tooltip="brush radius, image pixels",
                                 style={"description_width": "44px"}, layout=W.Layout(width="214px"))
        self.show_mask = W.Checkbox(value=True, description="show", indent=False, layout=W.Layout(width="60px"))
        self.clear_mask_button = button("Clear", "eraser", "remove the mask", "80px")

        self.model = field(W.Dropdown, "model")
        self.backend = field(W.Dropdown, "back-end", options=BACKEND_OPTIONS)
        self.seed = field(W.BoundedIntText, "seed", "250px", min=0, max=2**32 - 1)
        self.random_seed_button = button("", "random", "random seed", "46px")
        self.psi = field(W.FloatSlider, "psi", min=0.0, max=1.5, step=0.05, continuous_update=False,
                         tooltip="truncation psi (a new image: points are cleared)")
        self.latent_space = W.ToggleButtons(options=[("W", "w"), ("W+", "w+")], style={"button_width": "60px"},
                                            tooltips=["one w for the optimised layers", "one w per optimised layer"])
        self.lr = field(W.BoundedFloatText, "learning rate", min=1e-6, max=1.0, step=1e-4)
        self.lambda_mask = field(W.BoundedFloatText, "lambda", min=0.0, max=1e4, step=1.0,
                                 tooltip="weight of the mask term")
        self.r1 = field(W.BoundedFloatText, "r1 (px)", min=0.5, max=512, step=0.5)
        self.r2 = field(W.BoundedIntText, "r2 (px)", min=1, max=512)
        self.tolerance = field(W.BoundedFloatText, "tolerance (px)", min=0.1, max=512, step=0.5)
        self.max_steps = field(W.BoundedIntText, "max steps", min=1, max=100_000)
        self.feature_block = field(W.Dropdown, "feature block")

        self.save_path = field(W.Text, "save as", value="dragnb_out/drag",
                               tooltip="path stem: adds .png / .gif / .mp4; a session is the folder <stem>_session")
        self.save_png_button = button("PNG", "image", "the current image", "70px")
        self.save_gif_button = button("GIF", "film", "the recorded steps, with points", "70px")
        self.save_mp4_button = button("MP4", "video-camera", "the recorded steps, with points", "70px")
        self.save_session_button = button("Session", "save", "points, mask, latents, optimizer state", "86px")
        self.load_path = field(W.Text, "session", value="dragnb_out/drag_session")
        self.load_button = button("Load session", "folder-open", "", "150px")

        self.status = W.HTML()
        self.message = W.HTML()
        self.error = W.HTML()
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="", bar_style="info",
                                        layout=W.Layout(visibility="hidden", width="300px"))
        self.loss_canvas = Canvas(width=300, height=80, layout=W.Layout(width="300px", height="80px"))

        for b, fn in [(self.step_button, self.step), (self.run_button, self._on_run_button),
                      (self.undo_button, self.undo), (self.reset_points_button, self.reset_points),
                      (self.reset_image_button, self.reset_image), (self.clear_mask_button, self.clear_mask),
                      (self.random_seed_button, self._on_random_seed), (self.save_png_button, self.save_png),
                      (self.save_gif_button, self.save_gif), (self.save_mp4_button, self.save_mp4),
                      (self.save_session_button, self.save_session), (self.load_button, self.load_session)]:
            b.on_click(self._guarded(lambda _b, fn=fn: fn()))
        self.seed.observe(self._guarded(self._on_seed), "value")
        self.psi.observe(self._guarded(self._on_psi), "value")
        self.latent_space.observe(self._guarded(self._on_latent_space), "value")
        self.backend.observe(self._guarded(self._on_backend), "value")
        self.model.observe(self._guarded(self._on_model), "value")
        for name in PARAM_NAMES:
            getattr(self, name).observe(self._guarded(lambda ch, name=name: self._on_param(name, ch)), "value")
        self.show_mask.observe(self._guarded(lambda _ch: self._redraw(image=False)), "value")
        self.internals_toggle.observe(self._guarded(self._on_internals_toggle), "value")

        self._controls = W.VBox([
            _row(self.step_button, self.run_button, self.undo_button),
            _row(self.reset_points_button, self.reset_image_button),
            _row(self.mode, self.internals_toggle),
            _row(self.brush, self.show_mask, self.clear_mask_button),
            W.HTML("<b>Image</b>"), self.model, self.backend, _row(self.seed, self.random_seed_button),
            self.psi, _row(W.Label("latent space", layout=W.Layout(width="96px")), self.latent_space),
            W.HTML("<b>Optimisation</b>"), self.lr, self.lambda_mask, self.r1, self.r2, self.tolerance,
            self.max_steps, self.feature_block,
            W.HTML("<b>Files</b>"), self.save_path,
            _row(self.save_png_button, self.save_gif_button, self.save_mp4_button, self.save_session_button),
            _row(self.load_path), self.load_button,
        ], layout=W.Layout(width="360px", margin="0 0 0 10px", flex="0 0 auto"))

    def _attach(self, session: DragSession) -> None:
        """Drive ``session`` from now on: size the canvases, reset the widget state, sync the controls, draw."""
        self.session = session
        H, W = session.H, session.W
        s = self.display_size / max(H, W)
        self.map = CanvasMap(s)
        cw, ch = round(W * s), round(H * s)
        if getattr(self, "canvas", None) is None or (self.canvas.width, self.canvas.height) != (cw, ch):
            if getattr(self, "canvas", None) is not None:
                for w in (self._mouse, self._menu, self.canvas):
                    w.close()
            self.canvas = MultiCanvas(3, width=cw, height=ch,
                                      layout=widgets.Layout(width=f"{cw}px", height=f"{ch}px", flex="0 0 auto"))
            self.image_layer, self.mask_layer, self.marks_layer = self.canvas[0], self.canvas[1], self.canvas[2]
            self._mouse = Event(source=self.canvas, watched_events=["mousedown", "mousemove", "mouseup", "mouseleave"])
            self._mouse.on_dom_event(self._guarded(self._on_mouse))
            # A second watcher only to keep the browser/JupyterLab context menu away from right-clicks (preventing
            # the default of mousedown would also stop the canvas from taking focus for the keys).
            self._menu = Event(source=self.canvas, watched_events=["contextmenu"], prevent_default_action=True)
            self.canvas.on_key_down(self._guarded(self._on_key))
            self.canvas.on_client_ready(self._guarded(lambda: self._redraw(image=True)))
        if getattr(self, "internals", None) is None or (self.internals.width, self.internals.height) != (W, H):
            if getattr(self, "internals", None) is not None:
                self.internals.close()
            self.internals = InternalsView(W, H)
            self.internals.point.observe(self._guarded(lambda _ch: self._update_internals()), "value")
        # Per-image widget state.
        self._trails = [[h] for h in session.handle_points]   # (x, y) positions each handle was tracked along
        self._losses: list[tuple[int, float, float]] = []      # (step, loss, lambda * mask)
        mask = session.mask
        self._movable = None if mask is None else ~mask         # bool [H, W]: painted region allowed to move
        self._pending: tuple[int, int] | None = None          # a handle waiting for its target
        self._drag: list | None = None                          # [index, "handle" | "target", (x, y)]
        self._stroke: bool | None = None                        # brush value while painting (False = erasing)
        self._last_paint: tuple[int, int] | None = None
        self.selected: int | None = None                        # point index for Delete and the internals view
        self._internals_time = 0.0
        self._syncing = True
        try:
            self.model.options = self._model_options()
            # A session on ORT artifacts (no torch weights) offers only what they were exported for.
            artifacts = isinstance(session.G, ArtifactModel)
            blocks = [session.G.feature_block] if artifacts else range(session.G.num_blocks)
            self.feature_block.options = [(f"{b} ({4 * 2**b} px)", b) for b in blocks]
            self.backend.options = [o for o in BACKEND_OPTIONS if not artifacts or o[1] == session.backend_name]
        finally:
            self._syncing = False
        self._sync_controls()
        left = widgets.VBox([self.canvas, self.status, _row(self.loss_canvas, self.progress, align_items="center"),
                             self.message, self.error], layout=widgets.Layout(width=f"{max(cw, 320)}px"))
        self._internals_box = widgets.VBox([self.internals],
                                           layout=widgets.Layout(display="flex" if self.internals_toggle.value
                                                                 else "none"))
        self.children = [_row(left, self._controls, flex_flow="row wrap"), self._internals_box]
        self._redraw(image=True)
        self._status_idle()

    def _sync_controls(self) -> None:
        """Set every control from the session (without acting on the change)."""
        s, p = self.session, self.session.params
        self._syncing = True
        try:
            self.model.value = self._model_value
            self.backend.value = s.backend_name
            self.seed.value = s.seed
            self.psi.value = s.truncation_psi
            self.latent_space.value = s.latent_space
            for name in PARAM_NAMES:
                getattr(self, name).value = p[name]
        finally:
            self._syncing = False

    def _model_options(self) -> list[tuple[str, str]]:
        """Bundled models that are installed, then the checkpoints in ``models_dir``, then this session's model."""
        opts = [(f"{name} (bundled)", name) for name, path in BUNDLED.items() if path.exists()]
        if self.models_dir.is_dir():
            files = sorted({p for g in CHECKPOINT_GLOBS for p in self.models_dir.glob(g)})
            opts += [(p.name, str(p)) for p in files]
        if self._model_value not in [v for _, v in opts]:
            label = "(this session's model)" if self._model_value == SESSION_MODEL else str(self._model_value)
            opts.insert(0, (label, self._model_value))
        return opts

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

    # ------------------------------------------------------------------ edits

    @property
    def running(self) -> bool:
        """True while Run's worker thread is stepping."""
        return self._running

    def _edit(self, fn: Callable[[], None], image: bool = False, ghost: tuple | None = None) -> None:
        """Apply a session edit now or, while a run's step is in flight, at the next step boundary.

        ``image``: the edit changes the image (seed, reset, undo); ``ghost``: a (handle, target) pair to draw
        dashed until a queued edit is applied.
        """
        with self._queue_lock:
            if self._running:
                self._queued.append((fn, image, ghost))
                queued = True
            else:
                queued = False
        if queued:
            with self._frame():
                self._draw_marks()
            self._say("queued: applied at the next step boundary")
            return
        self._apply([(fn, image, ghost)])

    def _apply(self, edits) -> None:
        error = None
        for fn, _, _ in edits:
            try:
                fn()
            except Exception as e:  # shown below; the other edits still apply
                error = e
        if error is None:
            self._clear_error()
        else:
            self._show_error(error)
        self._redraw(image=any(image for _, image, _ in edits))
        if not self._running:
            self._status_idle()

    def _flush_queue(self) -> None:
        with self._queue_lock:
            edits, self._queued = self._queued, []
        if edits:
            self._apply(edits)

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
        self.mask_layer.clear()
        if self._movable is None or not self.show_mask.value:
            return
        rgba = np.zeros(self._movable.shape + (4,), np.uint8)
        rgba[self._movable] = (120, 220, 255, 70)  # the region allowed to move: tinted
        rgba[~self._movable] = (0, 0, 0, 110)      # the fixed region: darkened
        self.mask_layer.put_image_data(scaled_rgba(rgba, self.map.scale), 0, 0)

    def _draw_marks(self) -> None:
        c, m = self.marks_layer, self.map
        c.clear()
        handles, targets = self.session.handle_points, self.session.target_points
        if len(self._trails) != len(handles):
            self._trails = [[h] for h in handles]
        if self._drag is not None:  # show the point being dragged where the mouse is
            i, part, xy = self._drag
            if i < len(handles):
                (handles if part == "handle" else targets)[i] = xy
        c.line_cap, c.line_join = "round", "round"
        for trail in self._trails:
            if len(trail) > 1:
                c.stroke_style, c.line_width = TRAIL, 2
                c.stroke_lines([m.to_canvas(*p) for p in trail])
        for i, (h, t) in enumerate(zip(handles, targets)):
            self._draw_pair(h, t, selected=i == self.selected)
        with self._queue_lock:
            ghosts = [g for _, _, g in self._queued if g is not None]
        c.set_line_dash([6, 4])
        for h, t in ghosts:
            hx, hy = m.to_canvas(*h)
            tx, ty = m.to_canvas(*t)
            c.stroke_style, c.line_width = ARROW, 2
            c.stroke_line(hx, hy, tx, ty)
            c.stroke_circle(hx, hy, POINT_RADIUS)
            c.stroke_circle(tx, ty, POINT_RADIUS)
        c.set_line_dash([])
        if self._pending is not None:
            x, y = m.to_canvas(*self._pending)
            dot(c, x, y, POINT_RADIUS, HANDLE)
            c.stroke_style, c.line_width = HANDLE, 1.5
            c.stroke_circle(x, y, POINT_RADIUS + 4)

    def _draw_pair(self, h, t, selected: bool) -> None:
        c, m = self.marks_layer, self.map
        (hx, hy), (tx, ty) = m.to_canvas(*h), m.to_canvas(*t)
        arrow(c, hx, hy, tx, ty, ARROW, 2.5, 12)
        if selected:
            c.stroke_style, c.line_width = "yellow", 2
            c.stroke_circle(hx, hy, POINT_RADIUS + 4)
        dot(c, tx, ty, POINT_RADIUS, TARGET)
        dot(c, hx, hy, POINT_RADIUS, HANDLE)

    def _draw_loss(self) -> None:
        """The loss curve of the last steps: total (white) and its lambda * mask part (cyan)."""
        c = self.loss_canvas
        w, h, pad = c.width, c.height, 4
        c.clear()
        c.fill_style = "#1e1e1e"
        c.fill_rect(0, 0, w, h)
        data = self._losses[-LOSS_STEPS:]
        c.font, c.fill_style = "11px sans-serif", "#bbb"
        if len(data) < 2:
            c.fill_text("loss curve: run some steps", 8, h / 2)
            return
        steps = np.array([d[0] for d in data], float)
        vals = np.array([d[1:] for d in data], float)
        top = max(vals.max(), 1e-12)
        xs = pad + (steps - steps[0]) / max(steps[-1] - steps[0], 1) * (w - 2 * pad)
        for col, color in ((0, "white"), (1, "cyan")):
            ys = h - pad - vals[:, col] / top * (h - 2 * pad - 12)
            c.stroke_style, c.line_width = color, 1.5
            c.stroke_lines(np.stack([xs, ys], 1))
        c.fill_style = "#bbb"
        c.fill_text(f"loss (max {top:.3g}), mask part cyan; steps {int(steps[0])}-{int(steps[-1])}", 6, 12)

    def _mask_text(self) -> str:
        if self._movable is None:
            return ""
        return f" &middot; mask: {100 * self._movable.mean():.0f} % movable"

    def _status_idle(self) -> None:
        s = self.session
        n = len(s.target_points)
        self.status.value = (f"<b>step {s.num_steps}</b> &middot; {s.W}x{s.H} px &middot; seed {s.seed} &middot; "
                             f"{n} point pair{'s' * (n != 1)} &middot; {s.backend_name}{self._mask_text()}")

    def _status_step(self, r) -> None:
        # "step N" counts the steps taken since the seed image, in both status lines (StepResult.step + 1).
        lam = self.session.params["lambda_mask"]
        dist = f"{np.mean(r.distance):.2f} px" if r.distance else "-"
        state = "converged" if r.converged else ("running" if self._running else "")
        self.status.value = (
            f"<b>step {r.step + 1}</b> &middot; loss {r.loss:.4g} (motion {r.motion:.4g} + &lambda;&middot;mask "
            f"{lam * r.mask:.4g}) &middot; mean distance {dist} &middot; {r.ms:.0f} ms/step{self._mask_text()}"
            + (f" &middot; <i>{state}</i>" if state else ""))

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
        self._status_step(r)
        if not self._running or time.monotonic() - self._internals_time > INTERNALS_EVERY:
            self._update_internals()

    def step(self):
        """One optimisation step (the Step button); returns the StepResult (None on error or while running)."""
        if self._busy():
            self._say("busy: wait for the current action (or Stop the run)")
            return None
        self._clear_error()
        r = self.session.step()
        self._show_step(r)
        return r

    def run(self, max_steps: int | None = None) -> None:
        """Start stepping in a worker thread until convergence, ``max_steps`` (default: the control) or Stop."""
        if self._busy():
            return
        if not self.session.target_points:
            raise ValueError("add a handle and a target first (click the image twice)")
        self._clear_error()
        self._stop_requested = False
        with self._queue_lock:
            self._running = True
        self._set_busy(True, run=True)
        self._job = threading.Thread(target=self._run_loop, args=(max_steps,), name="dragnb-run", daemon=True)
        self._job.start()

    def stop(self) -> None:
        """Stop a run before its next step (the Stop button; safe from any thread)."""
        self._stop_requested = True
        self.session.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run or long action has finished; False on timeout."""
        job = self._job
        if job is not None:
            job.join(timeout)
            return not job.is_alive()
        return True

    def _run_loop(self, max_steps) -> None:
        failed = converged = False
        try:
            if not self._stop_requested:
                steps = self.session.run(max_steps)
                try:
                    for r in steps:
                        converged = bool(r.converged)
                        self._show_step(r)
                        self._flush_queue()  # the step boundary: the session lock is free until the next step
                        if self._stop_requested or not self.session.target_points:
                            break
                finally:
                    steps.close()
        except Exception as e:  # shown in the widget
            failed = True
            self._show_error(e)
        finally:
            with self._queue_lock:
                self._running = False
            self._flush_queue()
            self._set_busy(False, run=True)
            ended = ("failed" if failed else "stopped" if self._stop_requested
                     else "no points left" if not self.session.target_points
                     else "converged" if converged else "max steps")
            self._say(f"run ended: {ended}")
            self.status.value = self.status.value.replace("<i>running</i>", f"<i>{ended}</i>")  # (or converged)
            self._update_internals()

    def _on_run_button(self) -> None:
        if self._running:
            self.stop()
        else:
            self.run()

    def _busy(self) -> bool:
        return self._job is not None and self._job.is_alive()

    def _set_busy(self, busy: bool, run: bool = False) -> None:
        """Grey out what must not start now; the Run button turns into Stop during a run."""
        for b in (self.step_button, self.model, self.backend, self.load_button, self.save_png_button,
                  self.save_gif_button, self.save_mp4_button, self.save_session_button):
            b.disabled = busy
        if run:
            self.run_button.description, self.run_button.icon = ("Stop", "stop") if busy else ("Run", "play")
            self.run_button.button_style = "warning" if busy else ""
        else:
            self.run_button.disabled = busy

    def _long_action(self, label: str, fn: Callable, done: Callable | None = None) -> None:
        """Run ``fn()`` in a worker thread with the progress bar showing; then ``done(result)`` (same thread)."""
        if self._busy():
            self._say("busy: wait for the current action (or Stop the run)")
            return
        self._clear_error()
        finished = threading.Event()

        def tick():  # fn reports no progress: the bar fills toward 95 % and shows the elapsed time
            t0 = time.monotonic()
            while not finished.wait(0.2):
                t = time.monotonic() - t0
                self.progress.value = 0.95 * (1 - np.exp(-t / 5))
                self.progress.description = f"{t:.0f} s"

        def work():
            threading.Thread(target=tick, daemon=True).start()
            try:
                result = fn()
                if done is not None:
                    done(result)
            except Exception as e:  # shown in the widget
                self._show_error(e)
                self._say(label + " failed")
            finally:
                finished.set()
                self.progress.value = 1
                self.progress.layout.visibility = "hidden"
                self._set_busy(False)

        self.progress.value, self.progress.description = 0, ""
        self.progress.layout.visibility = "visible"
        self._say(label + " ...")
        self._set_busy(True)
        self._job = threading.Thread(target=work, name="dragnb-action", daemon=True)
        self._job.start()

    # ------------------------------------------------------------------ point and mask edits

    def _reset_trails(self) -> None:
        self._trails = [[h] for h in self.session.handle_points]

    def add_point(self, handle, target) -> None:
        """Add a pair, (x, y) image pixels (what two clicks do)."""
        h, t = tuple(handle), tuple(target)

        def add():
            self.selected = self.session.add_point(handle=h, target=t)
            self._trails.append([self.session.handle_points[-1]])

        self._edit(add, ghost=(h, t))

    def move_point(self, i: int, handle=None, target=None) -> None:
        """Move the handle and/or target of pair ``i`` (what dragging a point does)."""
        def move():
            self.session.move_point(i, handle=handle, target=target)
            if handle is not None:
                self._trails[i] = [self.session.handle_points[i]]

        self._edit(move)

    def remove_point(self, i: int) -> None:
        """Delete pair ``i`` (right-click / Alt+click / Delete key)."""
        def remove():
            self.session.remove_point(i)
            del self._trails[i]
            self.selected = None

        self._edit(remove)

    def reset_points(self) -> None:
        """Remove every pair (the Reset points button)."""
        self._pending = None

        def clear():
            self.session.clear_points()
            self._trails, self.selected = [], None

        self._edit(clear)

    def reset_image(self) -> None:
        """Back to the seed image, handles where they were placed (the Reset image button; undoable)."""
        def reset():
            self.session.reset()
            self._reset_trails()
            self._losses.clear()

        self._edit(reset, image=True)

    def undo(self) -> None:
        """Back to before the last drag (the Undo drag button)."""
        def undo():
            if not self.session.undo():
                raise ValueError("nothing to undo")
            self._reset_trails()
            mask = self.session.mask
            self._movable = None if mask is None else ~mask

        self._edit(undo, image=True)

    def set_mask(self, movable: np.ndarray | None) -> None:
        """Set the painted region: bool [H, W], True = allowed to move (the session keeps the rest fixed)."""
        self._movable = None if movable is None or not np.any(movable) else np.asarray(movable, bool).copy()
        fixed = None if self._movable is None else ~self._movable
        self._edit(self.session.clear_mask if fixed is None else (lambda: self.session.set_mask(fixed)))

    def clear_mask(self) -> None:
        """No mask (the Clear mask button)."""
        self.set_mask(None)

    # ------------------------------------------------------------------ mouse and keys

    def _event_xy(self, ev: dict) -> tuple[float, float]:
        """ipyevents reports CSS pixels relative to the element: scale them to canvas pixels."""
        sx = self.canvas.width / ev["boundingRectWidth"] if ev.get("boundingRectWidth") else 1.0
        sy = self.canvas.height / ev["boundingRectHeight"] if ev.get("boundingRectHeight") else 1.0
        return float(ev["relativeX"]) * sx, float(ev["relativeY"]) * sy

    def _hit(self, cx: float, cy: float) -> tuple[int, str] | None:
        """(pair index, "handle" | "target") of the point nearest canvas (cx, cy) within HIT_RADIUS, else None."""
        best, best_d = None, HIT_RADIUS
        for part, pts in (("target", self.session.target_points), ("handle", self.session.handle_points)):
            for i, p in enumerate(pts):
                x, y = self.map.to_canvas(*p)
                d = np.hypot(x - cx, y - cy)
                if d <= best_d:
                    best, best_d = (i, part), d
        return best

    def _on_mouse(self, ev: dict) -> None:
        kind = ev.get("type")
        if "relativeX" not in ev:
            return
        cx, cy = self._event_xy(ev)
        px = self.map.pixel(cx, cy, self.session.W, self.session.H)
        if kind == "mousedown":
            if ev.get("button", 0) == 2 or ev.get("altKey"):
                self._delete_at(cx, cy)
            elif ev.get("button", 0) == 0:
                self._press(cx, cy, px, erase=bool(ev.get("shiftKey")))
        elif kind == "mousemove":
            if ev.get("buttons", 1) == 0 and (self._drag is not None or self._stroke is not None):
                self._release(None)  # the button came up outside the canvas
            elif self._stroke is not None:
                self._paint(px)
            elif self._drag is not None and tuple(self._drag[2]) != px:
                self._drag[2] = px
                with self._frame():
                    self._draw_marks()
        elif kind == "mouseup":
            self._release(px)
        elif kind == "mouseleave":
            self._release(None)

    def _press(self, cx, cy, px, erase: bool) -> None:
        self._clear_error()
        if self.mode.value == "mask":
            self._stroke, self._last_paint = not erase, None
            self._paint(px)
            return
        hit = None if self._pending is not None else self._hit(cx, cy)
        if hit is not None:
            i, part = hit
            self.selected = i
            self._drag = [i, part, px]
            with self._frame():
                self._draw_marks()
            self._update_internals()
        elif self._pending is None:
            self._pending = px
            with self._frame():
                self._draw_marks()
            self._say(f"handle at {px}: now click its target")
        elif px == self._pending:
            self._say("the target must differ from the handle: click elsewhere")
        else:
            h, self._pending = self._pending, None
            self.add_point(h, px)

    def _release(self, px) -> None:
        if self._stroke is not None:
            if px is not None:
                self._paint(px)
            self._stroke = None
            self.set_mask(self._movable)
        if self._drag is not None:
            i, part, xy = self._drag
            self._drag = None
            xy = px if px is not None else xy
            old = (self.session.handle_points if part == "handle" else self.session.target_points)[i]
            if tuple(old) != tuple(float(v) for v in xy):
                self.move_point(i, **{part: xy})
            else:
                with self._frame():
                    self._draw_marks()

    def _paint(self, px) -> None:
        """Stamp the brush (radius in image pixels) from the last stamp to ``px``; draw the overlay."""
        H, W = self.session.H, self.session.W
        if self._movable is None:
            self._movable = np.zeros((H, W), bool)
        r = self.brush.value
        a = np.array(self._last_paint if self._last_paint is not None else px, float)
        b = np.array(px, float)
        for t in np.linspace(0, 1, max(2, int(np.hypot(*(b - a)) / max(r / 2, 1)) + 2)):
            cx, cy = a + (b - a) * t
            x0, x1, y0, y1 = max(int(cx - r), 0), min(int(cx + r) + 1, W), max(int(cy - r), 0), min(int(cy + r) + 1, H)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            self._movable[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = self._stroke
        self._last_paint = px
        with self._frame():
            self._draw_mask()

    def _delete_at(self, cx, cy) -> None:
        hit = self._hit(cx, cy)
        if hit is not None:
            self.remove_point(hit[0])
        elif self._pending is not None:
            self._pending = None
            with self._frame():
                self._draw_marks()

    def _on_key(self, key, shift, ctrl, meta) -> None:
        if key == "Escape" and self._pending is not None:
            self._pending = None
            with self._frame():
                self._draw_marks()
        elif key in ("Delete", "Backspace") and self.selected is not None:
            self.remove_point(self.selected)
        elif key in ("z", "Z") and (ctrl or meta):
            self.undo()

    # ------------------------------------------------------------------ controls

    def _new_image(self, seed: int, psi: float | None = None) -> None:
        """A new seed image (seed or truncation psi changed): the session clears points and mask, so does the widget."""
        def new_image():
            self.session.set_seed(seed, truncation_psi=psi)
            self._movable, self._pending, self.selected = None, None, None
            self._reset_trails()
            self._losses.clear()

        self._edit(new_image, image=True)

    def _on_seed(self, change) -> None:
        if not self._syncing:
            self._new_image(int(change["new"]))

    def _on_random_seed(self) -> None:
        self.seed.value = random.randrange(2**31)

    def _on_psi(self, change) -> None:
        if not self._syncing:
            self._new_image(self.session.seed, float(change["new"]))

    def _on_latent_space(self, change) -> None:
        if not self._syncing:
            space = change["new"]
            self._edit(lambda: self.session.set_latent_space(space))

    def _on_param(self, name: str, change) -> None:
        if self._syncing or change["new"] is None:
            return
        value = change["new"]

        def set_param():
            try:
                self.session.set_params(**{name: value})
            finally:
                self._sync_controls()  # a refused value snaps back to the one in force

        self._edit(set_param)

    def _on_backend(self, change) -> None:
        if self._syncing:
            return
        name = change["new"]

        def switch():
            try:
                self.session.set_backend(name)
            finally:  # on failure the dropdown snaps back to the back-end in force
                self._sync_controls()
                self._status_idle()

        label = "preparing ONNX Runtime (exports training artifacts on first use)" if name == "ort" else "back-end"
        self._long_action(label, switch, lambda _r: self._say(f"back-end: {name}"))

    def _on_model(self, change) -> None:
        if self._syncing or change["new"] == SESSION_MODEL:
            return
        value, s = change["new"], self.session
        keep = {k: s.params[k] for k in ("lr", "lambda_mask", "max_steps")}

        def load():
            try:
                return DragSession(model=value, seed=s.seed, truncation_psi=s.truncation_psi,
                                   backend=s.backend_name, latent_space=s.latent_space, **keep)
            except Exception:
                self._sync_controls()  # the dropdown snaps back to the model in use
                raise

        def done(new):
            self._model_value = value
            self._attach(new)
            self._say(f"model: {value}")

        self._long_action(f"loading {value}", load, done)

    def _on_internals_toggle(self, change) -> None:
        self._internals_box.layout.display = "flex" if change["new"] else "none"
        self._update_internals()

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
                                    p["r1"], p["r2"], p["l1_tracking"])
        finally:
            self._in_internals = False

    # ------------------------------------------------------------------ files

    def _stem(self) -> Path:
        stem = Path(self.save_path.value).expanduser()
        stem.parent.mkdir(parents=True, exist_ok=True)
        return stem

    def save_png(self) -> Path:
        """The current image as ``<save as>.png`` (no overlays)."""
        self._clear_error()
        path = self.session.export_png(self._stem().with_suffix(".png"))
        self._say(f"saved {path}")
        return path

    def _video_size(self) -> int:
        """Longer side of exported videos: the canvas size, or the image's when that is larger."""
        return max(self.display_size, self.session.H, self.session.W)

    def save_gif(self) -> None:
        """The recorded steps as ``<save as>.gif`` with overlays, at canvas size (in the background)."""
        path = self._stem().with_suffix(".gif")
        self._long_action(f"writing {path}", lambda: self.session.export_gif(path, size=self._video_size()),
                          lambda p: self._say(f"saved {p}"))

    def save_mp4(self) -> None:
        """The recorded steps as ``<save as>.mp4`` with overlays, at canvas size (in the background)."""
        path = self._stem().with_suffix(".mp4")
        self._long_action(f"writing {path}", lambda: self.session.export_mp4(path, size=self._video_size()),
                          lambda p: self._say(f"saved {p}"))

    def save_session(self) -> Path:
        """The session (points, mask, latents, optimizer state, history) as the folder ``<save as>_session``."""
        self._clear_error()
        stem = self._stem()
        folder = stem.with_name(stem.name + "_session")
        self.session.save(folder)
        self.load_path.value = str(folder)
        self._say(f"saved session {folder}")
        return folder

    def load_session(self) -> None:
        """Replace the session by the one saved at the ``session`` path (in the background)."""
        path = Path(self.load_path.value).expanduser()

        def done(new):
            self._model_value = SESSION_MODEL
            self._attach(new)
            self._say(f"loaded session {path}")

        self._long_action(f"loading session {path}", lambda: DragSession.load(path), done)
