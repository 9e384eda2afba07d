"""DragGAN's pixel geometry in numpy only: coordinates, radii, offset sets and the bilinear resize taps.

Coordinates: the public API speaks (x, y); arrays and everything in this package below the public API use
(row, col). :func:`xy_to_rc` and :func:`rc_to_xy` are the only conversions in the package.

This module imports numpy only, so the torch-free path (``DragSession`` on ORT artifacts) can use it;
``dragnb.drag.core`` re-exports every name here.
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
    Below 512 px those round to (almost) nothing, so r1 and r2 are floored at 3 and 5 px (the values
    that worked on a 64 px feature map in TOY_MODEL_NOTES); for h >= 512 this equals the official rule.
    """
    r1 = max(round(3 * height / 512), 3)
    r2 = max(round(12 * height / 512), 5)
    tol = max(2 * height / 512, 2.0)
    return r1, r2, tol


def disk_offsets(r1: float) -> np.ndarray:
    """(drow, dcol) int64 [K, 2] of the pixels strictly inside radius r1 (official: distance < r1)."""
    r = int(math.ceil(r1))
    d = np.arange(-r, r + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    keep = dr**2 + dc**2 < r1**2
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
    coincide (the clamped border) the weights are exactly (1, 0). The same taps as ``ops.bilinear_matrix``.
    """
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = src - i0
    t[i1 == i0] = 0.0
    return i0, i1, (1.0 - t).astype(np.float32), t.astype(np.float32)
