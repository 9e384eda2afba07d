"""Tensor operations of the generator, in the forms ONNX Runtime's CPU training build can differentiate.

ORT 1.19 has no CPU kernels for the gradients of Resize and ConvTranspose and no gradient builder
for GridSample (docs/ort_backend.md). In an ONNX export every op here is therefore expressed with Conv,
Pad (constant), Reshape and Gather, which all have CPU gradients, or with an op the exporter supplies
(the ``*_export_hook`` functions, see ``dragnb/backends/ort_graph.py``):

* stride-2 transposed convolution  = the exporter's op, else a polyphase conv2d + pixel shuffle;
* FIR filtering (the [1, 3, 3, 1] blur of StyleGAN2)  = constant pad + a single-channel conv2d over the
  channels folded into the batch.

Eager PyTorch runs the fastest equivalent instead (``conv_transpose2d``, a depthwise conv2d): the same numbers
up to the order of float sums.

Within :func:`nvidia_form` the generator computes every op up to the features in the very form of NVIDIA's
reference code on the CPU (the modulated convolution with one per-sample weight, explicit padding before each
filter, ``addmm`` for the affine layers): the same numbers BIT FOR BIT on the same PyTorch build, which is what
``compat="official"`` needs (an L1 term's signs at rounding level decide its gradient). It costs the step a
weight-gradient convolution per layer, so it is not the default.

The DragGAN feature resize and bilinear sampling (gathers with separable weights) are in ``dragnb/drag/core.py``.

All tensors are NCHW; pixel centres sit at integer coordinates.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

# ----------------------------------------------------------------------------
# NVIDIA's form

_NVIDIA_FORM = contextvars.ContextVar("dragnb_nvidia_form", default=False)


@contextlib.contextmanager
def nvidia_form():
    """Within this block (this thread or task only), the generator's eager ops take NVIDIA's reference forms."""
    token = _NVIDIA_FORM.set(True)
    try:
        yield
    finally:
        _NVIDIA_FORM.reset(token)


def in_nvidia_form() -> bool:
    """Whether :func:`nvidia_form` is on (never during an ONNX export: its graphs keep their own forms)."""
    return _NVIDIA_FORM.get() and not torch.onnx.is_in_onnx_export()


# ----------------------------------------------------------------------------
# Convolution


# Set by ``dragnb.backends.ort_export`` while it exports a TRAINING graph: a function (x, weight, padding) -> y
# that emits the convolution as an op whose ORT gradient is itself a convolution (ORT's own ConvGrad kernel,
# im2col + GEMM + col2im, is about twice as slow as its forward Conv on the CPU). None everywhere else.
conv_export_hook = None


def conv2d(x: torch.Tensor, weight: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """``F.conv2d`` with stride 1, one group and ``padding`` on every side: every convolution of the generator
    goes through here (see :data:`conv_export_hook`)."""
    if torch.onnx.is_in_onnx_export():
        if conv_export_hook is not None:
            return conv_export_hook(x, weight, padding)
    elif weight.shape[-2:] == (1, 1) and padding == 0 and x.ndim == 4:
        # 1x1 (ToRGB, resnet skips) as one matrix product: with few output channels (ToRGB's 3) oneDNN
        # declines the convolution and PyTorch's fallback takes 5-10 times longer.
        # bmm, not matmul: matmul takes another path (another order of the sums) when an operand requires grad.
        n, c, h, w = x.shape
        wm = weight.reshape(1, weight.shape[0], c).expand(n, -1, -1)
        return torch.bmm(wm, x.reshape(n, c, h * w)).reshape(n, -1, h, w)
    return F.conv2d(x, weight, padding=padding)


# ----------------------------------------------------------------------------
# Tensors derived from frozen weights

_DERIVED = WeakIdKeyDictionary()  # weight -> {tag: (stamp, derived tensor)}


def frozen_derived(weight: torch.Tensor, tag, fn):
    """``fn(weight)``, computed once per frozen weight and ``tag`` (hashable) and reused until the weight changes.

    Eager drags never train the generator, yet the phase kernels, demodulation sums and gains that only depend
    on its weights would otherwise be rebuilt at every step (about 5 % of a 256 px PyTorch step). A weight that
    requires grad, or any call during an ONNX export (whose graph must hold these ops for constant folding), is
    not cached. The stamp (version counter, storage, dtype, device) invalidates the entry after an in-place
    update (``load_state_dict``, ``copy_``) or a move; the entry dies with the weight.
    """
    if weight.requires_grad or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return fn(weight)
    stamp = (weight._version, weight.data_ptr(), weight.dtype, weight.device, tuple(weight.shape))
    entries = _DERIVED.get(weight)
    if entries is None:
        entries = _DERIVED[weight] = {}
    hit = entries.get(tag)
    if hit is None or hit[0] != stamp:
        with torch.no_grad():
            hit = entries[tag] = (stamp, fn(weight))
    return hit[1]


# ----------------------------------------------------------------------------
# FIR filters


def fir_filter_2d(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable 2-D low-pass filter ``outer(f, f) / sum(f)^2``, shape [k, k], sums to 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def fir2d(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float = 1.0) -> torch.Tensor:
    """Pad ``x`` [N, C, H, W] by ``pad`` = (left, right, top, bottom) and filter every channel with ``f``.

    Eager: one depthwise conv2d (``groups = C``), as NVIDIA's reference path does; oneDNN runs it 20-50 times
    faster than a single-channel conv over the channels folded into the batch, forward and backward. In an
    ONNX export the channels ARE folded into the batch: the kernel shape stays static and the convolution goes
    through :func:`conv2d` (its export hook). ``f`` is symmetric in StyleGAN2, so correlation equals
    convolution and no flip is needed. Both forms sum the same products per output sample.
    """
    n, c, h, w = x.shape
    fw = (f * gain).to(x.dtype)
    if in_nvidia_form():  # padded copy, then a depthwise conv with a repeated (contiguous) filter
        return F.conv2d(F.pad(x, list(pad)), fw[None, None].repeat(c, 1, 1, 1), groups=c)
    if torch.onnx.is_in_onnx_export():
        x = F.pad(x.reshape(n * c, 1, h, w), list(pad))
        y = conv2d(x, fw[None, None])
        return y.reshape(n, c, y.shape[2], y.shape[3])
    fw = fw[None, None].expand(c, 1, *fw.shape)
    if len(set(pad)) == 1:  # the same padding on every side: the convolution pads, no padded copy
        return F.conv2d(x, fw, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, list(pad)), fw, groups=c)


def zero_insert2x(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W] with each sample followed by a zero (x[0], 0, x[1], 0, ...)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, 1, 0, 0, 0, 1])  # pads the two singleton axes to 2 (constant 0)
    return x.reshape(n, c, 2 * h, 2 * w)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling of [N, C, H, W] -> [N, C, 2H, 2W] (zero insertion, pad (2, 1), filter x4 gain).

    For a 4-tap filter this is StyleGAN2's ``upfirdn2d(up=2, padding=[2, 1, 2, 1], gain=4)``.
    """
    k = f.shape[-1]
    p0, p1 = (k + 1) // 2, (k - 2) // 2
    return fir2d(zero_insert2x(x), f, (p0, p1, p0, p1), gain=4.0)


