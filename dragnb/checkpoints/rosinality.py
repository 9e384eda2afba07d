"""rosinality/stylegan2-pytorch checkpoints (``.pt``: ``{'g_ema': state_dict, 'latent_avg'?: [w_dim], ...}``).

The file is read by our allowlist torch reader (zip or legacy format), which also accepts the
``argparse.Namespace`` that training checkpoints store as ``args`` (``torch.load(weights_only=True)``
refuses it on torch < 2.5), and mapped to NVIDIA's names:

=================================  =========================================
rosinality                          ours (NVIDIA G_ema)
=================================  =========================================
``style.{j+1}.weight|bias``         ``mapping.fc{j}.weight|bias``
``input.input`` [1, C, 4, 4]        ``synthesis.b4.const`` [C, 4, 4]
``conv1.*``                         ``synthesis.b4.conv1.*``
``convs.{2i}`` / ``convs.{2i+1}``   ``synthesis.b{2^(i+3)}.conv0`` / ``.conv1``
``to_rgb1`` / ``to_rgbs.{i}``       ``synthesis.b4.torgb`` / ``synthesis.b{2^(i+3)}.torgb``
``*.conv.weight`` [1, O, I, k, k]   ``*.weight`` [O, I, k, k]
``*.conv.modulation.*``             ``*.affine.*``
``*.noise.weight`` [1]              ``*.noise_strength`` []
``*.activate.bias``                 ``*.bias``
``to_rgb*.bias`` [1, 3, 1, 1]       ``*.torgb.bias`` [3]
``noises.noise_0`` / ``_{2i+1}``    ``b4.conv1.noise_const`` / ``b{2^(i+3)}.conv0.noise_const``
 / ``_{2i+2}`` [1, 1, r, r]          / ``.conv1.noise_const`` [r, r]
``latent_avg``                      ``mapping.w_avg``
=================================  =========================================

The math is the same as NVIDIA's (equalised lr with the mapping lr multiplier 0.01, biases init 1 in
the modulation, transposed conv + [1,3,3,1] blur x4 for up-sampling, same padding), so the weights
are used as they are. Blur kernels (``*.kernel`` buffers) are derived and dropped after a check.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..stylegan.networks import Generator
from ..stylegan.ops import fir_filter_2d
from .errors import (
    CheckpointError,
    MissingNetworkError,
    UnsupportedArchitectureError,
    brief,
    brief_keys,
    loader_boundary,
)
from .limits import MAX_ELEMENTS, check_budget, element_budget, shape_of
from .safe_pickle import CONTAINER_ALLOW, NUMPY_ALLOW, TENSOR_ALLOW, Namespace, TensorRef, tensor_records
from .state_dict import as_tensor, config_from_state_dict, generator_from_state_dict
from .torch_files import LEGACY_HEAD, load_legacy_torch, load_torch_zip

W_AVG_SAMPLES = 4096  # rosinality's mean_latent uses 4096 samples too


@loader_boundary
def read_torch_file(path: str | os.PathLike):
    """A ``torch.save`` file (zip or legacy) read by the allowlist reader; tensors as TensorRef."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_HEAD))
    if head == LEGACY_HEAD:
        allow = {**CONTAINER_ALLOW, **TENSOR_ALLOW, **NUMPY_ALLOW, ("argparse", "Namespace"): Namespace}
        return load_legacy_torch(Path(path).read_bytes(), allow, path)
    return load_torch_zip(path)


def _rank(v, k: str, source, ndim: int, lead: int | None = None) -> None:
    """Refuse a tensor of the wrong rank (or leading size) before reshaping it."""
    shape = shape_of(v)
    if len(shape) != ndim or (lead is not None and shape[0] != lead):
        raise UnsupportedArchitectureError(f"{source}: rosinality tensor {k} has shape {list(shape)}")


