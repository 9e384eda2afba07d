"""One entry point for every checkpoint format, chosen by the file's first bytes (never its name).

=========================================  ==============================================
first bytes                                 format
=========================================  ==============================================
8-byte length + ``{`` (safetensors)         ours (``native.py``); a safetensors file with
                                            NVIDIA names but no dragnb metadata is also read
``PK\\x03\\x04`` (zip)                        ``torch.save`` file: rosinality ``.pt`` or a plain
                                            state dict with NVIDIA names
pickled legacy torch magic number           old (non-zip) ``torch.save`` file, as above
``\\x80\\x02`` .. ``\\x80\\x05`` (pickle)        NVIDIA network pickle (``G_ema``)
=========================================  ==============================================

Nothing here executes code from the file: pickles go through allowlist unpicklers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..stylegan.networks import Generator
from .errors import CheckpointError, MissingNetworkError, TruncatedFileError, UnknownFormatError
from .native import is_native, load_native, read_safetensors_header
from .nvidia import PICKLE_MAGICS, load_nvidia_pickle
from .rosinality import generator_from_rosinality, is_rosinality, read_torch_file
from .safe_pickle import LEGACY_HEAD, materialize
from .state_dict import config_from_state_dict, drop_resample_filters, generator_from_state_dict

FORMATS = ("native", "safetensors", "torch", "nvidia-pickle")


def sniff(path: str | os.PathLike) -> str:
    """The format of ``path`` (one of :data:`FORMATS`) from its content; raises if none fits."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise TruncatedFileError(f"{path}: empty file")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if head.startswith(LEGACY_HEAD):
        return "torch"
    if head[:2] in PICKLE_MAGICS:
        return "nvidia-pickle"
    header = read_safetensors_header(path)  # raises CheckpointError when truncated
    if header is not None:
        return "native" if is_native(path) else "safetensors"
    raise UnknownFormatError(
        f"{path}: unknown checkpoint format (starts with {head[:8]!r}); expected an NVIDIA network pickle "
        "(.pkl), a rosinality / torch.save file (.pt) or a dragnb .safetensors file"
    )


def _from_nvidia_names(sd: dict, source: str) -> Generator:
    sd = drop_resample_filters(materialize(sd), source)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: the state dict holds non-tensor values")
    return generator_from_state_dict(sd, config_from_state_dict(sd, source), source)


def _load_torch(path: Path) -> Generator:
    obj = read_torch_file(path)
    if is_rosinality(obj):
        return generator_from_rosinality(obj, str(path))
    if isinstance(obj, dict):
        for key in ("G_ema", "g_ema_state_dict", "state_dict"):  # common wrappers of a plain state dict
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if "synthesis.b4.const" in obj:
            return _from_nvidia_names(obj, str(path))
    keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
    raise MissingNetworkError(
        f"{path}: a torch file without a generator we know (no rosinality 'g_ema', no NVIDIA-named "
        f"state dict; found {keys})"
    )


def load_foreign(path: str | os.PathLike, progress: bool = False) -> Generator:
    """Load a non-native checkpoint (NVIDIA pickle, rosinality / torch file, bare safetensors)."""
    path = Path(path)
    fmt = sniff(path)
    if fmt == "nvidia-pickle":
        return load_nvidia_pickle(path, progress=progress)
    if fmt == "torch":
        return _load_torch(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return _from_nvidia_names(load_file(str(path)), str(path))
    return load_native(path)


def load_any(path: str | os.PathLike, progress: bool = False) -> Generator:
    """Load a generator from any supported file (eval mode, no grad); see the table above."""
    return load_foreign(path, progress=progress)
