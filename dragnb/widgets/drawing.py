"""Canvas helpers shared by the workbench and its internals view.

:class:`CanvasMap` is the ONE conversion between canvas pixels and image pixels in the widgets. Image
points are ``(x, y)`` image pixels with pixel centres at integers (``docs/architecture.md``); image pixel
``(x, y)`` covers the canvas square ``[ox + x s, ox + (x + 1) s) x [oy + y s, oy + (y + 1) s)``, so its
centre is at ``(ox + (x + 0.5) s, oy + (y + 0.5) s)`` for a scale ``s`` (canvas pixels per image pixel).

Everything else here draws on an ipycanvas ``Canvas`` in canvas pixels and must run inside the caller's
``hold_canvas()`` (one message per frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..drag.recording import HANDLE_COLOR, TARGET_COLOR

HANDLE = "rgb({},{},{})".format(*HANDLE_COLOR)  # handles red, as in exported GIFs
TARGET = "rgb({},{},{})".format(*TARGET_COLOR)  # targets blue
ARROW = "white"
TRAIL = "rgba(255, 220, 0, 0.9)"                # the path a handle has been tracked along


@dataclass(frozen=True)
class CanvasMap:
    """Image pixels (x, y) <-> canvas pixels (see the module docstring)."""

    scale: float     # canvas pixels per image pixel
    ox: float = 0.0  # canvas x of the image's left edge
    oy: float = 0.0  # canvas y of the image's top edge

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Image (x, y) -> canvas (x, y) of that pixel's centre."""
        return self.ox + (x + 0.5) * self.scale, self.oy + (y + 0.5) * self.scale

    def to_image(self, cx: float, cy: float) -> tuple[float, float]:
        """Canvas (x, y) -> fractional image (x, y) (pixel centres at integers)."""
        return (cx - self.ox) / self.scale - 0.5, (cy - self.oy) / self.scale - 0.5

    def pixel(self, cx: float, cy: float, width: int, height: int) -> tuple[int, int]:
        """Canvas (x, y) -> the image pixel (x, y) under it, clipped into a ``width`` x ``height`` image."""
        x, y = self.to_image(cx, cy)
        # floor(v + 0.5), not round(): Python rounds halves to even, which would misplace clicks on pixel edges
        return min(max(math.floor(x + 0.5), 0), width - 1), min(max(math.floor(y + 0.5), 0), height - 1)

    def pixel_rect(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        """Canvas (left, top, width, height) covering image pixels x0..x1, y0..y1 (inclusive)."""
        left, top = self.to_canvas(x0 - 0.5, y0 - 0.5)
        return left, top, (x1 - x0 + 1) * self.scale, (y1 - y0 + 1) * self.scale


def scaled_rgba(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [H, W, 3 or 4] -> uint8 [round(H s), round(W s), 4] for ``put_image_data`` (RGBA goes as PNG:
    lossless, where RGB would go as JPEG). Integer upscales repeat pixels so they stay crisp."""
    img = np.asarray(image, dtype=np.uint8)
    if img.shape[2] == 3:
        img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if scale == int(scale) and scale >= 1:
        k = int(scale)
        return np.ascontiguousarray(img.repeat(k, axis=0).repeat(k, axis=1))
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BOX
    return np.asarray(Image.fromarray(img, "RGBA").resize(size, resample))


def put_image(canvas, image: np.ndarray, scale: float, x: float = 0, y: float = 0) -> None:
    """Draw uint8 [H, W, 3 or 4] ``image`` scaled by ``scale`` with its top-left corner at canvas (x, y).

    An enlarged image is sent at its own size and the canvas scales it with smoothing off: the pixels stay
    crisp and a frame carries 1 / scale**2 of the bytes (a 128 px image shown at 512 px: 1/16), which is what
    keeps drawing from slowing a fast drag. ipycanvas draws ``put_image_data`` through the canvas transform.
    A reduced image is box-filtered here and sent at canvas size.
    """
    if scale < 1:
        canvas.put_image_data(scaled_rgba(image, scale), x, y)
        return
    canvas.image_smoothing_enabled = False  # (sent every time: a front end that joins late gets it too)
    canvas.set_transform(scale, 0, 0, scale, x, y)
    canvas.put_image_data(scaled_rgba(image, 1), 0, 0)
    canvas.reset_transform()


def colormap(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """float [H, W] -> uint8 [H, W, 3]: ``lo`` black through purple, orange to ``hi`` pale yellow (inferno-like)."""
    anchors = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)
    t = np.clip((np.asarray(values, np.float64) - lo) / max(hi - lo, 1e-12), 0, 1) * (len(anchors) - 1)
    i = np.minimum(t.astype(np.int64), len(anchors) - 2)
    f = (t - i)[..., None]
    return np.round(anchors[i] * (1 - f) + anchors[i + 1] * f).astype(np.uint8)


def arrow(canvas, x0: float, y0: float, x1: float, y1: float, color: str = ARROW, width: float = 2.0,
          head: float = 9.0) -> None:
    """An arrow from canvas (x0, y0) to (x1, y1) with a filled head of ``head`` canvas pixels."""
    n = math.hypot(x1 - x0, y1 - y0)
    if n < 1e-6:
        return
    ux, uy = (x1 - x0) / n, (y1 - y0) / n
    head = min(head, n)
    bx, by = x1 - ux * head, y1 - uy * head
    canvas.stroke_style, canvas.fill_style, canvas.line_width = color, color, width
    canvas.stroke_line(x0, y0, bx, by)
    px, py = -uy * head * 0.5, ux * head * 0.5
    canvas.fill_polygon([(x1, y1), (bx + px, by + py), (bx - px, by - py)])


def dot(canvas, x: float, y: float, radius: float, color: str, ring: str = "white") -> None:
    """A filled disk with a thin contrasting ring, at canvas (x, y)."""
    canvas.fill_style = color
    canvas.fill_circle(x, y, radius)
    canvas.stroke_style, canvas.line_width = ring, 1.5
    canvas.stroke_circle(x, y, radius)
