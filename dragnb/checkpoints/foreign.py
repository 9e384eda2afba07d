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

Nothing here executes code from the file: pickles go through allowlist unpicklers. Every public loader
turns any file into a generator or a :class:`~.errors.CheckpointError` naming the file (``errors.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..stylegan.networks import Generator
from .errors import (
    CheckpointError,
    MissingNetworkError,
    TruncatedFileError,
    UnknownFormatError,
    brief_keys,
    checkpoint_boundary,
    loader_boundary,
)
from .limits import MAX_ELEMENTS, element_budget
from .native import FORMAT_NAME, load_native, parse_safetensors
from .nvidia import PICKLE_MAGICS, load_nvidia_pickle
from .rosinality import generator_from_rosinality, is_rosinality, read_torch_file
from .safe_pickle import tensor_records
from .state_dict import config_from_state_dict, drop_resample_filters, generator_from_state_dict
from .torch_files import LEGACY_HEAD

FORMATS = ("native", "safetensors", "torch", "nvidia-pickle")


def sniff(path: str | os.PathLike) -> str:
    """The format of ``path`` (one of :data:`FORMATS`) from its content; raises CheckpointError if none fits
    (``FileNotFoundError`` if there is no such path)."""
    path = Path(path)
    with checkpoint_boundary(path):
        if not path.is_file():
            if not path.exists():
                raise FileNotFoundError(f"no such file: {path}")
            raise CheckpointError(f"{path}: not a regular file")
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
        parsed = parse_safetensors(path)  # raises CheckpointError when damaged or truncated
        if parsed is not None:
            return "native" if parsed[0].get("format") == FORMAT_NAME else "safetensors"
        raise UnknownFormatError(
            f"{path}: unknown checkpoint format (starts with {head[:8]!r}); expected an NVIDIA network pickle "
            "(.pkl), a rosinality / torch.save file (.pt) or a dragnb .safetensors file"
        )


def _from_nvidia_names(sd: dict, source: str, budget: int = MAX_ELEMENTS) -> Generator:
    sd = drop_resample_filters(sd, source)
    return generator_from_state_dict(sd, config_from_state_dict(sd, source), source, budget)


def _load_torch(path: Path) -> Generator:
    obj = read_torch_file(path)
    budget = element_budget(path)
    if is_rosinality(obj):
        return generator_from_rosinality(obj, str(path), budget)
    if isinstance(obj, dict):
        for key in ("G_ema", "g_ema_state_dict", "state_dict"):  # common wrappers of a plain state dict
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if "synthesis.b4.const" in obj:
            return _from_nvidia_names(tensor_records(obj, str(path)), str(path), budget)
    keys = brief_keys(obj) if isinstance(obj, dict) else type(obj).__name__
    raise MissingNetworkError(
        f"{path}: a torch file without a generator we know (no rosinality 'g_ema', no NVIDIA-named "
        f"state dict; found {keys})"
    )


@loader_boundary
def load_foreign(path: str | os.PathLike, progress: bool = False) -> Generator:
    """Load a non-native checkpoint (NVIDIA pickle, rosinality / torch file, bare safetensors)."""
    path = Path(path)
    fmt = sniff(path)
    if fmt == "nvidia-pickle":
        return load_nvidia_pickle(path, progress=progress)
    if fmt == "torch":
        return _load_torch(path)
    if fmt == "safetensors":
        _meta, entries = parse_safetensors(path)
        return _from_nvidia_names(entries, str(path), element_budget(path))
    return load_native(path)


def load_any(path: str | os.PathLike, progress: bool = False) -> Generator:
    """Load a generator from any supported file (eval mode, no grad); see the table above. Raises
    :class:`CheckpointError` naming the file for anything it cannot load, ``FileNotFoundError`` for a
    path that does not exist."""
    return load_foreign(path, progress=progress)
