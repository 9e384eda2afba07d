"""The project's own weights format: one safetensors file whose metadata holds the generator config.

safetensors stores raw tensors plus a JSON header and can hold no code, so loading never executes
anything from the file. Layout of the metadata (all strings, as safetensors requires):
``{"format": "dragnb-generator", "format_version": "1", "config": <the config as JSON>}`` (a ``GeneratorConfig``,
or a ``StyleGAN3Config``, told apart by its ``architecture`` field, ``"stylegan3"``), plus an
optional ``"drag_defaults": <JSON object>``: DragGAN parameters tuned for this model (e.g. the bundled
128 px ``toyfaces``: ``{"feature_block": 4, "tolerance": 1.5, ...}``). :func:`load_native` puts them in
``G.drag_defaults`` (``{}`` when absent); ``DragSession`` applies them over its own defaults and under
explicit parameters. Files without the entry (every converted pretrained model) keep the official rules.

Reading uses our own parser (:func:`parse_safetensors`), not the safetensors package: every header entry
(dtype, shape, byte range) is checked against the file before anything is read, and the config is checked
against ``limits.py`` and the tensors' shapes before the generator is built.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from ..fileio import atomic_write
from ..stylegan.build import build_generator
from ..stylegan.networks import Generator
from .errors import (
    CheckpointError,
    LimitExceededError,
    TruncatedFileError,
    UnknownFormatError,
    brief,
    loader_boundary,
)
from .limits import MAX_NDIM, MAX_TENSORS, check_finite, check_tensor_shapes, checked_any_config, element_budget

FORMAT_NAME = "dragnb-generator"
FORMAT_VERSION = "1"

# The safetensors header is JSON; ours is a few KB, a 1024 px generator's about 40 KB.
MAX_HEADER = 16 << 20
# Parsed JSON can take 25x its text ("[{},{},...]"): the containers and items a header may declare are
# counted in the text before parsing (a genuine header has about 2 containers and 8 commas per tensor).
MAX_JSON_CONTAINERS = 4 * MAX_TENSORS + 64
MAX_JSON_COMMAS = 20 * MAX_TENSORS + 4096
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def save_generator(G: Generator, path: str | os.PathLike, drag_defaults: dict | None = None) -> Path:
    """Write ``G`` (weights + config) to ``path`` (``.safetensors``); atomic (temp file + rename).

    ``drag_defaults``: DragGAN parameters tuned for this model (field names of ``dragnb.drag.params.DragParams``,
    JSON values), stored in the metadata; None keeps ``G.drag_defaults`` (set by :func:`load_native`), so a
    load/save round trip preserves them; ``{}`` writes none.
    """
    from safetensors.torch import save_file

    if drag_defaults is None:
        drag_defaults = G.drag_defaults
    if not isinstance(drag_defaults, dict):
        raise TypeError(f"drag_defaults must be a dict, got {type(drag_defaults).__name__}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": json.dumps(G.cfg.to_dict())}
    if drag_defaults:
        meta["drag_defaults"] = json.dumps(drag_defaults, sort_keys=True)
    # 0644: mkstemp creates 0600, and a weights file is meant to be shared
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), mode=0o644)


class SafetensorsRef:
    """One tensor of a safetensors file, not yet read: dtype, shape and where its bytes are."""

    __slots__ = ("path", "dtype", "shape", "start", "nbytes")

    def __init__(self, path, dtype: torch.dtype, shape: tuple, start: int, nbytes: int):
        self.path, self.dtype, self.shape, self.start, self.nbytes = path, dtype, shape, start, nbytes

    def materialize(self) -> torch.Tensor:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            data = f.read(self.nbytes)
        if len(data) != self.nbytes:
            raise TruncatedFileError(f"{self.path}: the file ended while reading a tensor (changed on disk?)")
        flat = torch.frombuffer(bytearray(data), dtype=self.dtype) if data else torch.empty(0, dtype=self.dtype)
        return flat.reshape(self.shape)


def _safetensors_entry(path, name, e, data_start: int, data_size: int) -> SafetensorsRef:
    """Check one header entry (dtype, shape, offsets inside the data) and describe it."""
    if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{path}: malformed safetensors entry for {brief(name)}")
    dtype = SAFETENSORS_DTYPES.get(e["dtype"]) if isinstance(e["dtype"], str) else None
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {brief(name)} has dtype {brief(e['dtype'])}; expected floating point "
                              f"({', '.join(SAFETENSORS_DTYPES)})")
    shape, offsets = e["shape"], e["data_offsets"]

    def ints(v):
        return all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**48 for n in v)

    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and ints(shape)):
        raise CheckpointError(f"{path}: tensor {brief(name)} has a malformed shape {brief(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and ints(offsets) and offsets[0] <= offsets[1]):
        raise CheckpointError(f"{path}: tensor {brief(name)} has malformed data offsets {brief(offsets)}")
    nbytes = offsets[1] - offsets[0]
    numel = 1
    for n in shape:
        numel *= n
    if nbytes != numel * dtype.itemsize:
        raise CheckpointError(f"{path}: tensor {brief(name)} of shape {shape} would take {numel * dtype.itemsize} "
                              f"bytes, its data offsets give {nbytes}")
    if offsets[1] > data_size:
        raise TruncatedFileError(f"{path}: truncated file: tensor {brief(name)} ends at byte {data_start + offsets[1]}"
                                 f", the file has {data_start + data_size}")
    return SafetensorsRef(path, dtype, tuple(shape), data_start + offsets[0], nbytes)


def parse_safetensors(path: str | os.PathLike) -> tuple[dict, dict[str, SafetensorsRef]] | None:
    """(metadata, tensors) of a safetensors file, every entry checked against the file's size; None when the
    file does not start like one. Raises :class:`CheckpointError` for a damaged or inconsistent one."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9:
            return None
        (n,) = struct.unpack("<Q", head[:8])
        if n < 2 or n > MAX_HEADER or head[8:9] != b"{":
            return None
        if 8 + n > size:
            raise TruncatedFileError(f"{path}: truncated safetensors file (header says {n} bytes, file has {size - 8})")
        raw = head[8:] + f.read(n - 1)
    _check_json_size(path, raw, "safetensors header")
    try:
        header = json.loads(raw)
    except RecursionError:
        raise CheckpointError(f"{path}: malformed safetensors header (nested too deeply)") from None
    except ValueError as e:  # bad JSON or bad UTF-8
        raise CheckpointError(f"{path}: malformed safetensors header ({str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: malformed safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{path}: malformed safetensors metadata (must map strings to strings)")
    if len(header) > MAX_TENSORS:
        raise LimitExceededError(f"{path}: {len(header)} tensors (at most {MAX_TENSORS} accepted)")
    entries = {name: _safetensors_entry(path, name, e, 8 + n, size - 8 - n) for name, e in header.items()}
    spans = sorted((r.start, r.start + r.nbytes, name) for name, r in entries.items() if r.nbytes)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{path}: tensors {brief(a)} and {brief(b)} overlap in the file")
    return meta, entries