def _rosinality_to_nvidia(src: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename (and reshape) a rosinality ``g_ema`` state dict to NVIDIA's G_ema names."""
    out: dict[str, torch.Tensor] = {}
    blur = fir_filter_2d() * 4  # rosinality stores the up-sampling kernel with its x4 gain
    for k, v in src.items():
        if k.endswith(".kernel"):
            if v.shape != blur.shape or not torch.allclose(v.float(), blur, atol=1e-5):
                raise UnsupportedArchitectureError(f"{source}: {k} is not the standard [1, 3, 3, 1] blur")
            continue
        if m := re.fullmatch(r"style\.(\d{1,3})\.(weight|bias)", k):
            out[f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"] = v
            continue
        if k == "input.input":
            _rank(v, k, source, 4, lead=1)
            out["synthesis.b4.const"] = v[0]
            continue
        if m := re.fullmatch(r"noises\.noise_(\d{1,3})", k):
            n = int(m.group(1))
            _rank(v, k, source, 4)
            if v.shape[:2] != (1, 1):
                raise UnsupportedArchitectureError(f"{source}: rosinality tensor {k} has shape {list(v.shape)}")
            layer = "b4.conv1" if n == 0 else f"b{2 ** ((n + 1) // 2 + 2)}.conv{1 - n % 2}"
            out[f"synthesis.{layer}.noise_const"] = v.reshape(v.shape[-2:])
            continue
        if m := re.fullmatch(r"(conv1|to_rgb1|convs\.(\d{1,3})|to_rgbs\.(\d{1,3}))\.(.+)", k):
            head, conv_i, rgb_i, rest = m.groups()
            if head == "conv1":
                layer = "b4.conv1"
            elif head == "to_rgb1":
                layer = "b4.torgb"
            elif conv_i is not None:
                i = int(conv_i)
                layer = f"b{2 ** (i // 2 + 3)}.conv{i % 2}"
            else:
                layer = f"b{2 ** (int(rgb_i) + 3)}.torgb"
            name = {
                "conv.weight": "weight", "conv.modulation.weight": "affine.weight",
                "conv.modulation.bias": "affine.bias", "noise.weight": "noise_strength",
                "activate.bias": "bias", "bias": "bias",
            }.get(rest)
            if name is None:
                raise UnsupportedArchitectureError(f"{source}: unexpected rosinality tensor {brief(k)}")
            if name == "weight":
                _rank(v, k, source, 5, lead=1)
                v = v[0]  # [1, O, I, k, k] -> [O, I, k, k]
            elif name in ("noise_strength",):
                if v.numel() != 1:
                    raise UnsupportedArchitectureError(f"{source}: rosinality tensor {k} is not a scalar")
                v = v.reshape([])
            elif name == "bias":
                v = v.reshape(-1)
            out[f"synthesis.{layer}.{name}"] = v
            continue
        raise UnsupportedArchitectureError(f"{source}: unexpected rosinality tensor {brief(k)}")
    return out


def is_rosinality(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict)


def generator_from_rosinality(obj: dict, source: str, budget: int = MAX_ELEMENTS) -> Generator:
    """``{'g_ema': ..., 'latent_avg'?: ...}`` (TensorRef or tensors) -> Generator (eval mode, no grad).

    The tensors' total size is checked against ``budget`` elements before any is materialised."""
    g = obj.get("g_ema") if isinstance(obj, dict) else None
    if not isinstance(g, dict):
        raise MissingNetworkError(f"{source}: no 'g_ema' state dict in this rosinality checkpoint")
    refs = tensor_records(g, source, "g_ema")
    latent_avg = obj.get("latent_avg")
    estimated = latent_avg is None
    if not (estimated or isinstance(latent_avg, (TensorRef, torch.Tensor))):
        raise CheckpointError(f"{source}: latent_avg is a {type(latent_avg).__name__}, not a tensor")
    check_budget([shape_of(v) for v in refs.values()] + ([] if estimated else [shape_of(latent_avg)]), source,
                 budget, "g_ema and latent_avg")
    sd = {k.removeprefix("module."): as_tensor(v, k, source) for k, v in refs.items()}
    sd = _rosinality_to_nvidia(sd, source)
    # rosinality: lr_mlp 0.01, no conv clamp, skip architecture, z normalised (PixelNorm). The config is
    # inferred and checked before w_avg (of size w_dim, which only a checked config vouches for) is made.
    cfg = config_from_state_dict(sd, source, mapping_lr_multiplier=0.01, conv_clamp=None, architecture="skip")
    sd["mapping.w_avg"] = (torch.zeros(cfg.w_dim) if estimated
                           else as_tensor(latent_avg, "latent_avg", source).reshape(-1))
    G = generator_from_state_dict(sd, cfg, source, budget)
    if estimated:
        # No stored average: estimate it as rosinality's mean_latent does, with a fixed seed.
        gen = torch.Generator().manual_seed(0)
        z = torch.randn([W_AVG_SAMPLES, cfg.z_dim], generator=gen)
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    return G


@loader_boundary
def load_rosinality(path: str | os.PathLike) -> Generator:
    """A rosinality ``.pt`` checkpoint -> our Generator (eval mode, no grad); any file it cannot load raises
    :class:`CheckpointError`."""
    obj = read_torch_file(path)
    if not is_rosinality(obj):
        keys = brief_keys(obj) if isinstance(obj, dict) else type(obj).__name__
        raise MissingNetworkError(f"{path}: not a rosinality checkpoint (no 'g_ema'; found {keys})")
    return generator_from_rosinality(obj, str(path), element_budget(path))


__all__ = ["generator_from_rosinality", "is_rosinality", "load_rosinality", "read_torch_file"]
