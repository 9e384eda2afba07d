"""The signal processing of StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"),
in ops ONNX Runtime's CPU training build can differentiate (see ``ops.py``): Conv, constant Pad, Reshape, Slice.

* Low-pass FIR design (paper, appendix C): a Kaiser-windowed sinc for the separable filters of config T, and a
  Kaiser-windowed jinc (the radially symmetric ideal low-pass, ``J1(2 pi fc r) / (pi r)``) for the
  down-sampling filters of config R. Checkpoints carry the filters as buffers; the design here is what a
  freshly built network uses, and what loaded buffers are checked against.
* The filtered nonlinearity (paper, section 3.2 and appendix D): bias, ``up``-fold up-sampling (zero insertion +
  FIR), leaky ReLU with gain and clamp at the higher rate, FIR low-pass and ``down``-fold decimation. The
  up-sampling is a zero insertion followed by an ordinary convolution (no Resize, no ConvTranspose); the
  decimation is a strided convolution.

Filters are symmetric (both designs are linear-phase), so correlation (what conv2d computes) equals
convolution and no kernel is flipped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Filter design


def kaiser_beta(numtaps: int, width: float, fs: float) -> float:
    """Kaiser's empirical formulas: the attenuation a ``numtaps``-tap filter reaches over a transition band
    ``width`` (Hz at sampling rate ``fs``), and the window's beta for it."""
    atten = 2.285 * (numtaps - 1) * math.pi * (width / (fs / 2)) + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """A low-pass FIR of ``numtaps`` taps with cutoff ``cutoff`` and transition band ``width`` at rate ``fs``,
    normalised to unit DC gain; None for one tap (the identity). 1-D (separable) or, ``radial``, 2-D."""
    if numtaps == 1:
        return None
    window = np.kaiser(numtaps, kaiser_beta(numtaps, width, fs))
    t = np.arange(numtaps) - (numtaps - 1) / 2  # tap positions in samples, symmetric around 0
    if not radial:
        rel = cutoff / (fs / 2)
        f = rel * np.sinc(rel * t) * window
        return torch.as_tensor(f / f.sum(), dtype=torch.float32)
    r = torch.as_tensor(np.hypot(*np.meshgrid(t / fs, t / fs)), dtype=torch.float64)  # even numtaps: r > 0
    f = (torch.special.bessel_j1(2 * math.pi * cutoff * r) / (math.pi * r)).numpy() * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


# ----------------------------------------------------------------------------
# Filtering


def _pad_or_crop(x: torch.Tensor, pad) -> torch.Tensor:
    """Pad (positive) or crop (negative) the last two axes by ``pad`` = (left, right, top, bottom)."""
    x = F.pad(x, [max(p, 0) for p in pad])
    l_, r_, t_, b_ = (max(-p, 0) for p in pad)
    if l_ or r_ or t_ or b_:
        x = x[:, :, t_ : x.shape[2] - b_, l_ : x.shape[3] - r_]
    return x