# How conv3x3_up2 computes its transposed convolution: "auto" (eager PyTorch: ``conv_transpose2d``; ONNX exports:
# the exporter's :data:`conv_transpose_export_hook`, else the polyphase form), or one form everywhere:
# "polyphase", or "zero_insertion" (the textbook form, for measurements). The same numbers up to the order of
# float sums.
UP_CONV = "auto"
UP_CONV_FORMS = ("auto", "polyphase", "zero_insertion")

# Set by ``dragnb.backends.ort_export`` while it exports: a function (x, weight_t) -> the stride-2 transposed
# convolution of x [N, Cin, H, W] with ``weight_t`` [Cin, Cout, k, k], [N, Cout, 2H + k - 2, 2W + k - 2], emitted
# as an op ONNX Runtime can run (and, in a training graph, differentiate). None: the polyphase form.
conv_transpose_export_hook = None


def conv3x3_up2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's up-sampling convolution: ``x`` [N, Cin, H, W], ``weight`` [Cout, Cin, k, k] -> [N, Cout, 2H, 2W].

    Equals ``conv_transpose2d(x, weight.transpose(0, 1), stride=2)`` followed by FIR filtering with
    padding 1 and gain 4, which is how eager PyTorch computes it: oneDNN's transposed convolution does 9 products
    per input sample and (input, output) channel pair, half the time of the polyphase form below, forward and
    backward. ONNX Runtime 1.19 cannot differentiate ConvTranspose, so an ONNX export uses the exporter's
    :data:`conv_transpose_export_hook` or, without one, the polyphase form (:func:`_transposed_polyphase`).
    """
    if UP_CONV not in UP_CONV_FORMS:
        raise ValueError(f"ops.UP_CONV must be one of {UP_CONV_FORMS}, got {UP_CONV!r}")
    k = int(weight.shape[-1])
    if UP_CONV == "zero_insertion":
        return _conv3x3_up2_zero_insertion(x, weight, f)
    if UP_CONV == "auto" and not torch.onnx.is_in_onnx_export():
        wt = frozen_derived(weight, "transposed", lambda w: w.transpose(0, 1).contiguous())
        return up2_fir(F.conv_transpose2d(x, wt, stride=2), k, f)
    if UP_CONV == "auto" and conv_transpose_export_hook is not None:
        return up2_fir(conv_transpose_export_hook(x, weight.transpose(0, 1)), k, f)
    return up2_fir(_transposed_polyphase(x, weight), k, f)


def _transposed_polyphase(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv_transpose2d(x, weight.transpose(0, 1), stride=2)`` [N, Cout, 2H + k - 2, 2W + k - 2] with Conv,
    Pad and Reshape only.

    Output row 2m + py (and column 2n + px) only sees the kernel taps of parity py (px), so the four output
    phases are four small convolutions of ``x`` itself, done as ONE conv2d with a t x t kernel (t = ceil(k / 2))
    and 4 * Cout output channels (taps beyond k are zero), then interleaved (reshape + transpose, a "pixel
    shuffle") and cropped. Zero insertion followed by a plain conv (the textbook form) computes the same numbers
    with 9 / 4 times the work: three quarters of its products are with inserted zeros.
    """
    cout, cin, k, _ = (int(v) for v in weight.shape)
    h, w = int(x.shape[2]), int(x.shape[3])
    t = (k + 1) // 2
    wp = frozen_derived(weight, "phase", _phase_kernels)
    y = conv2d(F.pad(x, [t - 1] * 4), wp)  # [N, (py, px, Cout), H + t - 1, W + t - 1]
    hm, wm = h + t - 1, w + t - 1
    y = y.reshape(-1, 2, 2, cout, hm, wm).permute(0, 3, 4, 1, 5, 2).reshape(-1, cout, 2 * hm, 2 * wm)
    return y[:, :, : 2 * h + k - 2, : 2 * w + k - 2]  # [N, Cout, 2H+1, 2W+1] for k = 3


