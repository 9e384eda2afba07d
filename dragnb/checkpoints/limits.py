"""What a checkpoint may declare, checked before anything of the declared size is allocated.

Every loader ends in :func:`checked_config` (the generator's hyper-parameters, whether read from our
metadata or inferred from tensor shapes) and :func:`check_tensor_shapes` (the tensors' names and shapes
against the ones ``Generator(cfg)`` would have, computed by arithmetic in :func:`expected_shapes`), and only
then materialises tensors and builds the generator. So a tiny file cannot make the loader allocate a large
network: the generator is never bigger than the tensors the file really holds, and those are bounded by
the file's size (:func:`element_budget`).

The limits leave a margin of 2x to 4x over the largest StyleGAN2/3 generators released:

=========================================  ==========================  =======================
quantity                                    accepted                    largest real ones
=========================================  ==========================  =======================
``img_resolution``                          power of two, 4 .. 4096     1024
``img_resolution / img_width``              1, 2 or 4                   2 (StyleGAN-Human)
``img_channels``                            1 .. 4                      3
``z_dim``, ``w_dim``, mapping features      1 .. 2048                   512
``c_dim`` (label size)                      0 .. 10000                  1000 (ImageNet)
``mapping_layers``                          1 .. 32                     8
channels of any block                       1 .. 2048                   512 (1024 in a few)
``channel_base``                            1 .. 2**23                  32768
``mapping_lr_multiplier``                   finite, 1e-5 .. 100         0.01
``conv_clamp``                              None or finite, (0, 1e6]    256
tensor elements (weights + buffers)         <= 5e8 and <= file bytes    about 3e7
=========================================  ==========================  =======================

"elements <= file bytes" holds for every genuine file (a stored element takes at least 2 bytes) and stops a
small file from describing a big generator through shared storages or broadcast views.
Weights must also be finite (:func:`check_finite`): a NaN anywhere makes every image NaN.
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch

from ..stylegan.build import build_generator
from ..stylegan.networks import ARCHITECTURES, GeneratorConfig
from ..stylegan.sg3 import ARCHITECTURE as STYLEGAN3
from ..stylegan.sg3 import StyleGAN3Config
from .errors import CheckpointError, InvalidValueError, LimitExceededError, brief

MAX_RESOLUTION = 4096
MAX_ASPECT = 4            # img_resolution // img_width
MAX_IMG_CHANNELS = 4
MAX_DIM = 2048            # z_dim, w_dim, mapping_layer_features, mapping_embed_features
MAX_C_DIM = 10_000
MAX_MAPPING_LAYERS = 32
MAX_CHANNELS = 2048
MAX_CHANNEL_BASE = 2**23
LR_MULTIPLIER_RANGE = (1e-5, 100.0)
MAX_CONV_CLAMP = 1e6
MAX_ELEMENTS = 500_000_000
MAX_TENSORS = 10_000       # entries of a state dict (a 1024 px StyleGAN2 has about 300)
MAX_NAME = 200             # characters of a tensor name (real ones are under 50)
MAX_NDIM = 8
MAX_SG3_LAYERS = 64       # synthesis layers of a StyleGAN3 (NVIDIA's have 14)
MAX_SG3_FILTER = 64       # taps of its FIR filters (6 in every release)


# A rule returns None for an accepted value, else (error class, what is wrong).


def _int_rule(lo, hi, optional=False):
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            return CheckpointError, f"must be an integer, got {brief(v)}"
        if not lo <= v <= hi:
            return LimitExceededError, f"must be in [{lo}, {hi}], got {brief(v)}"
        return None

    return check


def _float_rule(lo, hi, optional=False, open_lo=False):
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return CheckpointError, f"must be a number, got {brief(v)}"
        if not math.isfinite(v) or (v <= lo if open_lo else v < lo) or v > hi:
            return InvalidValueError, f"must be finite and in {'(' if open_lo else '['}{lo:g}, {hi:g}], got {v!r}"
        return None

    return check


def _resolution(v):
    bad = _int_rule(4, MAX_RESOLUTION)(v)
    if bad is None and v & (v - 1):
        bad = LimitExceededError, f"must be a power of two, got {v}"
    return bad


def _choice(options):
    def check(v):
        return None if isinstance(v, str) and v in options else (
            CheckpointError, f"must be one of {options}, got {brief(v)}")

    return check


def _bool(v):
    return None if isinstance(v, bool) else (CheckpointError, f"must be true or false, got {brief(v)}")


RULES = {
    "z_dim": _int_rule(1, MAX_DIM),
    "w_dim": _int_rule(1, MAX_DIM),
    "c_dim": _int_rule(0, MAX_C_DIM),
    "img_resolution": _resolution,
    "img_width": _int_rule(1, MAX_RESOLUTION, optional=True),
    "img_channels": _int_rule(1, MAX_IMG_CHANNELS),
    "mapping_layers": _int_rule(1, MAX_MAPPING_LAYERS),
    "mapping_lr_multiplier": _float_rule(*LR_MULTIPLIER_RANGE),
    "mapping_embed_features": _int_rule(1, MAX_DIM, optional=True),
    "mapping_layer_features": _int_rule(1, MAX_DIM, optional=True),
    "channel_base": _int_rule(1, MAX_CHANNEL_BASE),
    "channel_max": _int_rule(1, MAX_CHANNELS),
    "architecture": _choice(ARCHITECTURES),
    "conv_clamp": _float_rule(0, MAX_CONV_CLAMP, optional=True, open_lo=True),
    "normalize_z": _bool,
}


def checked_config(d, source) -> GeneratorConfig:
    """A :class:`GeneratorConfig` from the dict ``d`` (our metadata's config, or one inferred from shapes),
    after checking every value's type and range (see the table above); raises :class:`CheckpointError`."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: the generator config is not an object (got {type(d).__name__})")
    fields = {f.name: f for f in dataclasses.fields(GeneratorConfig)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise CheckpointError(f"{source}: unknown generator config keys {brief(unknown)}")
    values = {}
    for name, field in fields.items():
        default = field.default if field.default is not dataclasses.MISSING else None
        v = d.get(name, default)
        rule = RULES.get(name)
        # A config field this module has no rule for is accepted only at its default value.
        bad = rule(v) if rule is not None else (None if v == default else (CheckpointError, "is not accepted"))
        if bad:
            raise bad[0](f"{source}: generator config {name} {bad[1]}")
        values[name] = float(v) if name in ("mapping_lr_multiplier", "conv_clamp") and v is not None else v
    res, width = values["img_resolution"], values["img_width"] or values["img_resolution"]
    if width > res or res % width or (res // width) & (res // width - 1) or res // width > MAX_ASPECT:
        raise LimitExceededError(f"{source}: img_width {width} must be img_resolution {res} divided by 1, 2 or 4")
    cfg = GeneratorConfig(**values)
    for r in cfg.block_resolutions:
        c = cfg.channels(r)
        if not 1 <= c <= MAX_CHANNELS:
            raise LimitExceededError(
                f"{source}: the {r} px block would have {c} channels (channel_base {cfg.channel_base}, "
                f"channel_max {cfg.channel_max}); accepted: 1 .. {MAX_CHANNELS}"
            )
    return cfg


def checked_any_config(d, source):
    """:func:`checked_config` for a StyleGAN2 config dict, :func:`checked_stylegan3_config` for a StyleGAN3 one."""
    if isinstance(d, dict) and d.get("architecture") == STYLEGAN3:
        return checked_stylegan3_config(d, source)
    return checked_config(d, source)


def checked_stylegan3_config(d: dict, source) -> StyleGAN3Config:
    """A :class:`StyleGAN3Config` from ``d`` within the limits of the table above (StyleGAN3Config itself refuses
    hyper-parameters that give no valid layer geometry)."""
    for name, hi in (("z_dim", MAX_DIM), ("w_dim", MAX_DIM), ("c_dim", MAX_C_DIM), ("img_resolution", MAX_RESOLUTION),
                     ("img_channels", MAX_IMG_CHANNELS), ("mapping_layers", MAX_MAPPING_LAYERS),
                     ("channel_max", MAX_CHANNELS), ("channel_base", MAX_CHANNEL_BASE),
                     ("num_layers", MAX_SG3_LAYERS), ("filter_size", MAX_SG3_FILTER)):
        v = d.get(name)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= hi):
            raise LimitExceededError(f"{source}: StyleGAN3 config {name} must be in [0, {hi}], got {brief(v)}")
    try:
        return StyleGAN3Config.from_dict(d)
    except (TypeError, ValueError, KeyError, ArithmeticError) as e:
        raise CheckpointError(f"{source}: invalid StyleGAN3 config: {brief(str(e))}") from None


def expected_shapes(cfg, budget: int = MAX_ELEMENTS) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the generator's ``state_dict()`` for ``cfg``: by arithmetic for StyleGAN2 (nothing is
    allocated); for StyleGAN3 see :func:`_stylegan3_shapes`.

    Mirrors ``dragnb.stylegan.networks``; ``tests/test_checkpoint_limits.py`` compares the two."""
    if isinstance(cfg, StyleGAN3Config):
        return _stylegan3_shapes(cfg, budget)
    shapes: dict[str, tuple[int, ...]] = {}
    w = cfg.w_dim

    def fc(prefix, n_in, n_out):
        shapes[f"{prefix}.weight"] = (n_out, n_in)
        shapes[f"{prefix}.bias"] = (n_out,)

    embed = (cfg.mapping_embed_features or w) if cfg.c_dim else 0
    if cfg.c_dim:
        fc("mapping.embed", cfg.c_dim, embed)
    hidden = cfg.mapping_layer_features or w
    feats = [cfg.z_dim + embed] + [hidden] * (cfg.mapping_layers - 1) + [w]
    for i in range(cfg.mapping_layers):
        fc(f"mapping.fc{i}", feats[i], feats[i + 1])
    shapes["mapping.w_avg"] = (w,)

    def layer(prefix, c_in, c_out, res, width):
        fc(f"{prefix}.affine", w, c_in)
        shapes[f"{prefix}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"{prefix}.bias"] = (c_out,)
        shapes[f"{prefix}.noise_strength"] = ()
        shapes[f"{prefix}.noise_const"] = (res, width)

    for res in cfg.block_resolutions:
        pre = f"synthesis.b{res}"
        width = res * cfg.width // cfg.img_resolution
        c_out = cfg.channels(res)
        c_in = cfg.channels(res // 2) if res > 4 else 0
        if res == 4:
            shapes[f"{pre}.const"] = (c_out, 4, width)
        else:
            layer(f"{pre}.conv0", c_in, c_out, res, width)
        layer(f"{pre}.conv1", c_out, c_out, res, width)
        if res == cfg.img_resolution or cfg.architecture == "skip":
            fc(f"{pre}.torgb.affine", w, c_out)
            shapes[f"{pre}.torgb.weight"] = (cfg.img_channels, c_out, 1, 1)
            shapes[f"{pre}.torgb.bias"] = (cfg.img_channels,)
        if res > 4 and cfg.architecture == "resnet":
            shapes[f"{pre}.skip.weight"] = (c_out, c_in, 1, 1)
    return shapes


def _stylegan3_shapes(cfg: StyleGAN3Config, budget: int) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of a StyleGAN3 generator. Its filter design needs real tensors, so it is built on the
    CPU, but only after its size, from the layer specs by arithmetic, fits ``budget`` elements."""
    w = cfg.w_dim
    n = sum(sp.out_channels * sp.in_channels * sp.conv_kernel**2 + (w + 1) * sp.in_channels + sp.out_channels
            for sp in cfg.layer_specs())
    n += cfg.mapping_layers * (max(cfg.z_dim, w) + 1) * w + cfg.c_dim * w
    if n > budget:
        raise LimitExceededError(f"a StyleGAN3 of about {n} weights, more than the file can hold ({budget}); refused")
    return {k: tuple(v.shape) for k, v in build_generator(cfg).state_dict().items()}


def element_budget(path) -> int:
    """How many tensor elements a file of this size may hold (see the module docstring)."""
    try:
        size = os.path.getsize(path)
    except (OSError, TypeError):
        return MAX_ELEMENTS
    return min(MAX_ELEMENTS, size)


def shape_of(v) -> tuple:
    """The shape of a tensor or of a not-yet-materialised tensor record, as a tuple of ints."""
    return tuple(int(n) for n in v.shape)


def check_state_dict(sd, source, what: str = "state dict") -> None:
    """A dict of at most :data:`MAX_TENSORS` entries whose keys are short strings (before any name parsing)."""
    if not isinstance(sd, dict):
        raise CheckpointError(f"{source}: the {what} is a {type(sd).__name__}, not a dict")
    if len(sd) > MAX_TENSORS:
        raise LimitExceededError(f"{source}: the {what} has {len(sd)} entries (at most {MAX_TENSORS} accepted)")
    for k in sd:
        if not isinstance(k, str) or len(k) > MAX_NAME:
            raise CheckpointError(f"{source}: the {what} has a key that is not a tensor name: {brief(k)}")


def count_elements(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def check_budget(shapes, source, budget: int, what: str = "the tensors") -> None:
    """Refuse when ``shapes`` hold more elements than ``budget`` (see :func:`element_budget`)."""
    n = count_elements(shapes)
    if n > budget:
        raise LimitExceededError(
            f"{source}: {what} declare {n} elements, more than this file can hold ({budget}); refused"
        )


def check_tensor_shapes(sd: dict, cfg, source, budget: int = MAX_ELEMENTS,
                        error: type[CheckpointError] = CheckpointError) -> None:
    """``sd`` (tensors or records with ``.shape``) has exactly ``Generator(cfg)``'s names and shapes (else
    ``error``), and the generator fits the element budget; raises before anything is allocated."""
    expected = expected_shapes(cfg, budget)
    check_budget(expected.values(), source, budget, "the generator's tensors")
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad = sorted(k for k in expected if k in sd and shape_of(sd[k]) != expected[k])
    if missing or unexpected or bad:
        detail = "; ".join(
            f"{label}: {brief(names, depth=1, items=4)}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad))
            if names
        )
        if bad:
            k = bad[0]
            detail += f" ({k} is {list(shape_of(sd[k]))}, expected {list(expected[k])})"
        raise error(f"{source}: the generator config does not match the tensors ({detail})")


def check_finite(tensors: dict[str, torch.Tensor], source) -> None:
    """Every tensor is floating point and holds no NaN or infinity."""
    for k, t in tensors.items():
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {k} holds {t.dtype} values, not floating point weights")
        if not bool(torch.isfinite(t).all()):
            raise InvalidValueError(f"{source}: {k} holds NaN or infinite values; every image would be wrong")
