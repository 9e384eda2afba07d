"""NVIDIA network pickles (stylegan2-ada-pytorch, the StyleGAN2 nets of the stylegan3 release,
StyleGAN-Human), read without executing anything from the file.

Layout (docs/checkpoints.md): a pickled dict with ``G``, ``D``, ``G_ema``, ...
whose networks are calls ``torch_utils.persistence._reconstruct_persistent_obj(meta)``; ``meta`` holds
the defining module's source (``module_src``, never executed here), ``class_name`` and ``state`` (the
module's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, attributes, ``_init_kwargs``).
Storages are ``torch.storage._load_from_bytes(blob)`` with a legacy torch serialization inside.

We take ``G_ema``'s tensors under their dotted module path (which are our names), drop the derived
``resample_filter`` buffers, and read the hyper-parameters shapes cannot show from module attributes.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from ..stylegan.networks import Generator
from .errors import (
    CheckpointError,
    InvalidValueError,
    LimitExceededError,
    MissingNetworkError,
    TruncatedFileError,
    UnsafePickleError,
    UnsupportedArchitectureError,
    brief,
    brief_keys,
    describe_exception,
    loader_boundary,
)
from .limits import MAX_ELEMENTS, MAX_NAME, MAX_TENSORS, check_finite, check_tensor_shapes, element_budget
from .network_info import NvidiaNetwork
from .nvidia_tf import extract_tf_generator
from .safe_pickle import CONTAINER_ALLOW, NUMPY_ALLOW, TENSOR_ALLOW, AllowlistUnpickler, TensorRef
from .state_dict import as_tensor, config_from_state_dict, drop_resample_filters, generator_from_state_dict
from .torch_files import load_legacy_storage

PICKLE_MAGICS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
MAX_MODULES = 10_000     # sub-modules of G_ema; a 1024 px StyleGAN2 has about 150
MAX_MODULE_DEPTH = 16    # G_ema.synthesis.b1024.conv0.affine is 4 deep


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class PersistentObject:
    """Stand-in result of ``_reconstruct_persistent_obj(meta)``: the class name and the module state.

    ``meta['module_src']`` is deliberately dropped unread: running it is what the usual loader does.
    """

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __setstate__(self, state):
        raise UnsafePickleError("refused to load: unexpected BUILD on a persistent object")

    def __repr__(self):
        return f"PersistentObject({self.class_name})"


def reconstruct_persistent_obj(meta) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, executes nothing."""
    ok = (
        isinstance(meta, dict) and meta.get("type") == "class" and isinstance(meta.get("class_name"), str)
        and isinstance(meta.get("state"), dict)
    )
    if not ok:
        raise CheckpointError("malformed NVIDIA pickle: unexpected persistent-object record")
    return PersistentObject(meta["class_name"], meta["state"])


class TFNetwork:
    """Stand-in for a TF-era ``dnnlib.tflib.network.Network``; its state (variables) is only recorded."""

    __slots__ = ("state",)

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise CheckpointError("malformed TF network pickle")
        self.state = state


class NvidiaUnpickler(AllowlistUnpickler):
    """The allowlist: persistence records, EasyDict, containers, tensors/storages, numpy numbers."""

    allow = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib.tflib.network", "Network"): TFNetwork,
        ("torch.storage", "_load_from_bytes"): load_legacy_storage,
        **CONTAINER_ALLOW,
        **TENSOR_ALLOW,
        **NUMPY_ALLOW,
    }


def read_bytes(path: str | os.PathLike, progress: bool = False) -> bytes:
    """Whole file in memory, with a tqdm bar when ``progress``."""
    size = os.path.getsize(path)
    if not progress:
        return Path(path).read_bytes()
    from tqdm.auto import tqdm

    buf = bytearray()
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {Path(path).name}") as bar:
        while chunk := f.read(1 << 22):
            buf += chunk
            bar.update(len(chunk))
    return bytes(buf)


def unpickle_network_file(path: str | os.PathLike, data: bytes | None = None) -> Any:
    """Unpickle an NVIDIA network pickle with :class:`NvidiaUnpickler` (tensors stay :class:`TensorRef`)."""
    if data is None:
        data = Path(path).read_bytes()
    if data[:2] not in PICKLE_MAGICS:
        raise CheckpointError(f"{path}: not a pickle (protocol 2-5) file")
    try:
        return NvidiaUnpickler(io.BytesIO(data), path).load()
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, EOFError) or "truncated" in describe_exception(e):
            raise TruncatedFileError(
                f"{path}: the pickle is truncated (incomplete download?): {describe_exception(e)}"
            ) from None
        raise CheckpointError(f"{path}: corrupt pickle: {describe_exception(e)}") from None
    except Exception as e:  # noqa: BLE001 - stand-ins called with wrong arguments etc.: a malformed or hostile file
        raise CheckpointError(f"{path}: malformed NVIDIA pickle ({describe_exception(e)})") from None