def _phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin, k, k] -> the polyphase kernels [(py, px, Cout), Cin, t, t] of :func:`conv3x3_up2`."""
    cout, cin, k, _ = (int(v) for v in weight.shape)
    t = (k + 1) // 2
    # Phase kernel [(py, px, o), i, a, b] = weight[o, i, py + 2 (t - 1 - a), px + 2 (t - 1 - b)] (0 past k).
    wp = F.pad(weight, [0, 2 * t - k, 0, 2 * t - k])  # [Cout, Cin, 2t, 2t]
    taps = torch.tensor([p + 2 * (t - 1 - a) for p in range(2) for a in range(t)], device=weight.device)
    wp = wp.index_select(2, taps).index_select(3, taps)  # [Cout, Cin, (py, a), (px, b)]
    return wp.reshape(cout, cin, 2, t, 2, t).permute(2, 4, 0, 1, 3, 5).reshape(4 * cout, cin, t, t)


def up2_fir(y: torch.Tensor, k: int, f: torch.Tensor) -> torch.Tensor:
    """The FIR filtering (gain 4) after a stride-2 transposed convolution with a k x k kernel: [N, C, 2H + k - 2,
    2W + k - 2] -> [N, C, 2H, 2W]."""
    # Remaining FIR padding so that the output is exactly 2H x 2W (1 on each side for k=3 and a 4-tap filter).
    fk, pad = f.shape[-1], k // 2
    p0 = pad + (fk + 1) // 2 - (k - 1)
    p1 = pad + (fk - 2) // 2 - (k - 2)
    return fir2d(y, f, (p0, p1, p0, p1), gain=4.0)


def _conv3x3_up2_zero_insertion(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The textbook form: zero insertion (to 2H-1 samples), padding by k-1 and a conv2d with the spatially flipped
    kernel; ``zero_insert2x`` leaves one extra trailing zero, so the trailing pad is k-2."""
    k = weight.shape[-1]
    xz = F.pad(zero_insert2x(x), [k - 1, k - 2, k - 1, k - 2])
    # torch.flip exports as a negative-step Slice, which fails in ORT training; flip by indexing instead.
    idx = torch.arange(k - 1, -1, -1, device=weight.device)
    w = weight.index_select(2, idx).index_select(3, idx)
    return up2_fir(conv2d(xz, w), k, f)  # conv: [N, Cout, 2H+1, 2W+1]


# ----------------------------------------------------------------------------
# Gathers


def gather_rc(feat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Features at integer positions. ``feat`` [C, H, W], ``rows``/``cols`` int64 [...] -> [C, ...]."""
    c, h, w = feat.shape
    flat = feat.reshape(c, h * w)
    idx = (rows * w + cols).reshape(-1)
    return flat[:, idx].reshape(c, *rows.shape)
