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

Coordinates are arrays' (row, col) (the convention: :mod:`dragnb.drag.geometry`, whose numpy-only helpers
this module re-exports: ``core.xy_to_rc``, ``core.window_offsets`` and the rest keep working).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..stylegan.ops import gather_rc
from . import geometry

# Re-exported: notebooks, tests and the back-ends use core.xy_to_rc, core.window_offsets and the rest.
from .geometry import default_radii, disk_offsets, rc_to_xy, window_offsets, xy_to_rc  # noqa: F401

# ----------------------------------------------------------------------------
# The features: the feature block's output, bilinearly resized to image size, sampled where needed


def _axis_taps(n_out: int, n_in: int, device) -> list[torch.Tensor]:
    return [torch.from_numpy(a).to(device) for a in geometry.axis_taps(n_out, n_in)]


def _gather_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` for ``table`` [N, C] and int64 ``idx`` [...] -> [..., C].

    Exported as ONNX GatherND: ORT's CPU gradient of Gather takes a mutex per element (slow), GatherND's is a
    plain loop over contiguous C-float slices.
    """
    if torch.onnx.is_in_onnx_export():
        return _GatherND.apply(table, idx)
    return table[idx]


class _GatherND(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, idx):
        return table[idx]

    @staticmethod
    def symbolic(g, table, idx):
        axes = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64))
        return g.op("GatherND", table, g.op("Unsqueeze", idx, axes))


class ResizedFeatures:
    """The DragGAN features: the feature block's output ``x`` [1, C, h, w] bilinearly resized to ``size`` (H, W)
    exactly as ``F.interpolate(mode="bilinear", align_corners=False)``, WITHOUT materialising the [C, H, W] map.

    The resize is linear and each output pixel mixes at most 2 x 2 input pixels, so the features at integer
    image pixels are computed from ``x`` on demand (:meth:`at`: four gathers and the separable weights of
    :func:`.geometry.axis_taps`); tracking, motion supervision and the mask term only ever look at a few thousand
    pixels. :meth:`full` materialises the map (F0, display) with the very same arithmetic (separable: rows,
    then columns; elementwise multiply and add, no fused or reduced sums), so ``full()[:, r, c]`` equals
    ``at(r, c)`` bit for bit: the mask term is exactly 0 at the start of a drag in every back-end.
    """

    def __init__(self, x: torch.Tensor, size: tuple[int, int]):
        c, h, w = (int(n) for n in x.shape[-3:])  # static sizes (the ONNX tracer would make them tensors)
        self.x = x.reshape(c, h, w)  # the batch dimension (1) by Reshape: no Gather (whose gradient is slow)
        self.shape = (c, int(size[0]), int(size[1]))
        self.identity = (h, w) == tuple(self.shape[1:])
        self._rows = _axis_taps(self.shape[1], h, x.device)
        self._cols = _axis_taps(self.shape[2], w, x.device)
        self._table = None

    @property
    def table(self) -> torch.Tensor:
        """x channels-last [h * w, C] (made once, on first use)."""
        if self._table is None:
            c, h, w = (int(n) for n in self.x.shape)
            self._table = self.x.reshape(c, h * w).t()
        return self._table

    def at(self, rows: torch.Tensor, cols: torch.Tensor, merged: bool = False) -> torch.Tensor:
        """Features at integer image pixels (rows, cols) int64 [...] (inside the image) -> [..., C].

        ``merged``: fetch the four taps with ONE gather (one gradient buffer of x's size instead of four; the
        taps are then split by slicing, whose gradient is as large as the gathered values): for few pixels.
        """
        w = int(self.x.shape[2])
        if self.identity:
            return _gather_rows(self.table, rows * w + cols)
        r0, r1, wr0, wr1 = (t[rows][..., None] if t.dtype.is_floating_point else t[rows] for t in self._rows)
        c0, c1, wc0, wc1 = (t[cols][..., None] if t.dtype.is_floating_point else t[cols] for t in self._cols)
        idx = [r * w + c for r, c in ((r0, c0), (r1, c0), (r0, c1), (r1, c1))]
        if merged:
            g4 = _gather_rows(self.table, torch.stack(idx))  # [4, ..., C]
            g = [g4.narrow(0, k, 1).squeeze(0) for k in range(4)]  # Slice, not Gather (see _gather_rows)
        else:
            g = [_gather_rows(self.table, i) for i in idx]
        return wc0 * (wr0 * g[0] + wr1 * g[1]) + wc1 * (wr0 * g[2] + wr1 * g[3])

    def detached(self, stop_gradient: Callable) -> ResizedFeatures:
        """The same features with ``stop_gradient`` applied to the block output (once, before any gather)."""
        out = ResizedFeatures.__new__(ResizedFeatures)
        out.__dict__.update(self.__dict__)
        out.x, out._table = stop_gradient(self.x), None
        return out

    def full(self) -> torch.Tensor:
        """The resized feature map [C, H, W] (equal to :meth:`at` at every pixel)."""
        if self.identity:
            return self.x
        r0, r1, wr0, wr1 = self._rows
        c0, c1, wc0, wc1 = self._cols
        if torch.onnx.is_in_onnx_export() or (self.x.requires_grad and torch.is_grad_enabled()):
            t = wr0[:, None] * self.x[:, r0, :] + wr1[:, None] * self.x[:, r1, :]  # [C, H, w]
            return wc0 * t[:, :, c0] + wc1 * t[:, :, c1]  # [C, H, W]
        # Without autograd: the same operations, a few channels at a time into the output, so that the
        # temporaries stay small (whole-map temporaries cost seconds for a 1024 px map: 1 GiB each).
        c, hh, ww = self.shape
        out = self.x.new_empty(self.shape)
        step = max(1, (1 << 20) // (hh * ww))
        for k in range(0, c, step):
            xs = self.x[k:k + step]
            t = wr0[:, None] * xs[:, r0, :] + wr1[:, None] * xs[:, r1, :]
            torch.add(wc0 * t[:, :, c0], wc1 * t[:, :, c1], out=out[k:k + step])
        return out


def features_at(feat, rows: torch.Tensor, cols: torch.Tensor, merged: bool = False) -> torch.Tensor:
    """Features at integer pixels (rows, cols) [...] -> [..., C] of ``feat``: a :class:`ResizedFeatures`, or a
    dense [C, H, W] tensor. ``merged``: see :meth:`ResizedFeatures.at`."""
    if isinstance(feat, ResizedFeatures):
        return feat.at(rows, cols, merged)
    return gather_rc(feat, rows, cols).movedim(0, -1)


def detached(feat, stop_gradient: Callable):
    """``feat`` with the stop-gradient applied to its source: for a :class:`ResizedFeatures`, to the block output,
    so that the detached branch has no gather whose (zero) gradient would still be computed in ONNX Runtime."""
    if isinstance(feat, ResizedFeatures):
        return feat.detached(stop_gradient)
    return stop_gradient(feat)


# ----------------------------------------------------------------------------
# The three parts of a step


def _in_image(rc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (rc[..., 0] >= 0) & (rc[..., 0] < h) & (rc[..., 1] >= 0) & (rc[..., 1] < w)


def _clamp_rc(rc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([rc[..., 0].clamp(0, h - 1), rc[..., 1].clamp(0, w - 1)], dim=-1)


def feature_distance(diff: torch.Tensor, l1=False, dim: int = 0) -> torch.Tensor:
    """Tracking distance of feature differences ``diff`` (channels along ``dim``): L1, or squared L2 (orders like L2).

    ``l1`` is a bool, or a bool tensor [] (a graph input in the ONNX export: both computed, chosen at run time).
    Used by :func:`track_points` (channels last); ``dragnb.widgets.internals`` restates it in numpy.
    """
    if isinstance(l1, torch.Tensor):
        return torch.where(l1, diff.abs().sum(dim), diff.square().sum(dim))
    return diff.abs().sum(dim) if l1 else diff.square().sum(dim)


def track_points(feat, ref_feats, handles_rc, window, l1: bool = False) -> torch.Tensor:
    """Nearest-neighbour point tracking.

    Args:
        feat: the current features at image resolution: :class:`ResizedFeatures` or a dense [C, H, W] tensor.
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
    fc = features_at(feat, cand[..., 0], cand[..., 1])  # [P, M, C]
    dist = feature_distance(fc - ref_feats[:, None, :], l1, dim=-1)  # [P, M]
    dist = torch.where(valid, dist, torch.full_like(dist, float("inf")))
    idx = torch.argmin(dist, dim=1)  # [P]; first minimum in row-major window order
    return torch.gather(cand, 1, idx[:, None, None].expand(-1, 1, 2)).squeeze(1)


def sample_bilinear_zeros(feat, rows, cols) -> torch.Tensor:
    """Bilinear sample of the features ``feat`` at fractional (rows, cols) [...] -> [..., C]; zeros outside.

    Equals ``grid_sample(align_corners=True, padding_mode="zeros")`` on pixel centres, written as gathers
    because ORT cannot differentiate GridSample. The four corners are fetched in one :func:`features_at`
    call and combined with elementwise ops only (the same rounding in every back-end).
    """
    _, h, w = feat.shape
    r0 = rows.floor()
    c0 = cols.floor()
    tr, tc = rows - r0, cols - c0
    corners = [(dr, wr, dc, wc) for dr, wr in ((0, 1 - tr), (1, tr)) for dc, wc in ((0, 1 - tc), (1, tc))]
    rc = torch.stack([torch.stack([(r0 + dr).to(torch.int64), (c0 + dc).to(torch.int64)], dim=-1)
                      for dr, _, dc, _ in corners])  # [4, ..., 2]
    inside = _in_image(rc, h, w).to(rows.dtype)  # [4, ...]
    rc = _clamp_rc(rc, h, w)
    f = features_at(feat, rc[..., 0], rc[..., 1], merged=True)  # [4, ..., C]
    out = 0
    for k, (_, wr, _, wc) in enumerate(corners):
        # narrow (ONNX Slice), not f[k] (Gather): see _gather_rows
        out = out + f.narrow(0, k, 1).squeeze(0) * (wr * wc * inside.narrow(0, k, 1).squeeze(0))[..., None]
    return out


def motion_loss(feat, handles_rc, targets_rc, disk, stop_gradient: Callable = torch.Tensor.detach):
    """Motion supervision summed over points farther than 1 px from their target.

    Args:
        feat: features (with gradient): :class:`ResizedFeatures` or a dense [C, H, W] tensor.
        handles_rc: int64 [P, 2] tracked handles; targets_rc: float [P, 2] targets.
        disk: int64 [K, 2] r1-disk offsets (:func:`disk_offsets`).
        stop_gradient: applied to the unshifted features (``detach`` in PyTorch).
    Returns:
        (loss scalar, per-point loss [P], distance to target [P]).
    """
    _, h, w = feat.shape
    unit, dist, active = _directions(handles_rc, targets_rc)
    pix = handles_rc[:, None, :] + disk[None, :, :]  # [P, K, 2]
    valid = _in_image(pix, h, w).to(dist.dtype)  # [P, K]
    pix = _clamp_rc(pix, h, w)
    per_point = _disk_term(feat, pix, valid, unit, stop_gradient, lambda rows, cols: (rows, cols))
    return (per_point * active).sum(), per_point, dist


def _directions(handles_rc, targets_rc):
    """(unit direction float [P, 2], distance to target [P], 1.0 where a point is farther than 1 px, else 0)."""
    direction = targets_rc - handles_rc.to(targets_rc.dtype)  # [P, 2]
    dist = direction.square().sum(1).sqrt()  # [P]
    return direction / (dist[:, None] + 1e-7), dist, (dist > 1).to(dist.dtype)


def _disk_term(feat, pix, weight, unit, stop_gradient: Callable, warp: Callable) -> torch.Tensor:
    """Per point: the mean over the disk pixels ``pix`` [P, K, 2] (weighted by ``weight`` [P, K], 0 or 1) and the
    channels of ``|F(warp(q + d)) - sg(F(q))|``, bilinear with zeros outside -> [P]."""
    c = feat.shape[0]
    f_orig = features_at(detached(feat, stop_gradient), pix[..., 0], pix[..., 1], merged=True)  # [P, K, C]
    shifted = pix.to(unit.dtype) + unit[:, None, :]
    f_shift = sample_bilinear_zeros(feat, *warp(shifted[..., 0], shifted[..., 1]))  # [P, K, C]
    per_pix = (f_shift - f_orig).abs() * weight[..., None]  # [P, K, C]
    return per_pix.sum(dim=(1, 2)) / (c * weight.sum(1).clamp(min=1))


def official_disk(handles_rc, box, coords, radius, h: int, w: int):
    """The official code's motion disk around each handle: (pixels int64 [P, K, 2], in the image; keep float [P, K],
    1 for the pixels of the disk).

    Pixel q is in the disk of handle p when ``|X(q) - p| < radius``, X the official code's stretched coordinates
    (``coords``: the row and column values of ``torch.linspace(0, h, h)`` and ``torch.linspace(0, w, w)``, so
    pixel i sits at i * h / (h - 1)). The disk is shifted toward the top-left, by up to a pixel near the
    bottom-right border, and may leave out the handle itself; its pixels are looked for among ``box``
    (:func:`.geometry.official_disk_box`) around each handle. The distance is computed as the official code does
    (float32 difference, square, sum, square root), so the same pixels pass.
    """
    pix = handles_rc[:, None, :] + box[None, :, :]  # [P, K, 2]
    inside = _in_image(pix, h, w)
    pix = _clamp_rc(pix, h, w)
    p = handles_rc.to(coords[0].dtype)
    dr = coords[0][pix[..., 0]] - p[:, None, 0]
    dc = coords[1][pix[..., 1]] - p[:, None, 1]
    keep = inside & ((dr * dr + dc * dc).sqrt() < radius)
    return pix, keep.to(coords[0].dtype)


def _through_grid(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Pixel position -> the normalised grid coordinate of ``grid_sample(align_corners=True)`` and back, rounded
    at each step as the official code and PyTorch's CPU kernel round it:
    ``((pos / (n - 1) * 2 - 1) + 1) * ((n - 1) / 2)``.
    The round trip moves a position by an ulp or so (an integer can land just below itself), which changes the
    bilinear weights by up to ~1e-5 of a feature's range: as much as the official tracking's smallest margins."""
    g = pos / (n - 1) * 2 - 1
    return (g + 1) * ((n - 1) / 2)


def official_motion_loss(feat, handles_rc, targets_rc, box, coords, radius,
                         stop_gradient: Callable = torch.Tensor.detach):
    """Motion supervision as the official DragGAN code computes it (``compat="official"``).

    As :func:`motion_loss` (a point farther than 1 px from its target adds the mean over its disk pixels q and the
    channels of ``|F(q + d) - sg(F(q))|``, d the unit direction, bilinear with zeros outside), but the disk of
    each point is :func:`official_disk` and the shifted positions take the grid round trip (:func:`_through_grid`).

    Args:
        feat: features (with gradient): :class:`ResizedFeatures` or a dense [C, H, W] tensor.
        handles_rc: int64 [P, 2] tracked handles; targets_rc: float [P, 2] targets.
        box: int64 [K, 2] offsets that hold the disk (:func:`.geometry.official_disk_box`).
        coords: (float32 [H], float32 [W]) ``torch.linspace(0, H, H)``, ``torch.linspace(0, W, W)``.
        radius: the disk radius, pixels (float or float tensor []).
    Returns:
        (loss scalar, per-point loss [P], distance to target [P]).
    """
    _, h, w = feat.shape
    unit, dist, active = _directions(handles_rc, targets_rc)
    pix, keep = official_disk(handles_rc, box, coords, radius, h, w)
    if isinstance(feat, ResizedFeatures) or torch.onnx.is_in_onnx_export():
        per_point = _disk_term(feat, pix, keep, unit, stop_gradient,
                               lambda rows, cols: (_through_grid(rows, h), _through_grid(cols, w)))
    else:
        per_point = _official_disk_term_dense(feat, pix, keep, unit)
    return (per_point * active).sum(), per_point, dist


def _official_disk_term_dense(feat, pix, keep, unit) -> torch.Tensor:
    """:func:`_disk_term` of the official motion loss on a dense map [C, H, W] in eager PyTorch, with the official
    code's own ops (``grid_sample`` on the map, ``l1_loss``): the same numbers up to rounding, and with PyTorch's
    rounding of both the samples and their gradient (how the official step reaches ``feat``, bit for bit) -> [P]."""
    _, h, w = feat.shape
    losses = []
    for j in range(pix.shape[0]):
        sel = keep[j] > 0
        rows, cols = pix[j, sel, 0], pix[j, sel, 1]  # row-major, as torch.where lists the official disk
        if rows.numel() == 0:  # no pixel in the disk: no term (as _disk_term; the official mean would be NaN)
            losses.append(feat.new_zeros(()))
            continue
        grid = torch.stack([(cols + unit[j, 1]) / (w - 1) * 2 - 1, (rows + unit[j, 0]) / (h - 1) * 2 - 1], dim=-1)
        shifted = torch.nn.functional.grid_sample(feat[None], grid[None, None], align_corners=True).squeeze(2)
        losses.append(torch.nn.functional.l1_loss(feat[None][:, :, rows, cols].detach(), shifted))
    return torch.stack(losses)


def _blog_grid(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Pixel position -> the blog sample's normalised grid coordinate, clamped to the image, and back, rounded at
    each step as the sample computes it: ``(((2 pos / (n - 1) - 1).clamp(-1, 1) + 1) / 2) * (n - 1)``.
    The clamp keeps every shifted position inside the image: near a border the shift shrinks instead of sampling
    the zero padding."""
    g = (2.0 * pos / (n - 1) - 1).clamp(-1.0, 1.0)
    return (g + 1) / 2 * (n - 1)


def _blog_directions(handles_rc, targets_rc):
    """The blog sample's motion step per point: the unit direction to the target, or the whole remaining vector
    where that is shorter (``torch.where(|d| > |t - h|, t - h, d)``) -> float [P, 2]."""
    direction = targets_rc - handles_rc.to(targets_rc.dtype)  # [P, 2]
    dist = direction.square().sum(1).sqrt()  # [P]
    unit = direction / (dist[:, None] + 1e-7)
    return torch.where((unit.square().sum(1).sqrt() > dist)[:, None], direction, unit)


def blog_motion_loss(feat, handles_rc, targets_rc, disk, stop_gradient: Callable = torch.Tensor.detach):
    """Motion supervision as the blog sample's ``motion_supervision`` computes it (``compat="blog"``).

    Every point adds the mean over its disk pixels q (those inside the image) and the channels of
    ``|F(q + d) - sg(F(q))|``, d :func:`_blog_directions`, the shifted positions taken through the sample's clamped
    grid round trip (:func:`_blog_grid`) and sampled bilinearly. No point is left out for having arrived.

    Args:
        feat: features (with gradient): :class:`ResizedFeatures` or a dense [C, H, W] tensor.
        handles_rc: int64 [P, 2] handles; targets_rc: float [P, 2] targets.
        disk: int64 [K, 2] disk offsets (:func:`.geometry.blog_disk_offsets`: distance <= r1).
    Returns:
        (loss scalar, per-point loss [P]).
    """
    _, h, w = feat.shape
    step = _blog_directions(handles_rc, targets_rc)
    pix = handles_rc[:, None, :] + disk[None, :, :]  # [P, K, 2]
    valid = _in_image(pix, h, w).to(step.dtype)
    pix = _clamp_rc(pix, h, w)
    per_point = _disk_term(feat, pix, valid, step, stop_gradient,
                           lambda rows, cols: (_blog_grid(rows, h), _blog_grid(cols, w)))
    return per_point.sum(), per_point


def blog_objective(feat, ref_feats, handles_rc, targets_rc, window, disk, tolerance, previous_rc=None,
                   stop_gradient: Callable = torch.Tensor.detach):
    """One step of the blog sample's loop (``compat="blog"``) on the features of one forward.

    In the sample's order: the stop test (``torch.allclose(handles, targets, atol=tolerance)``: every coordinate
    within ``tolerance + 1e-5 |target|``) on ``previous_rc``, the handles the PREVIOUS step used (the sample's loop
    tests its handle tensor before rebuilding it from the last tracking result, so it stops one step after
    tracking arrives; None or the first step of a drag: ``handles_rc``), the motion term at ``handles_rc``
    (:func:`blog_motion_loss`; no mask term), and L1 point tracking on the same, pre-update features, which gives
    the handles of the NEXT step (tracking runs one step behind the update). Converged, the handles stay.

    Shapes as :func:`drag_objective`'s; ``previous_rc`` int64 [P, 2]. Returns ``(loss, motion, mask (0), tracked
    int64 [P, 2], distance [P] of the tracked handles, converged bool scalar)``.
    """
    tested = (handles_rc if previous_rc is None else previous_rc).to(targets_rc.dtype)
    converged = ((tested - targets_rc).abs() <= tolerance + 1e-5 * targets_rc.abs()).all()
    motion, _ = blog_motion_loss(feat, handles_rc, targets_rc, disk, stop_gradient)
    tracked = torch.where(converged, handles_rc, track_points(feat, ref_feats, handles_rc, window, l1=True))
    dist = (targets_rc - tracked.to(targets_rc.dtype)).square().sum(1).sqrt()
    return motion, motion * 1.0, motion * 0.0, tracked, dist, converged


def mask_loss(feat, fixed, f0_fixed) -> torch.Tensor:
    """``mean(|F * fixed - F0 * fixed|)`` over [C, H, W], summed over the fixed pixels only.

    ``fixed`` [H, W] (1 = keep; or [1, 1] zeros: no mask), ``f0_fixed`` = F0 * fixed [C, H, W] (or [1, 1, 1]).
    Pixels where ``fixed`` is 0 contribute exactly 0 to the mean, so only the nonzero ones are visited
    (features via :func:`features_at`); the sum is divided by C * H * W as the mean over the full map is.
    """
    c, h, w = feat.shape
    pix = torch.nonzero(fixed)  # [N, 2] (row, col)
    if pix.shape[0] == 0 and not torch.onnx.is_in_onnx_export():
        # No fixed pixel (no mask: [1, 1] zeros): exactly 0, without gathers whose zero gradient autograd would
        # still compute over the whole feature block.
        return fixed.new_zeros(())
    rows, cols = pix[:, 0], pix[:, 1]
    weight = fixed.reshape(-1)[rows * fixed.shape[1] + cols]  # [N]
    f = features_at(feat, rows, cols)  # [N, C]
    f0 = gather_rc(f0_fixed, rows, cols).t()  # [N, C]
    return (f * weight[:, None] - f0).abs().sum() / (c * h * w)


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
    official=None,
):
    """Tracking, then motion supervision and the mask term on the same features (one DragGAN step).

    Shapes: ``feat`` :class:`ResizedFeatures` (or a dense [C, H, W] tensor); ``ref_feats`` [P, C];
    ``handles_rc`` int64 [P, 2]; ``targets_rc`` float [P, 2]; ``window`` int64 [M, 2]; ``disk`` int64 [K, 2];
    ``fixed`` [H, W] float (or [1, 1] zeros = no mask); ``f0_fixed`` [C, H, W] (or [1, 1, 1]); ``lambda_mask``
    and ``tolerance`` scalars (tensors or floats).

    ``official``: None (dragnb's motion term: ``disk`` holds the disk's offsets), or ``(coords, radius)`` for the
    official code's (:func:`official_motion_loss`; ``disk`` then holds the box the disk is looked for in).

    Returns ``(loss, motion, mask, tracked int64 [P, 2], distance [P], converged bool scalar)``.
    """
    tracked = track_points(feat, ref_feats, handles_rc, window, l1=l1_tracking)
    if official is None:
        motion, _, dist = motion_loss(feat, tracked, targets_rc, disk, stop_gradient)
    else:
        coords, radius = official
        motion, _, dist = official_motion_loss(feat, tracked, targets_rc, disk, coords, radius, stop_gradient)
    masked = mask_loss(feat, fixed, f0_fixed)
    loss = motion + lambda_mask * masked
    converged = (dist <= tolerance).all()
    return loss, motion, masked, tracked, dist, converged