# ----------------------------------------------------------------------------
# G_ema -> tensors + config


def _dict(value, what: str, source) -> dict:
    """A module-state entry that must be a dict with string keys (None and absent mean empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and len(k) <= MAX_NAME for k in value):
        raise CheckpointError(f"{source}: malformed module state: {what} is {brief(value, depth=1)}")
    return value


def _walk(obj: PersistentObject, prefix: str, tensors: dict, modules: dict, source: str, depth: int = 0):
    """Collect parameters and persistent buffers under dotted names (= ``state_dict()`` names).

    Depth and the number of modules visited are bounded, so records shared between places (or a cycle)
    cannot multiply the work."""
    if depth > MAX_MODULE_DEPTH or len(modules) >= MAX_MODULES:
        raise LimitExceededError(f"{source}: the network nests deeper than {MAX_MODULE_DEPTH} modules or has "
                                 f"more than {MAX_MODULES}")
    modules[prefix.rstrip(".")] = obj
    st = obj.state
    skip = st.get("_non_persistent_buffers_set")
    if skip is None:
        skip = set()
    if not isinstance(skip, (set, frozenset, list, tuple)) or not all(isinstance(n, str) for n in skip):
        raise CheckpointError(f"{source}: malformed module state ({prefix}_non_persistent_buffers_set)")
    skip = set(skip)  # a long list would make each lookup below linear
    for kind in ("_parameters", "_buffers"):
        for name, t in _dict(st.get(kind), prefix + kind, source).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, TensorRef):
                raise CheckpointError(f"{source}: {prefix}{name} is a {type(t).__name__}, not a tensor")
            tensors[prefix + name] = t
            if len(tensors) > MAX_TENSORS:
                raise LimitExceededError(f"{source}: more than {MAX_TENSORS} tensors in G_ema")
    for name, child in _dict(st.get("_modules"), prefix + "_modules", source).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise UnsupportedArchitectureError(f"{source}: sub-module {prefix}{name} is not a network record")
        _walk(child, f"{prefix}{name}.", tensors, modules, source, depth + 1)
def _is_stylegan3(modules: dict[str, PersistentObject]) -> bool:
    syn = modules.get("synthesis")
    names = set((syn.state.get("_modules") or {}) if syn is not None else ())  # str keys (checked by _walk)
    return (
        any(m.class_name == "SynthesisInput" for m in modules.values())
        or "input" in names
        or any(n.startswith("L") and n[1:2].isdigit() for n in names)
    )


def _attr(modules: dict, path: str, name: str, default=None):
    m = modules.get(path)
    return m.state.get(name, default) if m is not None else default


def _number(value, what: str, source, optional: bool = False):
    """A numeric attribute (numpy scalars arrive as Python numbers); ranges are checked with the config."""
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CheckpointError(f"{source}: {what} is {brief(value)}, not a number")
    if isinstance(value, float) and value != value:
        raise InvalidValueError(f"{source}: {what} is NaN; every image would be NaN")
    return value


def _text(value, what: str, source, optional: bool = True):
    if (value is None and optional) or isinstance(value, str):
        return value
    raise CheckpointError(f"{source}: {what} is {brief(value)}, not a name")


def extract_generator(G: PersistentObject, source: str, progress: bool = False,
                      budget: int = MAX_ELEMENTS) -> NvidiaNetwork:
    """Tensors (our names) and config of an NVIDIA ``G_ema`` record (StyleGAN3 ones: ``nvidia_sg3.py``).

    The config (inferred from shapes and attributes) is checked and compared with the tensors' shapes, and
    the generator's size with ``budget`` elements, before any tensor is materialised."""
    refs: dict[str, TensorRef] = {}
    modules: dict[str, PersistentObject] = {}
    _walk(G, "", refs, modules, source)
    if _is_stylegan3(modules):
        from .nvidia_sg3 import extract_stylegan3

        return NvidiaNetwork(*extract_stylegan3(G, refs, modules, source, progress, budget), G.class_name)
    if "mapping" not in modules or "synthesis" not in modules:
        raise UnsupportedArchitectureError(
            f"{source}: G_ema ({brief(G.class_name)}) has no mapping/synthesis networks")

    kw = _dict(G.state.get("_init_kwargs"), "G_ema._init_kwargs", source)
    syn_kw = {**_dict(kw.get("synthesis_kwargs"), "synthesis_kwargs", source),
              **_dict(_attr(modules, "synthesis", "_init_kwargs"), "synthesis._init_kwargs", source)}
    map_kw = {**_dict(kw.get("mapping_kwargs"), "mapping_kwargs", source),
              **_dict(_attr(modules, "mapping", "_init_kwargs"), "mapping._init_kwargs", source)}

    # Things our generator does not do: refuse rather than produce different images.
    layers = {k: m for k, m in modules.items() if m.class_name == "SynthesisLayer" or k.endswith((".conv0", ".conv1"))}
    for k, m in layers.items():
        params = _dict(m.state.get("_parameters"), f"{k}._parameters", source)
        if m.state.get("use_noise", True) is False or "noise_strength" not in params:
            raise UnsupportedArchitectureError(f"{source}: {k} has no noise input (use_noise=False)")
    for k, m in modules.items():
        if k in layers or k.startswith("mapping.fc"):
            act = m.state.get("activation", "lrelu")
            if not (isinstance(act, str) and act == "lrelu"):
                raise UnsupportedArchitectureError(f"{source}: {k} uses activation {brief(act)}")
    clamps = {_number(m.state.get("conv_clamp"), f"{k}.conv_clamp", source, optional=True)
              for k, m in modules.items() if k in layers or k.endswith(".torgb")}
    if len(clamps) > 1:
        raise UnsupportedArchitectureError(f"{source}: layers use different conv_clamp values {brief(clamps)}")
    conv_clamp = clamps.pop() if clamps else _number(syn_kw.get("conv_clamp"), "conv_clamp", source, optional=True)
    archs = {_text(m.state.get("architecture"), f"{k}.architecture", source)
             for k, m in modules.items() if m.class_name == "SynthesisBlock"} - {None}
    if len(archs) > 1:
        raise UnsupportedArchitectureError(f"{source}: blocks use different architectures {brief(archs)}")
    architecture = archs.pop() if archs else _text(syn_kw.get("architecture"), "architecture", source)
    lr = _number(_attr(modules, "mapping.fc0", "bias_gain", map_kw.get("lr_multiplier", 0.01)),
                 "the mapping network's lr multiplier (bias_gain)", source)

    def hint(name):
        return G.state.get(name, kw.get(name))

    refs = drop_resample_filters(refs, source)
    cfg = config_from_state_dict(
        refs, source, mapping_lr_multiplier=lr, conv_clamp=conv_clamp, architecture=architecture,
        channel_base=syn_kw.get("channel_base", kw.get("channel_base")),
        channel_max=syn_kw.get("channel_max", kw.get("channel_max")),
        z_dim=hint("z_dim"), img_resolution=hint("img_resolution"),
    )
    for name in ("c_dim", "w_dim", "img_channels"):
        v = hint(name)
        if v is not None and not (isinstance(v, int) and v == getattr(cfg, name)):
            raise UnsupportedArchitectureError(
                f"{source}: {name}={brief(v)} does not match the weights ({getattr(cfg, name)})"
            )
    check_tensor_shapes(refs, cfg, source, budget, error=UnsupportedArchitectureError)
    items = refs.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(refs), desc="tensors", unit="t")
    tensors = {k: as_tensor(ref, k, source) for k, ref in items}
    check_finite(tensors, source)
    return NvidiaNetwork(tensors, cfg, G.class_name)


