"""From a state dict with NVIDIA's G_ema names to our :class:`Generator`: config inference and checks.

Shared by the NVIDIA-pickle, rosinality and plain-state-dict loaders. Shapes decide the layout
(mapping depth and widths, label embedding, resolutions, channels, non-square StyleGAN-Human
output, architecture); hyper-parameters that shapes cannot show (mapping lr multiplier,
conv_clamp) come from the caller's hints.

Values may be tensors or records of tensors not read yet (``TensorRef``, ``SafetensorsRef``: anything with
``.shape`` and ``.materialize()``): the config is inferred and checked (``limits.py``) from shapes alone,
and tensors are materialised only once their names and shapes are those of the checked config.
"""

from __future__ import annotations

import re

import torch

from ..stylegan.build import build_generator
from ..stylegan.networks import Generator, GeneratorConfig
from ..stylegan.ops import fir_filter_2d
from .errors import CheckpointError, LimitExceededError, UnsupportedArchitectureError, brief
from .limits import (
    MAX_CHANNELS,
    MAX_ELEMENTS,
    MAX_RESOLUTION,
    check_finite,
    check_state_dict,
    check_tensor_shapes,
    checked_config,
    shape_of,
)

PREFERRED_CHANNEL_BASES = (32768, 16384)


def as_tensor(v, name: str, source) -> torch.Tensor:
    """A tensor, or a tensor record (``.materialize()``) read now; anything else is refused."""
    if isinstance(v, torch.Tensor):
        return v
    if hasattr(v, "materialize") and hasattr(v, "shape"):
        return v.materialize()
    raise CheckpointError(f"{source}: {brief(name)} is a {type(v).__name__}, not a tensor")


def drop_resample_filters(sd: dict, source: str) -> dict:
    """Remove the derived ``*.resample_filter`` buffers after checking they are the standard [1,3,3,1] FIR.

    Our generator rebuilds them; a different filter would change the images, so it is refused.
    """
    check_state_dict(sd, source)
    ref = fir_filter_2d()
    out = {}
    for k, v in sd.items():
        if k.endswith("resample_filter"):
            ok = shape_of(v) == tuple(ref.shape) and torch.allclose(as_tensor(v, k, source).float(), ref, atol=1e-6)
            if not ok:
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


def _hint_int(v, name: str, source):
    """An integer hint from a file's attributes (None: no hint); numpy integers arrive as Python ints."""
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise CheckpointError(f"{source}: {name} is {brief(v)}, not an integer")
    return v


def _need(sd: dict, key: str, ndim: int, source: str) -> tuple[int, ...]:
    """The shape of ``sd[key]``, which must exist and have ``ndim`` dimensions."""
    if key not in sd:
        raise UnsupportedArchitectureError(f"{source}: not a StyleGAN2 generator (no {key})")
    shape = shape_of(sd[key])
    if len(shape) != ndim:
        raise UnsupportedArchitectureError(f"{source}: {key} has shape {list(shape)}, expected {ndim} dimensions")
    return shape


def _mapping_config(sd: dict, source: str, z_dim: int | None) -> dict:
    """The mapping network's config fields, from ``mapping.fc{i}.weight`` [out, in] and
    ``mapping.embed.weight`` [embed, c_dim]."""
    fcs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d{1,4})\.weight", k)))
    if not fcs or fcs != list(range(len(fcs))):
        raise UnsupportedArchitectureError(f"{source}: not a StyleGAN2 generator (mapping layers {brief(fcs)})")
    n_fc = len(fcs)
    fc0 = _need(sd, "mapping.fc0.weight", 2, source)
    w_dim = _need(sd, f"mapping.fc{n_fc - 1}.weight", 2, source)[0]
    if "mapping.embed.weight" in sd:
        embed, c_dim = _need(sd, "mapping.embed.weight", 2, source)
    else:
        embed, c_dim = 0, 0
    z = fc0[1] - embed
    if z_dim is not None and z_dim != z:
        raise UnsupportedArchitectureError(f"{source}: z_dim {z_dim} does not match the mapping weights ({z})")
    hidden = fc0[0] if n_fc > 1 else w_dim
    return dict(
        z_dim=z, w_dim=w_dim, c_dim=c_dim, mapping_layers=n_fc,
        mapping_embed_features=(embed if c_dim and embed != w_dim else None),
        mapping_layer_features=(hidden if hidden != w_dim else None),
    )


