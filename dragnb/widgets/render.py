"""What the workbench shows, drawn from plain data: its mask and marks layers, the loss curve, the status line.

The ``draw_*`` functions draw on an ipycanvas ``Canvas`` in canvas pixels and must run inside the caller's
``hold_canvas()`` (one message per frame); the ``status_*`` functions return the status line's HTML.
Points are ``(x, y)`` image pixels, placed on the canvas by a :class:`~dragnb.widgets.drawing.CanvasMap`.
"""

from __future__ import annotations

import numpy as np

from .drawing import ARROW, HANDLE, TARGET, TRAIL, CanvasMap, arrow, dot, put_image

POINT_RADIUS = 6  # canvas pixels
LOSS_STEPS = 300  # steps shown in the loss curve


MOVABLE_TINT = (120, 220, 255, 70)   # the region allowed to move
FIXED_SHADE = (0, 0, 0, 110)         # the region kept fixed
EDGE = (120, 220, 255, 255)          # the movable region's outline: solid


def mask_rgba(movable: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 4] overlay of bool [H, W] ``movable``: tinted, the fixed rest darkened, and a solid
    one-pixel outline on the movable side of the border between them."""
    rgba = np.zeros(movable.shape + (4,), np.uint8)
    rgba[movable] = MOVABLE_TINT
    rgba[~movable] = FIXED_SHADE
    pad = np.pad(movable, 1, mode="edge")
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]  # 4-neighbours all movable
    rgba[movable & ~inner] = EDGE
    return rgba


def draw_mask(layer, movable: np.ndarray | None, scale: float) -> None:
    """The mask overlay of bool [H, W] ``movable`` (:func:`mask_rgba`); nothing for None."""
    layer.clear()
    if movable is None:
        return
    put_image(layer, mask_rgba(movable), scale)


def draw_marks(c, m: CanvasMap, handles, targets, trails, selected: int | None, ghosts, pending,
               brush=None) -> None:
    """Handle trails, the point pairs (``selected`` ringed), queued pairs ``ghosts`` (dashed), a ``pending``
    handle still waiting for its target (None: none) and the ``brush`` preview (canvas x, y, radius; None:
    none)."""
    c.clear()
    c.line_cap, c.line_join = "round", "round"
    for trail in trails:
        if len(trail) > 1:
            c.stroke_style, c.line_width = TRAIL, 2
            c.stroke_lines([m.to_canvas(*p) for p in trail])
    for i, (h, t) in enumerate(zip(handles, targets)):
        draw_pair(c, m, h, t, selected=i == selected)
    c.set_line_dash([6, 4])
    for h, t in ghosts:
        hx, hy = m.to_canvas(*h)
        tx, ty = m.to_canvas(*t)
        c.stroke_style, c.line_width = ARROW, 2
        c.stroke_line(hx, hy, tx, ty)
        c.stroke_circle(hx, hy, POINT_RADIUS)
        c.stroke_circle(tx, ty, POINT_RADIUS)
    c.set_line_dash([])
    if pending is not None:
        x, y = m.to_canvas(*pending)
        dot(c, x, y, POINT_RADIUS, HANDLE)
        c.stroke_style, c.line_width = HANDLE, 1.5
        c.stroke_circle(x, y, POINT_RADIUS + 4)
    if brush is not None:  # dark under light: visible on any image
        x, y, r = brush
        c.stroke_style, c.line_width = "rgba(0,0,0,0.7)", 3
        c.stroke_circle(x, y, r)
        c.stroke_style, c.line_width = "white", 1.5
        c.stroke_circle(x, y, r)


def draw_pair(c, m: CanvasMap, h, t, selected: bool) -> None:
    """One pair: the arrow from handle ``h`` to target ``t``, then the target (blue) and the handle (red)."""
    (hx, hy), (tx, ty) = m.to_canvas(*h), m.to_canvas(*t)
    arrow(c, hx, hy, tx, ty, ARROW, 2.5, 12)
    if selected:
        c.stroke_style, c.line_width = "yellow", 2
        c.stroke_circle(hx, hy, POINT_RADIUS + 4)
    dot(c, tx, ty, POINT_RADIUS, TARGET)
    dot(c, hx, hy, POINT_RADIUS, HANDLE)


def draw_loss(c, losses) -> None:
    """The loss curve of the last steps, from ``losses`` [(step, loss, lambda * mask, ...)]: total (white) and its
    lambda * mask part (cyan)."""
    w, h, pad = c.width, c.height, 4
    c.clear()
    c.fill_style = "#1e1e1e"
    c.fill_rect(0, 0, w, h)
    data = losses[-LOSS_STEPS:]
    c.font, c.fill_style = "11px sans-serif", "#bbb"
    if len(data) < 2:
        c.fill_text("loss curve: run some steps", 8, h / 2)
        return
    steps = np.array([d[0] for d in data], float)
    vals = np.array([d[1:3] for d in data], float)
    top = max(vals.max(), 1e-12)
    xs = pad + (steps - steps[0]) / max(steps[-1] - steps[0], 1) * (w - 2 * pad)
    for col, color in ((0, "white"), (1, "cyan")):
        ys = h - pad - vals[:, col] / top * (h - 2 * pad - 12)
        c.stroke_style, c.line_width = color, 1.5
        c.stroke_lines(np.stack([xs, ys], 1))
    c.fill_style = "#bbb"
    c.fill_text(f"loss (max {top:.3g}), mask part cyan; steps {int(steps[0])}-{int(steps[-1])}", 6, 12)


def _mask_text(movable: np.ndarray | None, compat: str = "dragnb") -> str:
    if movable is None:
        return ""
    if compat == "blog":  # the blog sample's loss has no mask term: say so rather than let a painted mask mislead
        return " &middot; mask ignored (blog mode has no mask term)"
    return f" &middot; mask: {100 * movable.mean():.0f} % movable"


# The status area is two lines that never wrap (a long line is cut with an ellipsis), in a box of fixed height:
# what is below it (the loss curve) stays put while the text changes during a run.
STATUS_STYLE = "white-space:nowrap; overflow:hidden; text-overflow:ellipsis; line-height:20px"
STATUS_HEIGHT = "42px"


def _lines(first: str, second: str) -> str:
    return f"<div style='{STATUS_STYLE}'>{first}</div><div style='{STATUS_STYLE}; color:#555'>{second}</div>"


def _about(s, movable: np.ndarray | None) -> str:
    return (f"{s.W}x{s.H} px &middot; seed {s.seed} &middot; {s.backend_name}"
            f"{_mask_text(movable, s.params['compat'])}")


def _speed(pace: Pace | None) -> str:
    if pace is None or pace.compute_ms is None:
        return ""
    rate = "" if pace.steps_per_s is None else f" &middot; {pace.steps_per_s:.1f} steps/s"
    return f"compute {pace.compute_ms:.0f} ms/step{rate} &middot; "


def _loss_text(loss) -> str:
    """``loss``: (loss, lambda * mask, motion) of the last step that updated the latent, or None."""
    if loss is None:
        return "loss -"
    total, masked, motion = loss
    return f"loss {total:.4g} (motion {motion:.4g} + &lambda;&middot;mask {masked:.4g})"


def status_idle(s, movable: np.ndarray | None, pace: Pace | None = None, state: str = "") -> str:
    """The status line between steps, for session ``s``."""
    n = len(s.target_points)
    first = f"<b>step {s.num_steps}</b> &middot; {n} point pair{'s' * (n != 1)}"
    return _lines(first + (f" &middot; <i>{state}</i>" if state else ""), _speed(pace) + _about(s, movable))


def status_preparing(s, running: bool) -> str:
    """The status line while the first step after an edit computes F0 (``DragSession.needs_f0``)."""
    return (f"<b>step {s.num_steps + 1}</b> &middot; starting the drag: F0, the features of the current image "
            f"(one generator pass more than a later step) &middot; {s.W}x{s.H} px, {s.backend_name}"
            + (" &middot; <i>running</i>" if running else ""))


def status_step(s, r, last_loss, state: str, movable: np.ndarray | None, pace: Pace | None = None) -> str:
    """The status line after the step of StepResult ``r`` of session ``s``, in ``state`` ("running",
    "converged", ...: shown in italics; "" none). ``last_loss``: (loss, lambda * mask, motion) of the last step
    that updated the latent, or None: a converged step makes no update, so its losses are no loss of the drag."""
    # "step N" counts the steps taken since the seed image, in both status lines (StepResult.step + 1).
    dist = f"{np.mean(r.distance):.2f} px" if r.distance else "-"
    first = (f"<b>step {r.step + 1}</b> &middot; {_loss_text(last_loss)} &middot; distance {dist}"
             + (f" &middot; <i>{state}</i>" if state else ""))
    return _lines(first, _speed(pace) + _about(s, movable))


class Pace:
    """Frame pacing and speed of a workbench: which steps of a run are drawn, and steps/s on the wall clock.

    A frame (image, marks, loss curve, status) costs the kernel time and the browser more; when steps come
    faster than frames can be shown, drawing every step would slow the drag to the display's pace. A run's
    step is drawn when at least :attr:`gap` has passed since the last frame was drawn: ``MIN_GAP`` (a frame
    rate the eye takes as smooth), or longer when frames are expensive, so drawing keeps to about
    ``SHARE`` of the run's time. The last step of a run is always drawn (:meth:`pending`).
    """

    MIN_GAP = 1 / 15  # seconds
    SHARE = 0.1       # of the wall clock spent drawing, at most (about)
    WINDOW = 30       # steps over which steps/s and the compute time are averaged

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._times: list[float] = []      # wall-clock time each recent step was shown to the widget
        self._ms: list[float] = []         # back-end ms of those steps
        self.last_frame = -1e9             # when the last frame was drawn (time.monotonic())
        self.frame_cost = 0.0              # seconds the last frame took to draw
        self.undrawn = None                # the latest step result not drawn yet

    def record(self, now: float, ms: float, timed: bool = True) -> None:
        """A step finished at ``now`` (time.monotonic()), its back-end took ``ms`` milliseconds; ``timed``: it
        belongs to a run (steps/s is a run's pace: single steps come at the pace of clicks)."""
        self._times = (self._times + [now])[-self.WINDOW:] if timed else []
        self._ms = (self._ms + [ms])[-self.WINDOW:]

    @property
    def gap(self) -> float:
        return max(self.MIN_GAP, self.frame_cost / self.SHARE)

    def due(self, now: float) -> bool:
        return now - self.last_frame >= self.gap

    def drawn(self, start: float, end: float) -> None:
        """A frame was drawn from ``start`` to ``end`` (time.monotonic())."""
        self.last_frame, self.frame_cost, self.undrawn = end, end - start, None

    @property
    def compute_ms(self) -> float | None:
        """Mean back-end time of the recent steps, ms."""
        return float(np.mean(self._ms)) if self._ms else None

    @property
    def steps_per_s(self) -> float | None:
        """Steps per second on the wall clock over the recent steps (None below 3 steps)."""
        t = self._times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 3 and t[-1] > t[0] else None


def error_text(e: BaseException) -> str:
    """What an error says to a person: the message of one the user can act on (a refused value, a missing
    file, a broken checkpoint), as a sentence; anything else names its type (a bug to report)."""
    if isinstance(e, FileNotFoundError):
        return f"There is nothing at {e.filename}." if e.filename else _sentence(str(e))
    if isinstance(e, PermissionError):
        return f"Not allowed to use {e.filename}." if e.filename else _sentence(str(e))
    if isinstance(e, ImportError):
        return _sentence(f"This needs a package that is not installed ({e})")
    if isinstance(e, (ValueError, TypeError, OSError)):
        return _sentence(str(e))
    return f"Something went wrong ({type(e).__name__}: {e})."


def _sentence(text: str) -> str:
    text = text.strip() or "unknown error"
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")
