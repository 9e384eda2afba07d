"""Reconstruction losses for projection and pivotal tuning: pixel L2 plus a perceptual term.

Images are torch tensors [N, 3, H, W] in the generator's range (about [-1, 1]).

- ``l2``: mean squared error.
- ``ms-ssim`` (the offline perceptual term, no weights to download): ``1 - SSIM`` averaged over scales
  (the image, then 2x average-pooled copies down to about 16 px), Gaussian window (sigma 1.5, 7 taps), per
  colour channel, stability constants for a data range of 2. It sees structure (edges, contrast) where L2 sees
  only colour, which is what makes a projection's parts line up.
- ``lpips-vgg``: the VGG LPIPS of Zhang et al. 2018 (``lpips.py``), used where the user has its weights.

``perceptual="auto"`` (the default) picks ``lpips-vgg`` when both of its weight files are in the user models
folder (hash-verified; a wrong file raises ``LPIPSWeightsError``) and ``ms-ssim`` otherwise; ``.perceptual`` and
``.name`` say which ran.

Every op here (grouped Conv, AveragePool, arithmetic) has a CPU gradient in ONNX Runtime training, so the same
module is part of the ORT tuning graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SSIM_SIGMA, SSIM_TAPS = 1.5, 7
SSIM_MIN_SIZE = 16     # the coarsest scale is the last one with at least this many pixels on its short side
DATA_RANGE = 2.0       # images in [-1, 1]
C1, C2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2


def gaussian_window(taps: int = SSIM_TAPS, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """float32 [taps]: normalised 1-D Gaussian."""
    x = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def num_scales(height: int, width: int, min_size: int = SSIM_MIN_SIZE) -> int:
    """How many 2x-pooled scales of an H x W image keep the short side >= ``min_size`` (at least 1)."""
    return max(1, int(math.floor(math.log2(max(min(height, width), 1) / min_size))) + 1)


class MultiScaleSSIM(nn.Module):
    """``1 - mean over scales of SSIM(x, y)``: 0 for equal images; the window is a fixed buffer."""

    def __init__(self, channels: int = 3, scales: int = 4):
        super().__init__()
        g = gaussian_window()
        k = (g[:, None] * g[None, :])[None, None].repeat(channels, 1, 1, 1)  # [C, 1, t, t]
        self.register_buffer("window", k, persistent=False)
        self.channels, self.scales = channels, scales

    def _blur(self, x):
        return F.conv2d(x, self.window, groups=self.channels)  # valid convolution: no padding artefacts

    def ssim(self, x, y):
        mx, my = self._blur(x), self._blur(y)
        sxx = self._blur(x * x) - mx * mx
        syy = self._blur(y * y) - my * my
        sxy = self._blur(x * y) - mx * my
        s = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))
        return s.mean()

    def forward(self, x, y):
        total = 0.0
        for i in range(self.scales):
            if i:
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            total = total + self.ssim(x, y)
        return 1.0 - total / self.scales


PERCEPTUAL = ("auto", "ms-ssim", "lpips-vgg", "none")


def resolve_perceptual(perceptual: str, lpips: nn.Module | None = None) -> str:
    """The perceptual term that runs for ``perceptual`` (one of :data:`PERCEPTUAL`): "auto" becomes "lpips-vgg"
    when an LPIPS module is given or its weights are in the user models folder, else "ms-ssim"."""
    if perceptual not in PERCEPTUAL:
        raise ValueError(f"perceptual must be one of {', '.join(PERCEPTUAL)}, got {perceptual!r}")
    if perceptual != "auto":
        return perceptual
    from .lpips import find_weights

    return "lpips-vgg" if lpips is not None or find_weights() is not None else "ms-ssim"


class ReconstructionLoss(nn.Module):
    """``l2_weight * L2 + perceptual_weight * perceptual``; ``forward(img, target)`` ([N, 3, H, W], about
    [-1, 1]) returns (total, l2, perceptual), scalars.

    Args:
        height, width: the image size (sets the structural term's number of scales).
        perceptual: "auto" (LPIPS where the user has its weights, else ms-ssim), "ms-ssim" (offline),
            "lpips-vgg" (``lpips``, else :func:`~dragnb.projection.lpips.load_lpips` from the user models folder:
            an ``LPIPSWeightsError`` if the files are missing or not the right ones), or "none".
        lpips: an :class:`~dragnb.projection.lpips.LPIPS` to use (with "lpips-vgg" or "auto").
    """

    def __init__(self, height: int, width: int, l2_weight: float = 1.0, perceptual: str = "auto",
                 perceptual_weight: float = 0.1, lpips: nn.Module | None = None):
        super().__init__()
        self.kind = resolve_perceptual(perceptual, lpips)
        self.l2_weight, self.perceptual_weight = float(l2_weight), float(perceptual_weight)
        if self.kind == "lpips-vgg" and lpips is None:
            from .lpips import load_lpips

            lpips = load_lpips()
        self.term = {"ms-ssim": lambda: MultiScaleSSIM(3, num_scales(height, width)), "lpips-vgg": lambda: lpips,
                     "none": lambda: None}[self.kind]()

    @property
    def perceptual(self) -> str:
        """The perceptual term that runs: "lpips-vgg", "ms-ssim" or "none"."""
        return self.kind

    @property
    def name(self) -> str:
        """What runs, e.g. "1 l2 + 0.1 ms-ssim"."""
        if self.term is None:
            return "l2"
        return f"{self.l2_weight:g} l2 + {self.perceptual_weight:g} {self.kind}"

    def forward(self, img, target):
        l2 = (img - target).square().mean()
        if self.term is None:
            return self.l2_weight * l2, l2, torch.zeros_like(l2)
        p = self.term(img, target)
        return self.l2_weight * l2 + self.perceptual_weight * p, l2, p


def psnr(img, target) -> float:
    """PSNR in dB of two uint8 images (numpy) or two [-1, 1] tensors (peak = the full range)."""
    import numpy as np

    if isinstance(img, torch.Tensor):
        mse = float(((img.detach().clamp(-1, 1) - target) / 2).square().mean())
    else:
        mse = float(np.mean((np.asarray(img, np.float64) - np.asarray(target, np.float64)) ** 2)) / 255.0**2
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
