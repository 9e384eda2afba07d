"""From a state dict with NVIDIA's G_ema names to our :class:`Generator`: config inference and checks.

Shared by the NVIDIA-pickle, rosinality and plain-state-dict loaders. Shapes decide the layout
(mapping depth and widths, label embedding, resolutions, channels, non-square StyleGAN-Human
output, architecture); hyper-parameters that shapes cannot show (mapping lr multiplier,
conv_clamp) come from the caller's hints.
"""

from __future__ import annotations

import re

import torch

from ..stylegan.build import build_generator
from ..stylegan.networks import Generator, GeneratorConfig
from ..stylegan.ops import fir_filter_2d
from .errors import UnsupportedArchitectureError

PREFERRED_CHANNEL_BASES = (32768, 16384)


def drop_resample_filters(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Remove the derived ``*.resample_filter`` buffers after checking they are the standard [1,3,3,1] FIR.

    Our generator rebuilds them; a different filter would change the images, so it is refused.
    """
    ref = fir_filter_2d()
    out = {}
    for k, v in sd.items():
        if k.endswith("resample_filter"):
            if v.shape != ref.shape or not torch.allclose(v.float(), ref, atol=1e-6):
                raise UnsupportedArchitectureError(f"{source}: {k} is not the standard [1, 3, 3, 1] filter")
            continue
        out[k] = v
    return out


def _channel_params(ch: dict[int, int], base_hint, max_hint, source: str) -> tuple[int, int]:
    """(channel_base, channel_max) with ``min(base // r, max) == ch[r]`` for every block resolution r."""

    def fits(base, cmax):
        return all(min(base // r, cmax) == c for r, c in ch.items())

    if base_hint is not None and max_hint is not None and fits(int(base_hint), int(max_hint)):
        return int(base_hint), int(max_hint)
    cmax = max(ch.values())
    lo, hi = 1, None
    for r, c in ch.items():
        if c == cmax:
            lo = max(lo, c * r)
        else:
            lo, hi = max(lo, c * r), min(hi if hi is not None else c * r + r - 1, c * r + r - 1)
    for base in (*PREFERRED_CHANNEL_BASES, lo):
        if base >= lo and (hi is None or base <= hi) and fits(base, cmax):
            return base, cmax
    raise UnsupportedArchitectureError(
        f"{source}: channel counts {ch} do not follow min(channel_base // res, channel_max)"
    )


def config_from_state_dict(
    sd: dict[str, torch.Tensor],
    source: str,
    *,
    mapping_lr_multiplier: float = 0.01,
    conv_clamp: float | None = None,
    architecture: str | None = None,
    channel_base: int | None = None,
    channel_max: int | None = None,
    z_dim: int | None = None,
    img_resolution: int | None = None,
) -> GeneratorConfig:
    """Infer a :class:`GeneratorConfig` from tensor shapes (``resample_filter`` buffers already dropped).

    Shapes read: ``mapping.fc{i}.weight`` [out, in], ``mapping.embed.weight`` [embed, c_dim],
    ``synthesis.b4.const`` [C, 4, 4 * width / height], ``synthesis.b{r}.conv1.weight`` [C_r, C_r, 3, 3],
    ``synthesis.b{R}.torgb.weight`` [img_channels, C_R, 1, 1].
    """
    def need(key):
        if key not in sd:
            raise UnsupportedArchitectureError(f"{source}: not a StyleGAN2 generator (no {key})")
        return sd[key]

    fcs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    if not fcs or fcs != list(range(len(fcs))):
        raise UnsupportedArchitectureError(f"{source}: not a StyleGAN2 generator (mapping layers {fcs})")
    n_fc = len(fcs)
    fc0 = need("mapping.fc0.weight")
    w_dim = need(f"mapping.fc{n_fc - 1}.weight").shape[0]
    if "mapping.embed.weight" in sd:
        embed, c_dim = sd["mapping.embed.weight"].shape
    else:
        embed, c_dim = 0, 0
    z = fc0.shape[1] - embed
    if z_dim is not None and z_dim != z:
        raise UnsupportedArchitectureError(f"{source}: z_dim {z_dim} does not match the mapping weights ({z})")
    hidden = fc0.shape[0] if n_fc > 1 else w_dim

    res = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    top = res[-1] if res else 0
    if not res or res != [2**i for i in range(2, top.bit_length())]:
        raise UnsupportedArchitectureError(f"{source}: not a StyleGAN2 synthesis network (blocks {res})")
    if img_resolution is not None and img_resolution != top:
        raise UnsupportedArchitectureError(f"{source}: img_resolution {img_resolution} but blocks up to {top}")
    const = need("synthesis.b4.const")  # [C, 4, w4]
    if const.ndim != 3 or const.shape[1] != 4 or const.shape[2] not in (1, 2, 4):
        raise UnsupportedArchitectureError(f"{source}: unexpected const shape {list(const.shape)}")
    img_width = None if const.shape[2] == 4 else top * const.shape[2] // 4
    ch = {4: const.shape[0], **{r: need(f"synthesis.b{r}.conv1.weight").shape[0] for r in res if r > 4}}
    img_channels = need(f"synthesis.b{top}.torgb.weight").shape[0]

    if architecture is None:
        if any(k.endswith(".skip.weight") for k in sd):
            architecture = "resnet"
        elif all(f"synthesis.b{r}.torgb.weight" not in sd for r in res[:-1]):
            architecture = "orig" if len(res) > 1 else "skip"
        else:
            architecture = "skip"
    base, cmax = _channel_params(ch, channel_base, channel_max, source)
    return GeneratorConfig(
        z_dim=z, w_dim=w_dim, c_dim=c_dim, img_resolution=top, img_width=img_width, img_channels=img_channels,
        mapping_layers=n_fc, mapping_lr_multiplier=float(mapping_lr_multiplier),
        mapping_embed_features=(embed if c_dim and embed != w_dim else None),
        mapping_layer_features=(hidden if hidden != w_dim else None),
        channel_base=base, channel_max=cmax, architecture=architecture,
        conv_clamp=None if conv_clamp is None else float(conv_clamp), normalize_z=True,
    )


def generator_from_state_dict(sd: dict[str, torch.Tensor], cfg, source: str) -> Generator:
    """Build the generator of ``cfg`` (StyleGAN2 or StyleGAN3) and load ``sd`` strictly (float32); eval, no grad."""
    G = build_generator(cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad = sorted(k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or bad:
        detail = "; ".join(
            f"{label}: {names[:4]}{' ...' if len(names) > 4 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad))
            if names
        )
        kind = "StyleGAN3" if cfg.architecture == "stylegan3" else "StyleGAN2"
        raise UnsupportedArchitectureError(f"{source}: not a {kind} generator we can reproduce ({detail})")
    G.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
    return G.eval().requires_grad_(False)
