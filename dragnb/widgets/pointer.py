"""Mouse and keys on the workbench canvas, turned into edits of its session.

Mouse (via ipyevents, which reports buttons and modifier keys). Points mode: a click places a handle, the
next its target; dragging a point moves it; right-click or Alt+click on a point deletes its pair. Mask mode:
the brush (its circle follows the cursor) paints the region chosen by the Movable / Fixed toggle, Shift+drag
the other one. Keys, while the mouse is over the canvas (no click needed): S steps, Space or R runs / stops,
U or Ctrl/Cmd+Z undoes the last drag, Escape drops a half-placed pair, Delete/Backspace deletes the selected
pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .workbench import Workbench

HIT_RADIUS = 10  # canvas pixels: how close a click must be to grab or delete a point


class Pointer:
    """The gesture in progress on a workbench's canvas, and the event handlers that turn gestures into the
    workbench's edits (``add_point``, ``move_point``, ``remove_point``, ``set_mask``, ``undo``)."""

    def __init__(self, wb: Workbench):
        self.wb = wb
        self.reset()

    def reset(self) -> None:
        """No gesture in progress (a new image, or a new session)."""
        self.pending: tuple[int, int] | None = None  # a handle waiting for its target
        self.drag: list | None = None                 # [index, "handle" | "target", (x, y)]
        self.stroke: bool | None = None               # brush value while painting (False = erasing)
        self.last_paint: tuple[float, float] | None = None
        self.hover: tuple[float, float] | None = None  # canvas (x, y) of the brush preview (mask mode)

    def _redraw_marks(self) -> None:
        with self.wb._frame():
            self.wb._draw_marks()

    def _event_xy(self, ev: dict) -> tuple[float, float]:
        """ipyevents reports CSS pixels relative to the element: scale them to canvas pixels."""
        canvas = self.wb.canvas
        sx = canvas.width / ev["boundingRectWidth"] if ev.get("boundingRectWidth") else 1.0
        sy = canvas.height / ev["boundingRectHeight"] if ev.get("boundingRectHeight") else 1.0
        return float(ev["relativeX"]) * sx, float(ev["relativeY"]) * sy

    def _hit(self, cx: float, cy: float) -> tuple[int, str] | None:
        """(pair index, "handle" | "target") of the point nearest canvas (cx, cy) within HIT_RADIUS, else None."""
        s, m = self.wb.session, self.wb.map
        best, best_d = None, HIT_RADIUS
        for part, pts in (("target", s.target_points), ("handle", s.handle_points)):
            for i, p in enumerate(pts):
                x, y = m.to_canvas(*p)
                d = np.hypot(x - cx, y - cy)
                if d <= best_d:
                    best, best_d = (i, part), d
        return best

    def on_mouse(self, ev: dict) -> None:
        """An ipyevents mouse or key message."""
        self.wb._events_seen = True
        kind = ev.get("type")
        if kind == "keydown":
            self.on_key(ev.get("key", ""), bool(ev.get("shiftKey")), bool(ev.get("ctrlKey")), bool(ev.get("metaKey")))
            return
        if "relativeX" not in ev:
            return
        cx, cy = self._event_xy(ev)
        px = self.wb.map.pixel(cx, cy, self.wb.session.W, self.wb.session.H)
        at = self.wb.map.to_image(cx, cy)  # fractional image (x, y): the brush follows the cursor exactly
        if kind == "mousedown":
            if ev.get("button", 0) == 2 or ev.get("altKey"):
                self._delete_at(cx, cy)
            elif ev.get("button", 0) == 0:
                self._press(cx, cy, px, at, other=bool(ev.get("shiftKey")))
        elif kind == "mousemove":
            if ev.get("buttons", 1) == 0 and (self.drag is not None or self.stroke is not None):
                self._release(None)  # the button came up outside the canvas
            elif self.stroke is not None:
                self._paint(at)
            elif self.drag is not None and tuple(self.drag[2]) != px:
                self.drag[2] = px
                self._redraw_marks()
            if self.wb.mode.value == "mask":
                self.hover = (cx, cy)
                self._redraw_marks()
        elif kind == "mouseup":
            self._release(at)
        elif kind == "mouseleave":
            self._release(None)
            if self.hover is not None:
                self.hover = None
                self._redraw_marks()

    def _press(self, cx, cy, px, at, other: bool) -> None:
        wb = self.wb
        wb._clear_error()
        if wb.mode.value == "mask":  # paint the chosen region; Shift paints the other one
            self.stroke, self.last_paint = (wb.paint.value == "movable") != other, None
            self._paint(at)
            return
        hit = None if self.pending is not None else self._hit(cx, cy)
        if hit is not None:
            i, part = hit
            wb.selected = i
            self.drag = [i, part, px]
            self._redraw_marks()
            wb._update_internals()
        elif self.pending is None:
            self.pending = px
            self._redraw_marks()
            wb._say(f"Handle at {px}: now click where it should go (Escape drops it).")
        elif px == self.pending:
            wb._say("The target must differ from the handle: click elsewhere.")
        else:
            h, self.pending = self.pending, None
            wb.add_point(h, px)

    def _release(self, at) -> None:
        wb = self.wb
        if self.stroke is not None:
            if at is not None:
                self._paint(at)
            self.stroke = None
            wb.set_mask(wb._movable)
        if self.drag is not None:
            i, part, xy = self.drag
            self.drag = None
            if at is not None:
                xy = wb.map.pixel(*wb.map.to_canvas(*at), wb.session.W, wb.session.H)
            old = (wb.session.handle_points if part == "handle" else wb.session.target_points)[i]
            if tuple(old) != tuple(float(v) for v in xy):
                wb.move_point(i, **{part: xy})
            else:
                self._redraw_marks()

    def _paint(self, at) -> None:
        """Paint the brush (radius in image pixels) along the segment from the last position to ``at``
        (fractional image (x, y)): every pixel whose centre lies within the radius of it - a continuous
        stroke with round ends, however fast the mouse moves. Draws the overlay."""
        wb = self.wb
        H, W = wb.session.H, wb.session.W
        if wb._movable is None:
            wb._movable = np.zeros((H, W), bool)
        r = wb.brush.value
        a = np.array(self.last_paint if self.last_paint is not None else at, float)
        b = np.array(at, float)
        x0, x1 = max(int(np.floor(min(a[0], b[0]) - r)), 0), min(int(np.ceil(max(a[0], b[0]) + r)) + 1, W)
        y0, y1 = max(int(np.floor(min(a[1], b[1]) - r)), 0), min(int(np.ceil(max(a[1], b[1]) + r)) + 1, H)
        if x0 < x1 and y0 < y1:
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
            d = b - a
            t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
            inside = (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2 <= r * r
            wb._movable[y0:y1, x0:x1][inside] = self.stroke
        self.last_paint = (float(b[0]), float(b[1]))
        with wb._frame():
            wb._draw_mask()

    def _delete_at(self, cx, cy) -> None:
        hit = self._hit(cx, cy)
        if hit is not None:
            self.wb.remove_point(hit[0])
        elif self.pending is not None:
            self.pending = None
            self.wb._say("")
            self._redraw_marks()

    def on_key(self, key, shift, ctrl, meta) -> None:
        """A key pressed while the mouse is over the canvas (ipyevents: no click, so no point, is needed)."""
        wb = self.wb
        if ctrl or meta:
            if key in ("z", "Z"):
                wb.undo()
            return  # the browser's own Ctrl/Cmd shortcuts are not the workbench's
        if key in ("s", "S"):
            wb.step()
        elif key in (" ", "r", "R"):
            wb.stop() if wb.running else wb.run()
        elif key in ("u", "U"):
            wb.undo()
        elif key == "Escape" and self.pending is not None:
            self.pending = None
            self.wb._say("")
            self._redraw_marks()
        elif key in ("Delete", "Backspace") and self.wb.selected is not None:
            self.wb.remove_point(self.wb.selected)
