"""What the workbench shows, drawn from plain data: its mask and marks layers, the loss curve, the status line.

The ``draw_*`` functions draw on an ipycanvas ``Canvas`` in canvas pixels and must run inside the caller's
``hold_canvas()`` (one message per frame); the ``status_*`` functions return the status line's HTML.
Points are ``(x, y)`` image pixels, placed on the canvas by a :class:`~dragnb.widgets.drawing.CanvasMap`.
"""

from __future__ import annotations

import numpy as np

from .drawing import ARROW, HANDLE, TARGET, TRAIL, CanvasMap, arrow, dot, scaled_rgba

POINT_RADIUS = 6  # canvas pixels
LOSS_STEPS = 300  # steps shown in the loss curve


def draw_mask(layer, movable: np.ndarray | None, scale: float) -> None:
    """The mask overlay: the region allowed to move (bool [H, W] ``movable``) tinted, the fixed rest darkened;
    nothing for None."""
    layer.clear()
    if movable is None:
        return
    rgba = np.zeros(movable.shape + (4,), np.uint8)
    rgba[movable] = (120, 220, 255, 70)  # the region allowed to move: tinted
    rgba[~movable] = (0, 0, 0, 110)      # the fixed region: darkened
    layer.put_image_data(scaled_rgba(rgba, scale), 0, 0)


def draw_marks(c, m: CanvasMap, handles, targets, trails, selected: int | None, ghosts, pending) -> None:
    """Handle trails, the point pairs (``selected`` ringed), queued pairs ``ghosts`` (dashed) and a ``pending``
    handle still waiting for its target (None: none)."""
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
    """The loss curve of the last steps, from ``losses`` [(step, loss, lambda * mask)]: total (white) and its
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
    vals = np.array([d[1:] for d in data], float)
    top = max(vals.max(), 1e-12)
    xs = pad + (steps - steps[0]) / max(steps[-1] - steps[0], 1) * (w - 2 * pad)
    for col, color in ((0, "white"), (1, "cyan")):
        ys = h - pad - vals[:, col] / top * (h - 2 * pad - 12)
        c.stroke_style, c.line_width = color, 1.5
        c.stroke_lines(np.stack([xs, ys], 1))
    c.fill_style = "#bbb"
    c.fill_text(f"loss (max {top:.3g}), mask part cyan; steps {int(steps[0])}-{int(steps[-1])}", 6, 12)


def _mask_text(movable: np.ndarray | None) -> str:
    if movable is None:
        return ""
    return f" &middot; mask: {100 * movable.mean():.0f} % movable"


def status_idle(s, movable: np.ndarray | None) -> str:
    """The status line between steps, for session ``s``."""
    n = len(s.target_points)
    return (f"<b>step {s.num_steps}</b> &middot; {s.W}x{s.H} px &middot; seed {s.seed} &middot; "
            f"{n} point pair{'s' * (n != 1)} &middot; {s.backend_name}{_mask_text(movable)}")


def status_preparing(s, running: bool) -> str:
    """The status line while the first step after an edit computes F0 (``DragSession.needs_f0``)."""
    return (f"<b>step {s.num_steps + 1}</b> &middot; starting the drag: F0, the features of the current image "
            f"(one generator pass more than a later step) &middot; {s.W}x{s.H} px, {s.backend_name}"
            + (" &middot; <i>running</i>" if running else ""))


def status_step(r, lambda_mask: float, running: bool, movable: np.ndarray | None) -> str:
    """The status line after the step of StepResult ``r``."""
    # "step N" counts the steps taken since the seed image, in both status lines (StepResult.step + 1).
    dist = f"{np.mean(r.distance):.2f} px" if r.distance else "-"
    state = "converged" if r.converged else ("running" if running else "")
    return (f"<b>step {r.step + 1}</b> &middot; loss {r.loss:.4g} (motion {r.motion:.4g} + &lambda;&middot;mask "
            f"{lambda_mask * r.mask:.4g}) &middot; mean distance {dist} &middot; {r.ms:.0f} ms/step"
            f"{_mask_text(movable)}" + (f" &middot; <i>{state}</i>" if state else ""))