def _synthesis_shapes(sd: dict, source: str, img_resolution: int | None):
    """(block resolutions, channels per block, image width or None when square, image channels) from
    ``synthesis.b4.const`` [C, 4, 4 * width / height], ``synthesis.b{r}.conv1.weight`` [C_r, C_r, 3, 3] and
    ``synthesis.b{R}.torgb.weight`` [img_channels, C_R, 1, 1]."""
    res = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d{1,5})\.conv1\.weight", k)))
    top = res[-1] if res else 0
    if not res or res != [2**i for i in range(2, top.bit_length())]:
        raise UnsupportedArchitectureError(f"{source}: not a StyleGAN2 synthesis network (blocks {brief(res)})")
    if img_resolution is not None and img_resolution != top:
        raise UnsupportedArchitectureError(f"{source}: img_resolution {img_resolution} but blocks up to {top}")
    const = _need(sd, "synthesis.b4.const", 3, source)  # [C, 4, w4]
    if const[1] != 4 or const[2] not in (1, 2, 4):
        raise UnsupportedArchitectureError(f"{source}: unexpected const shape {list(const)}")
    img_width = None if const[2] == 4 else top * const[2] // 4
    ch = {4: const[0], **{r: _need(sd, f"synthesis.b{r}.conv1.weight", 4, source)[0] for r in res if r > 4}}
    img_channels = _need(sd, f"synthesis.b{top}.torgb.weight", 4, source)[0]
    return res, ch, img_width, img_channels


def _guess_architecture(sd: dict, res: list[int]) -> str:
    """Skip connections mean resnet; a ToRGB only at the top block means orig (unless it is the only block)."""
    if any(k.endswith(".skip.weight") for k in sd):
        return "resnet"
    if all(f"synthesis.b{r}.torgb.weight" not in sd for r in res[:-1]):
        return "orig" if len(res) > 1 else "skip"
    return "skip"


def _check_synthesis_limits(ch: dict[int, int], source: str) -> None:
    top = max(ch)
    if top > MAX_RESOLUTION:
        raise LimitExceededError(f"{source}: blocks up to {top} px (at most {MAX_RESOLUTION} accepted)")
    for r, c in ch.items():
        if not 1 <= c <= MAX_CHANNELS:
            raise LimitExceededError(f"{source}: the {r} px block has {c} channels (1 .. {MAX_CHANNELS} accepted)")


def config_from_state_dict(
    sd: dict,
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
    """Infer a :class:`GeneratorConfig` from tensor shapes (``resample_filter`` buffers already dropped),
    checked against ``limits.py``; nothing is materialised.

    Shapes read: ``mapping.fc{i}.weight`` [out, in], ``mapping.embed.weight`` [embed, c_dim],
    ``synthesis.b4.const`` [C, 4, 4 * width / height], ``synthesis.b{r}.conv1.weight`` [C_r, C_r, 3, 3],
    ``synthesis.b{R}.torgb.weight`` [img_channels, C_R, 1, 1].
    """
    check_state_dict(sd, source)
    channel_base, channel_max = _hint_int(channel_base, "channel_base", source), _hint_int(
        channel_max, "channel_max", source)
    z_dim, img_resolution = _hint_int(z_dim, "z_dim", source), _hint_int(img_resolution, "img_resolution", source)
    mapping = _mapping_config(sd, source, z_dim)
    res, ch, img_width, img_channels = _synthesis_shapes(sd, source, img_resolution)
    if architecture is None:
        architecture = _guess_architecture(sd, res)
    _check_synthesis_limits(ch, source)
    base, cmax = _channel_params(ch, channel_base, channel_max, source)
    return checked_config(dict(
        **mapping, img_resolution=res[-1], img_width=img_width, img_channels=img_channels,
        mapping_lr_multiplier=mapping_lr_multiplier,
        channel_base=base, channel_max=cmax, architecture=architecture,
        conv_clamp=conv_clamp, normalize_z=True,
    ), source)


def generator_from_state_dict(sd: dict, cfg, source: str, budget: int = MAX_ELEMENTS) -> Generator:
    """Build the generator of ``cfg`` (StyleGAN2 or StyleGAN3) and load ``sd`` strictly (float32); eval, no grad.

    Names and shapes are checked against ``cfg`` (and the generator's size against ``budget`` elements)
    before anything is materialised or allocated; the weights must be finite."""
    check_state_dict(sd, source)
    check_tensor_shapes(sd, cfg, source, budget, error=UnsupportedArchitectureError)
    tensors = {k: as_tensor(v, k, source) for k, v in sd.items()}
    check_finite(tensors, source)
    G = build_generator(cfg)
    G.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return G.eval().requires_grad_(False)