def read_safetensors_header(path: str | os.PathLike) -> dict | None:
    """The metadata of a safetensors file, or None if the file is not one. Raises on damage or truncation."""
    parsed = parse_safetensors(path)
    return None if parsed is None else parsed[0]


def is_native(path: str | os.PathLike) -> bool:
    try:
        parsed = parse_safetensors(path)
    except CheckpointError:
        return True  # a damaged safetensors file: let load_native raise the precise error
    return parsed is not None and parsed[0].get("format") == FORMAT_NAME


def _check_json_size(path, text, what: str) -> None:
    """Refuse JSON that declares more containers or items than any genuine file (see MAX_JSON_*)."""
    raw = text.encode() if isinstance(text, str) else text
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > MAX_JSON_CONTAINERS or raw.count(b",") > MAX_JSON_COMMAS:
        raise LimitExceededError(f"{path}: the {what} holds more JSON objects or items than any checkpoint needs")


def _json_entry(path, meta: dict, key: str, default: str):
    text = meta.get(key, default)
    _check_json_size(path, text, key)
    try:
        return json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{path}: invalid {key} (nested too deeply)") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid {key}: {str(e)[:200]}") from None


@loader_boundary
def load_native(path: str | os.PathLike) -> Generator:
    """Load a file written by :func:`save_generator` into a Generator in eval mode, with its tuned DragGAN
    parameters (the metadata's ``drag_defaults``, ``{}`` if none) in ``G.drag_defaults``.

    The config is checked (``limits.py``) and compared with the tensors' shapes before the generator is
    built; weights must be finite. Raises :class:`CheckpointError` for any file it cannot load."""
    parsed = parse_safetensors(path)
    if parsed is None:
        raise UnknownFormatError(f"{path}: not a safetensors file")
    meta, entries = parsed
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: safetensors file without dragnb generator metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported dragnb format version {brief(meta.get('format_version'))}")
    if "config" not in meta:
        raise CheckpointError(f"{path}: invalid generator config: missing")
    cfg = checked_any_config(_json_entry(path, meta, "config", "{}"), path)
    drag_defaults = _json_entry(path, meta, "drag_defaults", "{}")
    if not isinstance(drag_defaults, dict):
        raise CheckpointError(f"{path}: drag_defaults must be a JSON object, got {type(drag_defaults).__name__}")
    check_tensor_shapes(entries, cfg, path, element_budget(path))
    tensors = {k: r.materialize() for k, r in entries.items()}
    check_finite(tensors, path)
    G = build_generator(cfg)
    G.load_state_dict(tensors, strict=True)
    G.drag_defaults = drag_defaults
    return G.eval().requires_grad_(False)
