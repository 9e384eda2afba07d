"""Mouse and keys on the workbench canvas, turned into edits of its session.

Mouse (via ipyevents, which reports buttons and modifier keys). Points mode: a click places a handle, the
next its target; dragging a point moves it; right-click or Alt+click on a point deletes its pair. Mask mode:
the brush paints the region allowed to move, Shift+drag erases. Keys, once the canvas has focus: Escape
drops a half-placed pair, Delete/Backspace deletes the selected pair, Ctrl/Cmd+Z undoes the last drag.
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
        self.last_paint: tuple[int, int] | None = None

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
        """An ipyevents mouse message."""
        kind = ev.get("type")
        if "relativeX" not in ev:
            return
        cx, cy = self._event_xy(ev)
        px = self.wb.map.pixel(cx, cy, self.wb.session.W, self.wb.session.H)
        if kind == "mousedown":
            if ev.get("button", 0) == 2 or ev.get("altKey"):
                self._delete_at(cx, cy)
            elif ev.get("button", 0) == 0:
                self._press(cx, cy, px, erase=bool(ev.get("shiftKey")))
        elif kind == "mousemove":
            if ev.get("buttons", 1) == 0 and (self.drag is not None or self.stroke is not None):
                self._release(None)  # the button came up outside the canvas
            elif self.stroke is not None:
                self._paint(px)
            elif self.drag is not None and tuple(self.drag[2]) != px:
                self.drag[2] = px
                self._redraw_marks()
        elif kind == "mouseup":
            self._release(px)
        elif kind == "mouseleave":
            self._release(None)

    def _press(self, cx, cy, px, erase: bool) -> None:
        wb = self.wb
        wb._clear_error()
        if wb.mode.value == "mask":
            self.stroke, self.last_paint = not erase, None
            self._paint(px)
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

    def _release(self, px) -> None:
        wb = self.wb
        if self.stroke is not None:
            if px is not None:
                self._paint(px)
            self.stroke = None
            wb.set_mask(wb._movable)
        if self.drag is not None:
            i, part, xy = self.drag
            self.drag = None
            xy = px if px is not None else xy
            old = (wb.session.handle_points if part == "handle" else wb.session.target_points)[i]
            if tuple(old) != tuple(float(v) for v in xy):
                wb.move_point(i, **{part: xy})
            else:
                self._redraw_marks()

    def _paint(self, px) -> None:
        """Stamp the brush (radius in image pixels) from the last stamp to ``px``; draw the overlay."""
        wb = self.wb
        H, W = wb.session.H, wb.session.W
        if wb._movable is None:
            wb._movable = np.zeros((H, W), bool)
        r = wb.brush.value
        a = np.array(self.last_paint if self.last_paint is not None else px, float)
        b = np.array(px, float)
        for t in np.linspace(0, 1, max(2, int(np.hypot(*(b - a)) / max(r / 2, 1)) + 2)):
            cx, cy = a + (b - a) * t
            x0, x1, y0, y1 = max(int(cx - r), 0), min(int(cx + r) + 1, W), max(int(cy - r), 0), min(int(cy + r) + 1, H)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            wb._movable[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = self.stroke
        self.last_paint = px
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
        """An ipycanvas key-down event."""
        if key == "Escape" and self.pending is not None:
            self.pending = None
            self.wb._say("")
            self._redraw_marks()
        elif key in ("Delete", "Backspace") and self.wb.selected is not None:
            self.wb.remove_point(self.wb.selected)
        elif key in ("z", "Z") and (ctrl or meta):
            self.wb.undo()
