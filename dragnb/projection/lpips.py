"""VGG LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), the
v0.1 "lin" variant, in plain torch from the paper's definition, with the user's weights verified by SHA-256.

For images x, y [N, 3, H, W] in [-1, 1]:

1. scaling layer: ``(x - shift) / scale`` per channel (:data:`SHIFT`, :data:`SCALE`: ImageNet statistics
   expressed for [-1, 1] input);
2. VGG16's convolution trunk (torchvision's ``features``, 3x3 convolutions, ReLU, 2x2 max-pooling); the
   activations after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (:data:`TAPS`, C = 64, 128, 256, 512, 512);
3. each tap's feature vector per pixel divided by its Euclidean norm over the channels (unit length);
4. the squared difference of the two images' unit features, weighted per channel by the layer's non-negative
   1x1 "lin" head (no bias), summed over the channels and averaged over the pixels;
5. summed over the five layers: distance [N] (0 for equal images).

Weights (none are bundled or downloaded; the user puts two files in the user models folder, ``$DRAGNB_MODELS`` or
``~/.cache/dragnb/models``, or passes their paths):

- :data:`VGG_FILE` = torchvision's ImageNet VGG16, ``vgg16-397923af.pth`` (528 MB). Verified as torchvision
  itself verifies it: the SHA-256 of the file must begin with the 8 hex digits in its name (:data:`VGG_SHA256_PREFIX`).
- :data:`HEADS_FILE` = the lpips package's ``lpips/weights/v0.1/vgg.pth`` (7 kB), renamed. Verified by its full
  SHA-256 (:data:`HEADS_SHA256`, that of the file in the lpips 0.1.4 wheel on PyPI).

A file whose hash differs, that is not a plain tensor file, or whose tensors have other names or shapes, raises
:class:`LPIPSWeightsError` and nothing is loaded. The files are read with ``torch.load(weights_only=True)``
(tensors only, never arbitrary pickled objects).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import torch
from torch import nn

from ..fileio import user_models_dir

NAME = "lpips-vgg"
VGG_FILE = "vgg16-397923af.pth"
VGG_SHA256_PREFIX = "397923af"
HEADS_FILE = "lpips-vgg-v0.1.pth"
HEADS_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"
# VGG16's convolution trunk as torchvision numbers it: channels of each 3x3 convolution, "M" a 2x2 max-pool
# (the last pool is not needed: relu5_3 is the deepest tap).
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # the unit-normalisation's guard: sqrt(|f|^2 + EPS^2) keeps a finite gradient where f = 0


class LPIPSWeightsError(ValueError):
    """LPIPS weight files that are missing, of the wrong hash, or not the expected tensors."""


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to relu5_3 (indices 0-29, so its state-dict keys load as they are)."""
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """VGG LPIPS v0.1 (see the module docstring). ``forward(x, y)``: [N, 3, H, W] in [-1, 1] (H, W >= 16) ->
    the mean distance over the batch, a scalar; :meth:`distance` gives it per image, [N]. Weights are frozen."""

    name = NAME

    def __init__(self):
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def taps(self, x) -> list[torch.Tensor]:
        """The five unit-normalised feature maps of ``x`` [N, 3, H, W] in [-1, 1]: [N, C_l, H_l, W_l] each."""
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features[: TAPS[-1] + 1]):
            h = layer(h)
            if i in TAPS:
                out.append(h / torch.sqrt(h.square().sum(1, keepdim=True) + EPS**2))
        return out

    def distance(self, x, y) -> torch.Tensor:
        """float [N]: LPIPS of each pair of images."""
        total = 0.0
        for lin, fx, fy in zip(self.lins, self.taps(x), self.taps(y)):
            total = total + lin((fx - fy).square()).mean(dim=(1, 2, 3))
        return total

    def forward(self, x, y):
        return self.distance(x, y).mean()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(path: Path, what: str, expected: str, prefix_only: bool) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LPIPSWeightsError(f"{what}: {path} is not a file")
    digest = sha256_file(path)
    if not (digest.startswith(expected) if prefix_only else digest == expected):
        want = f"starting with {expected}" if prefix_only else expected
        raise LPIPSWeightsError(f"{what}: {path} has SHA-256 {digest}, expected {want}: not the file LPIPS needs")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same refusal
        raise LPIPSWeightsError(f"{what}: {path} is not a tensor file ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LPIPSWeightsError(f"{what}: {path} does not hold a dict of tensors")
    return sd


def _state_dict(vgg: dict, heads: dict) -> dict[str, torch.Tensor]:
    """Our module's state dict from torchvision's VGG16 keys (``features.<i>.weight``) and the lpips package's
    head keys (``lin<k>.model.1.weight``: its heads are a dropout, then the 1x1 convolution)."""
    sd = {k: v for k, v in vgg.items() if k.startswith("features.")}
    sd.update({f"lins.{k}.weight": heads.get(f"lin{k}.model.1.weight") for k in range(len(TAPS))})
    return sd


def build(vgg: dict, heads: dict) -> LPIPS:
    """An :class:`LPIPS` with the given tensors; names and shapes are checked (:class:`LPIPSWeightsError`)."""
    m = LPIPS()
    sd, want = _state_dict(vgg, heads), m.state_dict()
    bad = [k for k, v in want.items() if not isinstance(sd.get(k), torch.Tensor) or sd[k].shape != v.shape]
    if bad:
        raise LPIPSWeightsError(f"the weight files lack or misshape {len(bad)} LPIPS tensors, e.g. {bad[:3]}")
    m.load_state_dict({k: sd[k].float() for k in want})
    if any(float(lin.weight.min()) < 0 for lin in m.lins):
        raise LPIPSWeightsError("LPIPS heads must be non-negative")
    return m.eval()


def weights_dir() -> Path:
    """The user models folder (:func:`dragnb.fileio.user_models_dir`)."""
    return user_models_dir()


def find_weights(folder=None) -> tuple[Path, Path] | None:
    """(VGG16 file, heads file) in ``folder`` (default :func:`weights_dir`), None if neither is there; one
    without the other raises :class:`LPIPSWeightsError` (a half-installed LPIPS is a mistake to report)."""
    folder = Path(folder) if folder is not None else weights_dir()
    vgg, heads = folder / VGG_FILE, folder / HEADS_FILE
    if not vgg.exists() and not heads.exists():
        return None
    if not (vgg.exists() and heads.exists()):
        have, lack = (vgg, heads) if vgg.exists() else (heads, vgg)
        raise LPIPSWeightsError(f"LPIPS needs both {VGG_FILE} and {HEADS_FILE} in {folder}: found {have.name}, "
                                f"not {lack.name}")
    return vgg, heads


_CACHE: dict[tuple, LPIPS] = {}
_LOCK = threading.Lock()


def load_lpips(vgg=None, heads=None, folder=None) -> LPIPS:
    """The LPIPS module from the two weight files: the given paths, else those in ``folder`` (default
    :func:`weights_dir`). Both are hash-verified before anything is loaded. Loaded once per file version (path,
    size, mtime) and shared: the module is frozen, never trained."""
    where = Path(folder) if folder is not None else weights_dir()
    if vgg is None and heads is None and find_weights(where) is None:
        raise LPIPSWeightsError(f"no LPIPS weights in {where}: put {VGG_FILE} and {HEADS_FILE} there")
    vgg = Path(vgg) if vgg is not None else where / VGG_FILE  # a missing one is reported by _read
    heads = Path(heads) if heads is not None else where / HEADS_FILE
    key = tuple((os.fspath(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else os.fspath(p)
                for p in (vgg, heads))
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one VGG16 (528 MB) in memory at most
            _CACHE[key] = build(_read(vgg, "VGG16 weights", VGG_SHA256_PREFIX, True),
                                _read(heads, "LPIPS heads", HEADS_SHA256, False))
        return _CACHE[key]
