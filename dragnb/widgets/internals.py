"""The workbench's internals view: what the DragGAN step sees.

Two panels side by side, both in image coordinates (``drawing.CanvasMap``):

* **features** - the feature map at the tracked synthesis block (resized to image size), its first three
  principal components shown as RGB; per handle the exact r1 disk of motion supervision (filled), the r2
  tracking window (outlined, clipped to the image) and the motion direction (unit arrow toward the target);
* **tracking distance** - for the selected point, the distance from its reference feature (the handle's
  feature in F0) to the feature at every pixel (bright = close), with its r2 window and the pixel the
  tracker picks in it (a cyan cross): where the handle goes at the next step.

The distance and the tracker's pick restate ``dragnb.drag.core``'s ``feature_distance`` and ``track_points``
in numpy (``tests/test_widget.py`` holds them equal), and the r1 disk and r2 window are
``dragnb.drag.geometry``'s offsets, so the view needs no torch: it also serves a session on ORT artifacts.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas, hold_canvas

from ..drag import geometry
from .drawing import HANDLE, TARGET, CanvasMap, arrow, colormap, dot, put_image

MAX_SIDE = 256  # PCA and the distance map are computed on features strided to at most this many pixels


def pca_rgb(features: np.ndarray, basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features float [C, H, W] -> (uint8 [H, W, 3] first 3 principal components as RGB, basis float [3, C]).

    Each component is stretched between its 1st and 99th percentile. Pass the previous ``basis`` to keep
    colours steady from frame to frame (a component's sign is arbitrary; it is flipped to agree with it).
    """
    c, h, w = features.shape
    x = features.reshape(c, -1).T.astype(np.float64)  # [HW, C]
    x = x - x.mean(0)
    sample = x[:: max(1, len(x) // 4096)]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    comps = np.zeros((3, c))
    comps[: min(3, len(vt))] = vt[:3]
    if basis is not None and basis.shape == comps.shape:
        comps *= np.where((comps * basis).sum(1) < 0, -1.0, 1.0)[:, None]
    proj = x @ comps.T  # [HW, 3]
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8), comps


def _feature_distance(diff: np.ndarray, l1: bool) -> np.ndarray:
    """Tracking distance of float32 feature differences ``diff`` [C, ...]: L1, or squared L2 (orders like L2)."""
    return np.abs(diff).sum(0) if l1 else np.square(diff).sum(0)


def distance_map(features: np.ndarray, ref_feat: np.ndarray, l1: bool) -> np.ndarray:
    """float [H, W]: tracking distance (L1, or L2) from ``ref_feat`` [C] to the feature at every pixel of
    ``features`` [C, H, W] - the quantity the tracker minimises inside its window."""
    d = _feature_distance(np.asarray(features, np.float32) - np.asarray(ref_feat, np.float32)[:, None, None], l1)
    return d if l1 else np.sqrt(d)  # squared L2 has the same order as L2, with less work


def next_position(features: np.ndarray, ref_feat: np.ndarray, handle, r2: int, l1: bool) -> tuple[float, float]:
    """(x, y) where point tracking moves ``handle`` next, given ``features`` [C, H, W]: the pixel of its r2
    window, inside the image, whose feature is nearest ``ref_feat`` [C] (ties: the first in row-major order)."""
    feat = np.asarray(features, np.float32)
    _, h, w = feat.shape
    cand = geometry.xy_to_rc(handle).round().astype(np.int64) + geometry.window_offsets(r2)  # (row, col) [M, 2]
    inside = (cand[:, 0] >= 0) & (cand[:, 0] < h) & (cand[:, 1] >= 0) & (cand[:, 1] < w)
    cand = np.stack([cand[:, 0].clip(0, h - 1), cand[:, 1].clip(0, w - 1)], axis=1)
    dist = _feature_distance(feat[:, cand[:, 0], cand[:, 1]] - np.asarray(ref_feat, np.float32)[:, None], l1)
    x, y = geometry.rc_to_xy(cand[np.argmin(np.where(inside, dist, np.inf))])[0]
    return float(x), float(y)


class InternalsView(widgets.VBox):
    """The internals panels for an image of ``width`` x ``height`` pixels; :meth:`show` draws one frame.

    Args:
        width, height: image size in pixels.
        panel: size of each panel's longer side, canvas pixels.
    """

    GAP = 8      # canvas pixels between the panels
    TITLE = 18   # canvas pixels above the panels: their titles
    BAR = 26     # canvas pixels below them: the distance map's colour bar and its labels

    def __init__(self, width: int, height: int, panel: int = 256):
        self.width, self.height = width, height
        s = panel / max(width, height)
        self.maps = (CanvasMap(s, oy=self.TITLE), CanvasMap(s, ox=width * s + self.GAP, oy=self.TITLE))
        cw, ch = round(2 * width * s + self.GAP), round(self.TITLE + height * s + self.BAR)
        self.canvas = Canvas(width=cw, height=ch, layout=widgets.Layout(width=f"{cw}px", height=f"{ch}px"))
        self.point = widgets.Dropdown(description="point", options=[], layout=widgets.Layout(width="160px"))
        self.caption = widgets.HTML()
        self._basis = None
        super().__init__([widgets.HBox([self.point, self.caption]), self.canvas])

    def set_points(self, n: int, selected: int | None) -> None:
        """Offer points 0..n-1 in the selector; select ``selected`` (None: keep, or the first)."""
        options = [(f"point {i}", i) for i in range(n)]
        if [o[1] for o in self.point.options] != list(range(n)):
            keep = self.point.value
            self.point.options = options
            self.point.value = keep if keep is not None and keep < n else (0 if n else None)
        if selected is not None and selected < n:
            self.point.value = selected

    def show(self, features, ref_feats, handles, targets, r1: float, r2: int, l1: bool,
             compat: str = "dragnb") -> None:
        """Draw one frame (one ``hold_canvas``).

        Args:
            features: float32 [C, H, W] features at the current latent, resized to image size.
            ref_feats: float32 [P, C] reference feature of each handle (its feature in F0).
            handles, targets: P points (x, y), image pixels.
            r1, r2: motion disk radius and tracking window half-size, image pixels.
            l1: L1 tracking distance (else L2).
            compat: the session's compat mode: the motion disk is drawn as that mode's step computes it.
        """
        handles = np.asarray(handles, np.float64).reshape(-1, 2)
        targets = np.asarray(targets, np.float64).reshape(-1, 2)
        self.set_points(len(handles), None)
        k = max(1, -(-max(self.width, self.height) // MAX_SIDE))  # stride
        small = features[:, ::k, ::k]
        rgb, self._basis = pca_rgb(small, self._basis)
        fmap, dmap = self.maps
        i = self.point.value
        with hold_canvas():
            self.canvas.clear()
            put_image(self.canvas, rgb, fmap.scale * k, fmap.ox, fmap.oy)
            for j, (h, t) in enumerate(zip(handles, targets)):
                self._draw_point_internals(fmap, h, t, r1, r2, selected=j == i, compat=compat)
            caption = f"features: {features.shape[0]} channels, PCA &rarr; RGB"
            self._titles(i if i is not None and i < len(handles) else None)
            if i is not None and i < len(handles):
                dist = distance_map(small, ref_feats[i], l1)
                close = -dist
                put_image(self.canvas, colormap(close, np.percentile(close, 2), close.max()), dmap.scale * k,
                          dmap.ox, dmap.oy)
                self._draw_window(dmap, handles[i], r2, "white", 2)
                nxt = next_position(features, ref_feats[i], handles[i], r2, l1)
                cx, cy = dmap.to_canvas(*nxt)
                self.canvas.stroke_style, self.canvas.line_width = "cyan", 2
                self.canvas.stroke_line(cx - 6, cy, cx + 6, cy)
                self.canvas.stroke_line(cx, cy - 6, cx, cy + 6)
                dot(self.canvas, *dmap.to_canvas(*handles[i]), 3, HANDLE)
                caption += (f" &nbsp;|&nbsp; point {i}: {'L1' if l1 else 'L2'} distance to its reference feature "
                            f"(bright = close); next tracked position ({nxt[0]:.0f}, {nxt[1]:.0f})")
        self.caption.value = f"<small>{caption}</small>"

    def _titles(self, point: int | None) -> None:
        """Each panel's title above it; under the distance map, its colour bar (far dark, close bright)."""
        c, (fmap, dmap) = self.canvas, self.maps
        c.font, c.fill_style = "12px sans-serif", "#333"
        c.fill_text("features (first 3 principal components as RGB)", fmap.ox, 13)
        c.fill_text("tracking distance" + ("" if point is None else f" (point {point}, to its reference)"),
                    dmap.ox, 13)
        if point is None:
            return
        top, w = dmap.oy + self.height * dmap.scale + 4, self.width * dmap.scale
        ramp = colormap(np.linspace(0, 1, 256)[None, :].repeat(2, 0), 0, 1)
        c.save()
        c.translate(dmap.ox, top)
        c.scale(w / 256, 5)
        c.put_image_data(np.concatenate([ramp, np.full(ramp.shape[:2] + (1,), 255, np.uint8)], 2), 0, 0)
        c.restore()
        c.font, c.fill_style = "11px sans-serif", "#333"
        c.fill_text("far", dmap.ox, top + 21)
        c.text_align = "right"
        c.fill_text("close (where tracking moves the handle)", dmap.ox + w, top + 21)
        c.text_align = "left"

    def _draw_window(self, m: CanvasMap, h, r2: int, color: str, width: float) -> None:
        x0, y0 = max(h[0] - r2, 0), max(h[1] - r2, 0)
        x1, y1 = min(h[0] + r2, self.width - 1), min(h[1] + r2, self.height - 1)
        self.canvas.stroke_style, self.canvas.line_width = color, width
        self.canvas.stroke_rect(*m.pixel_rect(x0, y0, x1, y1))

    def _draw_point_internals(self, m: CanvasMap, h, t, r1: float, r2: int, selected: bool,
                              compat: str = "dragnb") -> None:
        c = self.canvas
        if compat == "official":  # the official disk: per handle, off-centre (geometry.official_disk)
            disk = geometry.rc_to_xy(geometry.official_disk(geometry.xy_to_rc(h)[0], r1, (self.height, self.width)))
        elif compat == "blog":  # distance <= r1
            disk = h + geometry.rc_to_xy(geometry.blog_disk_offsets(r1))
        else:
            disk = h + geometry.rc_to_xy(geometry.disk_offsets(r1))  # (x, y) [K, 2] pixels of the r1 disk
        inside = (disk[:, 0] >= 0) & (disk[:, 0] < self.width) & (disk[:, 1] >= 0) & (disk[:, 1] < self.height)
        left, top, size, _ = m.pixel_rect(0, 0, 0, 0)
        c.fill_style, c.global_alpha = HANDLE, 0.45
        c.fill_rects(left + disk[inside, 0] * m.scale, top + disk[inside, 1] * m.scale, size)
        c.global_alpha = 1.0
        self._draw_window(m, h, r2, "white" if selected else "rgba(255,255,255,0.6)", 2 if selected else 1)
        d = t - h
        n = float(np.hypot(*d))
        if n > 0:  # the motion direction: where the r1 disk's features are pushed (one pixel per step)
            tip = h + d / n * min(n, r1 + 2)
            arrow(c, *m.to_canvas(*h), *m.to_canvas(*tip), color="white", width=2, head=7)
        dot(c, *m.to_canvas(*t), 2.5, TARGET)
