"""StyleGAN3 (alias-free) generators in NVIDIA pickles, read without executing anything from the file.

Called by ``nvidia.py`` with the ``G_ema`` record already walked (``_walk``: tensors under their dotted names, the
module records by path). What is read from where (docs/checkpoints.md):

* ``G_ema._init_kwargs`` (and ``synthesis._init_kwargs``): the hyper-parameters that exist only as constructor
  arguments: ``channel_base``, ``channel_max``, ``first_cutoff``, ``first_stopband``, ``last_stopband_rel``,
  ``filter_size``, ``lrelu_upsampling``, ``use_radial_filters`` (NVIDIA's defaults when absent);
* module attributes: ``z_dim``, ``w_dim``, ``c_dim``, ``img_resolution``, ``img_channels`` (G_ema);
  ``num_layers``, ``num_critical``, ``margin_size``, ``output_scale``, ``layer_names`` (synthesis);
  ``conv_kernel``, ``conv_clamp`` (layers); ``bias_gain`` (= the mapping's lr multiplier, ``mapping.fc0``);
* tensors: every parameter and persistent buffer, NVIDIA's names = ours (FIR filters, ``magnitude_ema``, the
  input's ``freqs``, ``phases`` and ``transform``, ``w_avg``).

The layer geometry our network derives from the config (sizes, sampling rates, cutoffs, half-widths, up/down
factors, filter taps, radial filters, padding, channels) is then checked against every layer's stored attributes:
a network built differently is refused by name (:class:`UnsupportedArchitectureError`), never run differently.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ..stylegan.sg3 import StyleGAN3Config
from .errors import CheckpointError, UnsupportedArchitectureError
from .limits import MAX_ELEMENTS, check_tensor_shapes
from .safe_pickle import NumpyArray

# Constructor arguments that change nothing we compute (training-only, or fp16 use on GPUs: we run fp32).
IGNORED_KWARGS = {"magnitude_ema_beta", "num_fp16_res", "w_avg_beta", "mapping_kwargs", "synthesis_kwargs",
                  "class_name", "z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"}
FROM_KWARGS = ("channel_base", "channel_max", "first_cutoff", "first_stopband", "last_stopband_rel", "filter_size",
               "lrelu_upsampling", "use_radial_filters", "conv_kernel", "conv_clamp", "num_layers", "num_critical",
               "margin_size", "output_scale")
# Bounds on what a file may ask us to allocate before its tensors are checked against the config.
LIMITS = {"z_dim": 4096, "w_dim": 4096, "c_dim": 4096, "img_resolution": 4096, "img_channels": 4,
          "channel_base": 1 << 20, "channel_max": 4096, "num_layers": 64, "margin_size": 64, "filter_size": 64,
          "lrelu_upsampling": 8, "mapping_layers": 32}

# Layer attribute -> LayerSpec field, compared after the config is built.
LAYER_ATTRS = {
    "is_torgb": "is_torgb", "in_channels": "in_channels", "out_channels": "out_channels", "in_size": "in_size",
    "out_size": "out_size", "in_sampling_rate": "in_rate", "out_sampling_rate": "out_rate",
    "in_cutoff": "in_cutoff", "out_cutoff": "out_cutoff", "in_half_width": "in_half_width",
    "out_half_width": "out_half_width", "conv_kernel": "conv_kernel", "up_factor": "up", "down_factor": "down",
    "up_taps": "up_taps", "down_taps": "down_taps", "down_radial": "down_radial", "padding": "padding",
}


def _value(v, source: str, what: str):
    """A stored attribute as a plain number / bool / tuple of numbers; CheckpointError for anything else."""
    if isinstance(v, NumpyArray):
        v = v.array
    if isinstance(v, np.ndarray):
        if v.size > 4 or v.dtype.kind not in "iuf":
            raise CheckpointError(f"{source}: malformed StyleGAN3 attribute {what}")
        v = tuple(v.reshape(-1).tolist())
    if isinstance(v, (list, tuple)):
        if len(v) > 4 or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v):
            raise CheckpointError(f"{source}: malformed StyleGAN3 attribute {what}")
        return tuple(v)
    if v is None or isinstance(v, (bool, numbers.Real)):
        return v
    raise CheckpointError(f"{source}: malformed StyleGAN3 attribute {what} ({type(v).__name__})")


def _same(stored, expected) -> bool:
    if isinstance(stored, tuple) and not isinstance(expected, tuple):  # sizes are stored as [width, height]
        return len(stored) in (1, 2) and all(_same(s, expected) for s in stored)
    if isinstance(expected, tuple):
        return isinstance(stored, tuple) and len(stored) == len(expected) and all(map(_same, stored, expected))
    if isinstance(expected, bool) or isinstance(stored, bool) or stored is None:
        return stored == expected
    return math.isclose(float(stored), float(expected), rel_tol=1e-9, abs_tol=1e-12)


def _state(rec) -> dict:
    return rec.state if rec is not None else {}


def stylegan3_config(G, modules: dict, source: str) -> StyleGAN3Config:
    """The config of a StyleGAN3 ``G_ema`` record (see the module docstring for what is read from where)."""
    syn = _state(modules.get("synthesis"))
    kw = {**(G.state.get("_init_kwargs") or {}), **(syn.get("_init_kwargs") or {})}
    if not isinstance(kw, dict):
        raise CheckpointError(f"{source}: malformed constructor arguments")
    unknown = sorted(str(k) for k in kw if k not in IGNORED_KWARGS and k not in FROM_KWARGS)
    if unknown:
        raise UnsupportedArchitectureError(f"{source}: StyleGAN3 options dragnb does not reproduce: {unknown}")
    layers = [k for k in modules if k.startswith("synthesis.L")]
    if not layers or "mapping" not in modules or "synthesis.input" not in modules:
        raise UnsupportedArchitectureError(f"{source}: a StyleGAN3-like G_ema without input, layers or mapping")
    first = _state(modules[layers[0]])
    d = {k: _value(kw[k], source, k) for k in FROM_KWARGS if k in kw}
    for k in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"):
        d[k] = _value(G.state.get(k, kw.get(k)), source, k)
    for k in ("num_layers", "num_critical", "margin_size", "output_scale"):
        if k in syn:
            d[k] = _value(syn[k], source, f"synthesis.{k}")
    for k in ("conv_kernel", "conv_clamp"):
        if k in first:
            d[k] = _value(first[k], source, f"{layers[0]}.{k}")
    fcs = [k for k in modules if k.startswith("mapping.fc")]
    d["mapping_layers"] = len(fcs)
    lr = _value(_state(modules.get("mapping.fc0")).get("bias_gain", 0.01), source, "mapping.fc0.bias_gain")
    d["mapping_lr_multiplier"] = lr
    for k in [*fcs, "mapping.embed", "synthesis.input.affine"]:
        act = _state(modules.get(k)).get("activation", "lrelu" if k in fcs else "linear")
        if act != ("lrelu" if k in fcs else "linear"):
            raise UnsupportedArchitectureError(f"{source}: StyleGAN3 {k} uses activation {act!r}")
    for k, v in d.items():
        if v is None and k != "conv_clamp":
            raise UnsupportedArchitectureError(f"{source}: the StyleGAN3 network does not say its {k}")
        if k in LIMITS and not (isinstance(v, numbers.Integral) and 0 <= v <= LIMITS[k]):
            raise UnsupportedArchitectureError(f"{source}: {k}={v!r} is out of the range dragnb runs")
    try:
        cfg = StyleGAN3Config(**d)
    except (TypeError, ValueError) as e:
        raise UnsupportedArchitectureError(f"{source}: not a StyleGAN3 network dragnb can build ({e})") from None
    check_layers(cfg, modules, source)
    return cfg


def check_layers(cfg: StyleGAN3Config, modules: dict, source: str) -> None:
    """Every stored layer attribute equals what ``cfg`` derives, and the layers are the ones it builds."""
    specs = cfg.layer_specs()
    names = {k.split(".", 1)[1] for k in modules if k.count(".") == 1 and k.startswith("synthesis.")}
    expected = {"input"} | {s.name for s in specs}
    if names != expected:
        raise UnsupportedArchitectureError(
            f"{source}: synthesis layers {sorted(names - expected)[:4]} found, {sorted(expected - names)[:4]} "
            "expected: a StyleGAN3 layout dragnb does not reproduce")
    for spec in specs:
        st = modules[f"synthesis.{spec.name}"].state
        for attr, field in LAYER_ATTRS.items():
            if attr in st and not _same(_value(st[attr], source, attr), getattr(spec, field)):
                raise UnsupportedArchitectureError(
                    f"{source}: synthesis.{spec.name}.{attr} = {_value(st[attr], source, attr)}, but the network "
                    f"dragnb builds from its hyper-parameters has {getattr(spec, field)}")
    cutoffs, rates, _, sizes, channels = cfg.bands()
    inp = modules["synthesis.input"].state
    for attr, want in (("channels", channels[0]), ("size", sizes[0]), ("sampling_rate", rates[0]),
                       ("bandwidth", cutoffs[0])):
        if attr in inp and not _same(_value(inp[attr], source, attr), float(want)):
            raise UnsupportedArchitectureError(f"{source}: synthesis.input.{attr} = {inp[attr]}, expected {want}")


def extract_stylegan3(G, refs: dict, modules: dict, source: str, progress: bool = False,
                      budget: int = MAX_ELEMENTS):
    """(tensors under our names, :class:`StyleGAN3Config`) of a StyleGAN3 ``G_ema`` record; the names and shapes
    are checked against the config, and the size against ``budget`` elements, before any tensor is made."""
    cfg = stylegan3_config(G, modules, source)
    check_tensor_shapes(refs, cfg, source, budget, error=UnsupportedArchitectureError)
    items = refs.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(refs), desc="tensors", unit="t")
    tensors: dict[str, torch.Tensor] = {k: ref.materialize() for k, ref in items}
    return tensors, cfg