def zero_insert(x: torch.Tensor, up: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, up H, up W]: each sample followed by ``up - 1`` zeros along both axes."""
    if up == 1:
        return x
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1])
    return x.reshape(n, c, h * up, w * up)


def fir_filter(x: torch.Tensor, f: torch.Tensor | None, gain: float = 1.0, stride: int = 1) -> torch.Tensor:
    """Filter every channel of ``x`` [N, C, H, W] with ``f`` (valid part only) and keep every ``stride``-th output.

    1-D ``f`` [k] is applied separably (rows, then columns: 2k instead of k^2 products per pixel); 2-D ``f``
    [k, k] as one kernel. A depthwise convolution (groups = C): PyTorch's CPU kernels run it some 40 times
    faster than the same filter as a single-channel convolution over the channels folded into the batch.
    """
    if f is None:
        x = x[:, :, ::stride, ::stride] if stride > 1 else x
        return x * gain if gain != 1 else x
    c = int(x.shape[1])
    f = f.to(x.dtype)
    if f.ndim == 1:
        g = math.sqrt(gain)
        x = _depthwise(x, (f * g).reshape(1, 1, 1, -1), c, (1, stride))
        return _depthwise(x, (f * g).reshape(1, 1, -1, 1), c, (stride, 1))
    return _depthwise(x, (f * gain)[None, None], c, (stride, stride))


def _depthwise(x, weight, c: int, stride):
    # Plain Conv, not ops.conv2d: its ONNX training-export hook takes square stride-1 one-group kernels only.
    return F.conv2d(x, weight.expand(c, 1, *weight.shape[2:]), stride=stride, groups=c)


def upsample_1d(x: torch.Tensor, f: torch.Tensor, up: int, pad_lo: int, pad_hi: int, dim: int) -> torch.Tensor:
    """Along ``dim`` (2: rows, 3: columns) of ``x`` [N, C, H, W]: zero insertion by ``up``, padding by
    (``pad_lo``, ``pad_hi``) (negative: cropping) and the FIR ``f`` [k] with gain ``up``, in polyphase form.

    Output sample ``up q + r`` only meets the taps ``f[up i + b_r]`` (``b_r = (pad_lo - r) mod up``) against the
    input samples ``x[q + s_r + i]`` (``s_r = -floor((pad_lo - r) / up)``): the ``up`` phases are ``up`` short
    filters of ``x`` itself, run as ONE grouped convolution with ``up`` outputs per channel (their different
    start offsets as leading/trailing zero taps) and interleaved. No product with an inserted zero is computed:
    ``up`` times less work than filtering the zero-inserted signal.
    """
    n_in, k, c = int(x.shape[dim]), int(f.shape[0]), int(x.shape[1])
    out_len = n_in * up + pad_lo + pad_hi - k + 1
    starts = [-((pad_lo - r) // up) for r in range(up)]
    s_min, width = min(starts), -(-k // up) + max(starts) - min(starts)
    # Phase r's taps at positions starts[r] - s_min + i; the index k points at an appended zero.
    idx = [[k] * width for _ in range(up)]
    for r in range(up):
        b = (pad_lo - r) % up
        for i in range(-(-(k - b) // up)):
            idx[r][starts[r] - s_min + i] = up * i + b
    taps = torch.cat([f.to(x.dtype) * up, f.new_zeros(1).to(x.dtype)])[torch.tensor(idx, device=x.device)]
    q = -(-out_len // up)  # outputs per phase
    pad = [-s_min, q + s_min + width - 1 - n_in]  # so that x[q + s_min + i] exists for every q, i (zeros outside)
    shape = [1, 1, 1, width] if dim == 3 else [1, 1, width, 1]
    xp = _pad_or_crop(x, pad + [0, 0] if dim == 3 else [0, 0] + pad)
    y = F.conv2d(xp, taps.repeat(c, 1).reshape([c * up] + shape[1:]), groups=c)  # [N, C * up, ...]
    n = int(x.shape[0])
    if dim == 3:
        h = int(y.shape[2])
        y = y.reshape(n, c, up, h, q).permute(0, 1, 3, 4, 2).reshape(n, c, h, q * up)
        return y[:, :, :, :out_len]
    w = int(y.shape[3])
    y = y.reshape(n, c, up, q, w).permute(0, 1, 3, 2, 4).reshape(n, c, q * up, w)
    return y[:, :, :out_len, :]


def filtered_lrelu(x, b, fu, fd, up: int, down: int, padding, gain: float, slope: float, clamp: float | None):
    """Bias, ``up``-fold FIR up-sampling (gain ``up^2``), leaky ReLU (``slope``) x ``gain`` clamped to +-``clamp``,
    FIR low-pass with ``fd`` and ``down``-fold decimation.

    ``padding`` = (left, right, top, bottom), applied after the zero insertion (negative values crop): it
    places the samples on the symmetric grid of the paper's appendix C.3 and sets the output size.
    """
    x = x + b.reshape(1, -1, 1, 1)
    if fu is not None and fu.ndim == 1:  # separable: rows first (on the H input rows only), then columns
        x = upsample_1d(x, fu, up, padding[0], padding[1], dim=3)
        x = upsample_1d(x, fu, up, padding[2], padding[3], dim=2)
    else:
        x = fir_filter(_pad_or_crop(zero_insert(x, up), padding), fu, gain=float(up * up))
    # clamp(gain * lrelu(x), c) = gain * clamp(lrelu(x), c / gain), and the down filter is linear: the gain rides
    # on its taps (one pass less over the largest tensor of the layer, at the nonlinearity's higher rate).
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if clamp is not None:
        x = x.clamp(-clamp / gain, clamp / gain)
    return fir_filter(x, fd, gain=gain, stride=down)
