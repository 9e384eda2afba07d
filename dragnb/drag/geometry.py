"""DragGAN's pixel geometry in numpy only: coordinates, radii, offset sets and the bilinear resize taps.

Coordinates: the public API speaks (x, y); arrays and everything in this package below the public API use
(row, col). :func:`xy_to_rc` and :func:`rc_to_xy` are the only conversions in the package.

This module imports numpy only and nothing of dragnb: the PyTorch step (``core``), the ORT exporter and the
torch-free runtime all use it, and the artifact writer copies it beside the runtime in every artifact folder
(``backends/ort_files.RUNTIME_FILES``). Also here: the ws composition of a W / W+ latent (``select_matrix``,
``compose_ws``) and the numpy feature resize the runtime uses.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# ----------------------------------------------------------------------------
# Coordinates


def xy_to_rc(points_xy) -> np.ndarray:
    """(x, y) points [P, 2] (UI / public API) -> (row, col) points [P, 2] (arrays)."""
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return p[:, ::-1].copy()


def rc_to_xy(points_rc) -> np.ndarray:
    """(row, col) points [P, 2] -> (x, y) points [P, 2]."""
    p = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    return p[:, ::-1].copy()


# ----------------------------------------------------------------------------
# Radii and the constant offset sets


def default_radii(height: int) -> tuple[int, int, float]:
    """(r1, r2, tolerance) in pixels for an image of ``height`` pixels.

    The official scaling is r1 = round(3 h / 512), r2 = round(12 h / 512), tolerance max(2 h / 512, 2).
    Below 512 px those round to (almost) nothing, so r1 and r2 are floored at 3 and 5 px (the smallest
    disk and window that track reliably on a 64 px feature map, docs/models.md); for h >= 512 this equals
    the official rule (:func:`official_radii`).
    """
    r1 = max(round(3 * height / 512), 3)
    r2 = max(round(12 * height / 512), 5)
    tol = max(2 * height / 512, 2.0)
    return r1, r2, tol


def official_radii(height: int) -> tuple[int, int, float]:
    """(r1, r2, tolerance) in pixels as the official DragGAN code derives them for an image of ``height`` pixels
    from its r1 = 3 and r2 = 12 "pixels at 512 px": ``round(3 / 512 * h)`` and ``round(12 / 512 * h)`` with
    Python's round (half to even: 2 px at 256), tolerance ``max(2 / 512 * h, 2)``; no floors (r1 is 0 below 86 px).
    """
    h = int(height)
    return round(3 / 512 * h), round(12 / 512 * h), max(2 / 512 * h, 2.0)


def official_disk_box(r1: float) -> np.ndarray:
    """(drow, dcol) int64 [K, 2]: a square of offsets that holds the official motion disk of radius ``r1`` around
    any handle, row-major.

    The official code measures the disk on stretched coordinates (pixel i at i * h / (h - 1), from
    ``linspace(0, h, h)``): pixel q is in the disk of handle p when ``|X(q) - p| < r1``. As i <= X(i) <= i + 1,
    that needs -r1 - 1 < q - p < r1 on each axis; one more pixel on each side covers float32 rounding. Which
    pixels of the square are in the disk depends on the handle: the step computes it per point.
    """
    r = int(math.ceil(r1)) + 1
    d = np.arange(-r, r + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    return np.stack([dr.ravel(), dc.ravel()], axis=1).astype(np.int64)


def official_coords(n: int) -> np.ndarray:
    """float32 [n]: the official code's stretched pixel coordinates ``torch.linspace(0, n, n)`` (pixel i at
    i * n / (n - 1)), as PyTorch's vectorised CPU kernel computes them: one fused multiply-add from the nearer end
    (bit for bit for every n up to 2099 on an AVX-512 build; a build without FMA rounds twice, an ulp away). The
    back-ends take ``torch.linspace`` itself; this numpy copy is for drawing (``dragnb.widgets.internals``)."""
    n = int(n)
    i = np.arange(n, dtype=np.float64)
    step = np.float64(np.float32(n) / np.float32(n - 1)) if n > 1 else 0.0
    # float64 holds step * i + end exactly; one rounding to float32 is the fused multiply-add's.
    coords = np.where(i < n // 2, step * i, n - step * (n - 1 - i))
    return coords.astype(np.float32)


def official_disk(handle_rc, r1: float, size) -> np.ndarray:
    """(row, col) int64 [K, 2] of the official motion disk around ``handle_rc`` in an image of ``size`` (H, W),
    row-major: the pixels whose :func:`official_coords` lie within ``r1`` of the handle (float32, as the official
    code computes it)."""
    h, w = (int(v) for v in size)
    p = np.asarray(handle_rc, np.int64).reshape(2)
    pix = p + official_disk_box(r1)
    pix = pix[(pix[:, 0] >= 0) & (pix[:, 0] < h) & (pix[:, 1] >= 0) & (pix[:, 1] < w)]
    dr = official_coords(h)[pix[:, 0]] - np.float32(p[0])
    dc = official_coords(w)[pix[:, 1]] - np.float32(p[1])
    return pix[np.sqrt(dr * dr + dc * dc) < r1]


def disk_offsets(r1: float) -> np.ndarray:
    """(drow, dcol) int64 [K, 2] of the pixels strictly inside radius r1 (official: distance < r1)."""
    r = int(math.ceil(r1))
    d = np.arange(-r, r + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    keep = dr**2 + dc**2 < r1**2
    return np.stack([dr[keep], dc[keep]], axis=1).astype(np.int64)


def blog_disk_offsets(r1: float) -> np.ndarray:
    """(drow, dcol) int64 [K, 2] of the blog sample's motion disk around an integer handle, row-major: the pixels
    whose float32 distance ``sqrt(drow^2 + dcol^2)`` is at most r1 (the sample keeps ``distance <= radius``, so
    r1 = 3 gives 29 pixels where :func:`disk_offsets` gives 25)."""
    r = int(math.floor(r1))
    d = np.arange(-r, r + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    keep = np.sqrt((dr**2 + dc**2).astype(np.float32)) <= np.float32(r1)
    return np.stack([dr[keep], dc[keep]], axis=1).astype(np.int64)


def window_offsets(r2: int) -> np.ndarray:
    """(drow, dcol) int64 [M, 2] of the (2 r2 + 1)^2 tracking window, row-major (ties -> first)."""
    d = np.arange(-int(r2), int(r2) + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    return np.stack([dr.ravel(), dc.ravel()], axis=1).astype(np.int64)


# ----------------------------------------------------------------------------
# The feature resize


@functools.lru_cache(maxsize=64)
def axis_taps(n_out: int, n_in: int) -> tuple[np.ndarray, ...]:
    """Per output index i of a 1-D ``F.interpolate(mode="bilinear", align_corners=False)`` from n_in to n_out:
    (i0, i1 int64 [n_out], w0, w1 float32 [n_out]) with out[i] = w0[i] * in[i0[i]] + w1[i] * in[i1[i]].

    source = (i + 0.5) * n_in / n_out - 0.5, clamped at 0; i1 = min(i0 + 1, n_in - 1); where both taps
    coincide (the clamped border) the weights are exactly (1, 0).
    """
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = src - i0
    t[i1 == i0] = 0.0
    return i0, i1, (1.0 - t).astype(np.float32), t.astype(np.float32)


def resize_features(block_x: np.ndarray, size, chunk: int = 16) -> np.ndarray:
    """Feature-block activation [1, C, h, w] -> features float32 [C, H, W] resized to ``size`` (H, W).

    ``F.interpolate(mode="bilinear", align_corners=False)`` computed as ``dragnb.drag.core.ResizedFeatures.full``
    computes it (rows, then columns; separate multiplies and adds, each rounded once), so the map equals the
    training graph's sampling of it bit for bit. ``chunk`` channels at a time: the temporaries stay small.
    """
    x = np.asarray(block_x, np.float32)
    x = x.reshape(x.shape[-3:])
    c, h, w = x.shape
    hh, ww = (int(v) for v in size)
    if (h, w) == (hh, ww):
        return x.copy()
    r0, r1, wr0, wr1 = axis_taps(hh, h)
    c0, c1, wc0, wc1 = axis_taps(ww, w)
    wr0, wr1 = wr0[:, None], wr1[:, None]
    out = np.empty((c, hh, ww), np.float32)
    for k in range(0, c, chunk):
        xs = x[k:k + chunk]
        t = wr0 * xs[:, r0, :]
        t += wr1 * xs[:, r1, :]  # [c, H, w]
        o = out[k:k + chunk]
        np.multiply(t[:, :, c0], wc0, out=o)
        o += t[:, :, c1] * wc1  # [c, H, W]
    return out


def select_matrix(num_ws: int, latent_space: str, num_layers: int) -> np.ndarray:
    """float32 [num_ws, num_ws] 0/1 map from latent rows to ws rows (W+: diagonal; W: column 0)."""
    if latent_space not in ("w", "w+"):
        raise ValueError(f"latent_space must be 'w' or 'w+', got {latent_space!r}")
    if not 1 <= int(num_layers) <= num_ws:
        raise ValueError(f"num_layers must be in [1, {num_ws}], got {num_layers}")
    s = np.zeros((num_ws, num_ws), np.float32)
    n = int(num_layers)
    if latent_space == "w+":
        s[np.arange(n), np.arange(n)] = 1
    else:
        s[:n, 0] = 1
    return s


def compose_ws(ws0: np.ndarray, select: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """``ws0 * (1 - rowsum(select)) + select @ latent`` -> float32 [1, num_ws, w_dim], as in the step graph."""
    keep = 1 - select.sum(axis=1)
    return (ws0 * keep[None, :, None] + select @ latent).astype(np.float32)
