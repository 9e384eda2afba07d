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
from .errors import CheckpointError, MissingNetworkError, UnsupportedArchitectureError
from .safe_pickle import (
    CONTAINER_ALLOW,
    LEGACY_HEAD,
    NUMPY_ALLOW,
    TENSOR_ALLOW,
    Namespace,
    load_legacy_torch,
    load_torch_zip,
    materialize,
)
from .state_dict import config_from_state_dict, generator_from_state_dict

W_AVG_SAMPLES = 4096  # rosinality's mean_latent uses 4096 samples too


def read_torch_file(path: str | os.PathLike):
    """A ``torch.save`` file (zip or legacy) read by the allowlist reader; tensors as TensorRef."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_HEAD))
    if head == LEGACY_HEAD:
        allow = {**CONTAINER_ALLOW, **TENSOR_ALLOW, **NUMPY_ALLOW, ("argparse", "Namespace"): Namespace}
        try:
            return load_legacy_torch(Path(path).read_bytes(), allow)
        except CheckpointError as e:
            raise type(e)(f"{path}: {e}") from None
    return load_torch_zip(path)


def _rosinality_to_nvidia(src: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename (and reshape) a rosinality ``g_ema`` state dict to NVIDIA's G_ema names."""
    out: dict[str, torch.Tensor] = {}
    blur = fir_filter_2d() * 4  # rosinality stores the up-sampling kernel with its x4 gain
    for k, v in src.items():
        if k.endswith(".kernel"):
            if v.shape != blur.shape or not torch.allclose(v.float(), blur, atol=1e-5):
                raise UnsupportedArchitectureError(f"{source}: {k} is not the standard [1, 3, 3, 1] blur")
            continue
        if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", k):
            out[f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"] = v
            continue
        if k == "input.input":
            out["synthesis.b4.const"] = v[0]
            continue
        if m := re.fullmatch(r"noises\.noise_(\d+)", k):
            n = int(m.group(1))
            layer = "b4.conv1" if n == 0 else f"b{2 ** ((n + 1) // 2 + 2)}.conv{1 - n % 2}"
            out[f"synthesis.{layer}.noise_const"] = v.reshape(v.shape[-2:])
            continue
        if m := re.fullmatch(r"(conv1|to_rgb1|convs\.(\d+)|to_rgbs\.(\d+))\.(.+)", k):
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
                raise UnsupportedArchitectureError(f"{source}: unexpected rosinality tensor {k}")
            if name == "weight":
                v = v[0]  # [1, O, I, k, k] -> [O, I, k, k]
            elif name in ("noise_strength",):
                v = v.reshape([])
            elif name == "bias":
                v = v.reshape(-1)
            out[f"synthesis.{layer}.{name}"] = v
            continue
        raise UnsupportedArchitectureError(f"{source}: unexpected rosinality tensor {k}")
    return out


def is_rosinality(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict)


def generator_from_rosinality(obj: dict, source: str) -> Generator:
    """``{'g_ema': ..., 'latent_avg'?: ...}`` (TensorRef or tensors) -> Generator (eval mode, no grad)."""
    g = obj.get("g_ema") if isinstance(obj, dict) else None
    if not isinstance(g, dict):
        raise MissingNetworkError(f"{source}: no 'g_ema' state dict in this rosinality checkpoint")
    sd = materialize(dict(g))
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: 'g_ema' holds non-tensor values")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    sd = _rosinality_to_nvidia(sd, source)
    latent_avg = obj.get("latent_avg")
    estimated = latent_avg is None
    fcs = [int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k))]
    if not fcs:
        raise UnsupportedArchitectureError(f"{source}: no mapping network (style.*) in g_ema")
    w_dim = sd[f"mapping.fc{max(fcs)}.weight"].shape[0]
    sd["mapping.w_avg"] = torch.zeros(w_dim) if estimated else materialize(latent_avg).reshape(-1).float()
    # rosinality: lr_mlp 0.01, no conv clamp, skip architecture, z normalised (PixelNorm).
    cfg = config_from_state_dict(sd, source, mapping_lr_multiplier=0.01, conv_clamp=None, architecture="skip")
    G = generator_from_state_dict(sd, cfg, source)
    if estimated:
        # No stored average: estimate it as rosinality's mean_latent does, with a fixed seed.
        gen = torch.Generator().manual_seed(0)
        z = torch.randn([W_AVG_SAMPLES, cfg.z_dim], generator=gen)
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    return G


def load_rosinality(path: str | os.PathLike) -> Generator:
    """A rosinality ``.pt`` checkpoint -> our Generator (eval mode, no grad)."""
    obj = read_torch_file(path)
    if not is_rosinality(obj):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise MissingNetworkError(f"{path}: not a rosinality checkpoint (no 'g_ema'; found {keys})")
    return generator_from_rosinality(obj, str(path))


__all__ = ["generator_from_rosinality", "is_rosinality", "load_rosinality", "read_torch_file"]