@loader_boundary
def read_nvidia_pickle(path: str | os.PathLike, progress: bool = False) -> NvidiaNetwork:
    """Read ``G_ema`` of an NVIDIA network pickle (PyTorch or TF era) into checked tensors + config."""
    data = read_bytes(path, progress)
    obj = unpickle_network_file(path, data)
    del data
    if isinstance(obj, tuple) and obj and all(isinstance(o, TFNetwork) for o in obj):
        return extract_tf_generator(obj, str(path), element_budget(path))
    if not isinstance(obj, dict):
        raise MissingNetworkError(f"{path}: a pickle of {type(obj).__name__}, not an NVIDIA network dict")
    if "G_ema" not in obj:
        raise MissingNetworkError(
            f"{path}: no 'G_ema' in this network pickle (keys: {brief_keys(obj)}); "
            "dragnb needs the generator's moving average G_ema"
        )
    G = obj["G_ema"]
    if not isinstance(G, PersistentObject):
        raise MissingNetworkError(f"{path}: 'G_ema' is not a network record")
    return extract_generator(G, str(path), progress, element_budget(path))


@loader_boundary
def load_nvidia_pickle(path: str | os.PathLike, progress: bool = False) -> Generator:
    """An NVIDIA StyleGAN2 or StyleGAN3 network pickle -> our Generator (eval mode, no grad); any file it cannot
    load raises :class:`CheckpointError`."""
    net = read_nvidia_pickle(path, progress)
    return generator_from_state_dict(net.state_dict, net.config, str(path), element_budget(path))
