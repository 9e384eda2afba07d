"""DragGAN (Pan et al., SIGGRAPH 2023, "Drag Your GAN") as plain tensor functions.

One optimisation step, on the features ``F`` of ONE generator forward (resized to image size):

1. **Point tracking** - each handle moves to the pixel, inside a (2 r2 + 1)^2 window around it
   (clipped to the image), whose feature is nearest (L1 or L2) to the feature of the *initial*
   handle in the *initial* features ``F0``.
2. **Motion supervision** - for each point farther than 1 px from its target, the features of the
   pixels ``q`` in the r1 disk around the tracked handle, shifted one pixel along the unit direction
   ``d`` to the target, are pulled toward the detached unshifted features:
   ``sum_i mean_q |F(q + d_i) - sg(F(q))|``  (bilinear sampling, zeros outside the image).
3. **Mask term** - ``lambda * mean(|F * fixed - F0 * fixed|)`` keeps the fixed region still.

The same functions run in the PyTorch back-end and inside the exported ONNX training graph, so
they use only ops that ORT can run and differentiate on the CPU (gathers, no grid_sample) and take
the stop-gradient as an argument (``detach`` in PyTorch; a marker op in the ONNX export, because
the exporter drops ``detach``).

Coordinates: the public API speaks (x, y); arrays and everything in this module use (row, col).
:func:`xy_to_rc` and :func:`rc_to_xy` are the only conversions in the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..stylegan.ops import gather_rc

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
# The three parts of a step


def _in_image(rc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (rc[..., 0] >= 0) & (rc[..., 0] < h) & (rc[..., 1] >= 0) & (rc[..., 1] < w)


def _clamp_rc(rc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([rc[..., 0].clamp(0, h - 1), rc[..., 1].clamp(0, w - 1)], dim=-1)


def feature_distance(diff: torch.Tensor, l1=False) -> torch.Tensor:
    """Tracking distance of feature differences ``diff`` [C, ...] -> [...]: L1, or squared L2 (orders like L2).

    ``l1`` is a bool, or a bool tensor [] (a graph input in the ONNX export: both computed, chosen at run time).
    Used by :func:`track_points` and by the workbench's distance heat-map.
    """
    if isinstance(l1, torch.Tensor):
        return torch.where(l1, diff.abs().sum(0), diff.square().sum(0))
    return diff.abs().sum(0) if l1 else diff.square().sum(0)


def track_points(feat, ref_feats, handles_rc, window, l1: bool = False) -> torch.Tensor:
    """Nearest-neighbour point tracking.

    Args:
        feat: [C, H, W] current features (image resolution).
        ref_feats: [P, C] features of the initial handle points in F0.
        handles_rc: int64 [P, 2] current handles (row, col).
        window: int64 [M, 2] window offsets (:func:`window_offsets`).
        l1: distance L1 (paper) instead of L2 (official code); a bool or a bool tensor [].
    Returns:
        int64 [P, 2] tracked handles (row, col), always inside the image.
    """
    _, h, w = feat.shape
    cand = handles_rc[:, None, :] + window[None, :, :]  # [P, M, 2]
    valid = _in_image(cand, h, w)
    cand = _clamp_rc(cand, h, w)
    fc = gather_rc(feat, cand[..., 0], cand[..., 1])  # [C, P, M]
    diff = fc - ref_feats.t()[:, :, None]
    dist = feature_distance(diff, l1)  # [P, M]
    dist = torch.where(valid, dist, torch.full_like(dist, float("inf")))
    idx = torch.argmin(dist, dim=1)  # [P]; first minimum in row-major window order
    return torch.gather(cand, 1, idx[:, None, None].expand(-1, 1, 2)).squeeze(1)


def sample_bilinear_zeros(feat, rows, cols) -> torch.Tensor:
    """Bilinear sample of ``feat`` [C, H, W] at fractional (rows, cols) [...] -> [C, ...]; zeros outside.

    Equals ``grid_sample(align_corners=True, padding_mode="zeros")`` on pixel centres, written as four
    gathers because ORT cannot differentiate GridSample.
    """
    _, h, w = feat.shape
    r0 = rows.floor()
    c0 = cols.floor()
    tr, tc = rows - r0, cols - c0
    out = 0
    for dr, wr in ((0, 1 - tr), (1, tr)):
        for dc, wc in ((0, 1 - tc), (1, tc)):
            rr = (r0 + dr).to(torch.int64)
            cc = (c0 + dc).to(torch.int64)
            rc = torch.stack([rr, cc], dim=-1)
            inside = _in_image(rc, h, w).to(feat.dtype)
            rc = _clamp_rc(rc, h, w)
            out = out + gather_rc(feat, rc[..., 0], rc[..., 1]) * (wr * wc * inside)
    return out


def motion_loss(feat, handles_rc, targets_rc, disk, stop_gradient: Callable = torch.Tensor.detach):
    """Motion supervision summed over points farther than 1 px from their target.

    Args:
        feat: [C, H, W] features (with gradient).
        handles_rc: int64 [P, 2] tracked handles; targets_rc: float [P, 2] targets.
        disk: int64 [K, 2] r1-disk offsets (:func:`disk_offsets`).
        stop_gradient: applied to the unshifted features (``detach`` in PyTorch).
    Returns:
        (loss scalar, per-point loss [P], distance to target [P]).
    """
    c, h, w = feat.shape
    direction = targets_rc - handles_rc.to(feat.dtype)  # [P, 2]
    dist = direction.square().sum(1).sqrt()  # [P]
    active = (dist > 1).to(feat.dtype)
    unit = direction / (dist[:, None] + 1e-7)
    pix = handles_rc[:, None, :] + disk[None, :, :]  # [P, K, 2]
    valid = _in_image(pix, h, w).to(feat.dtype)  # [P, K]
    pix = _clamp_rc(pix, h, w)
    f_orig = stop_gradient(gather_rc(feat, pix[..., 0], pix[..., 1]))  # [C, P, K]
    shifted = pix.to(feat.dtype) + unit[:, None, :]
    f_shift = sample_bilinear_zeros(feat, shifted[..., 0], shifted[..., 1])  # [C, P, K]
    per_pix = (f_shift - f_orig).abs() * valid  # [C, P, K]
    per_point = per_pix.sum(dim=(0, 2)) / (c * valid.sum(1).clamp(min=1))
    return (per_point * active).sum(), per_point, dist


def mask_loss(feat, fixed, f0_fixed) -> torch.Tensor:
    """``mean(|F * fixed - F0 * fixed|)`` over [C, H, W]; ``fixed`` [H, W] (1 = keep), ``f0_fixed`` = F0 * fixed."""
    return (feat * fixed - f0_fixed).abs().mean()


def drag_objective(
    feat,
    ref_feats,
    handles_rc,
    targets_rc,
    window,
    disk,
    fixed,
    f0_fixed,
    lambda_mask,
    tolerance,
    l1_tracking: bool = False,
    stop_gradient: Callable = torch.Tensor.detach,
):
    """Tracking, then motion supervision and the mask term on the same features (one DragGAN step).

    Shapes: ``feat`` [C, H, W]; ``ref_feats`` [P, C]; ``handles_rc`` int64 [P, 2]; ``targets_rc``
    float [P, 2]; ``window`` int64 [M, 2]; ``disk`` int64 [K, 2]; ``fixed`` [H, W] float (all zero = no
    mask); ``f0_fixed`` [C, H, W]; ``lambda_mask`` and ``tolerance`` scalars (tensors or floats).

    Returns ``(loss, motion, mask, tracked int64 [P, 2], distance [P], converged bool scalar)``.
    """
    tracked = track_points(feat, ref_feats, handles_rc, window, l1=l1_tracking)
    motion, _, dist = motion_loss(feat, tracked, targets_rc, disk, stop_gradient)
    masked = mask_loss(feat, fixed, f0_fixed)
    loss = motion + lambda_mask * masked
    converged = (dist <= tolerance).all()
    return loss, motion, masked, tracked, dist, converged
