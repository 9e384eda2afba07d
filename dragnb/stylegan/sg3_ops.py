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
        return x[:, :, ::stride, ::stride] if stride > 1 else (x * gain if gain != 1 else x)
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


def filtered_lrelu(x, b, fu, fd, up: int, down: int, padding, gain: float, slope: float, clamp: float | None):
    """Bias, ``up``-fold FIR up-sampling (gain ``up^2``), leaky ReLU (``slope``) x ``gain`` clamped to +-``clamp``,
    FIR low-pass with ``fd`` and ``down``-fold decimation.

    ``padding`` = (left, right, top, bottom), applied after the zero insertion (negative values crop): it
    places the samples on the symmetric grid of the paper's appendix C.3 and sets the output size.
    """
    x = x + b.reshape(1, -1, 1, 1)
    x = _pad_or_crop(zero_insert(x, up), padding)
    x = fir_filter(x, fu, gain=float(up * up))
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return fir_filter(x, fd, stride=down)
