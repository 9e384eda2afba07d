"""The project's own weights format: one safetensors file whose metadata holds the generator config.

safetensors stores raw tensors plus a JSON header and can hold no code, so loading never executes
anything from the file. Layout of the metadata (all strings, as safetensors requires):
``{"format": "dragnb-generator", "format_version": "1", "config": <the config as JSON>}`` (a ``GeneratorConfig``,
or a ``StyleGAN3Config``, told apart by its ``architecture`` field, ``"stylegan3"``), plus an
optional ``"drag_defaults": <JSON object>``: DragGAN parameters tuned for this model (e.g. the bundled
128 px ``toyfaces``: ``{"feature_block": 4, "tolerance": 1.5, ...}``). :func:`load_native` puts them in
``G.drag_defaults`` (``{}`` when absent); ``DragSession`` applies them over its own defaults and under
explicit parameters. Files without the entry (every converted pretrained model) keep the official rules.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from ..fileio import atomic_write
from ..stylegan.build import build_generator, config_from_dict
from ..stylegan.networks import Generator

FORMAT_NAME = "dragnb-generator"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A weights file that cannot be loaded: unknown format, truncated, or inconsistent."""


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


def read_safetensors_header(path: str | os.PathLike) -> dict | None:
    """The JSON header of a safetensors file, or None if the file is not one. Raises on truncation."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > 100_000_000:
            return None
        first = f.read(1)
        if first != b"{":
            return None
        if 8 + n > size:
            raise CheckpointError(f"{path}: truncated safetensors file (header says {n} bytes, file has {size - 8})")
        try:
            header = json.loads(first + f.read(n - 1))
        except ValueError:
            return None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated file: {8 + n + end} bytes expected, {size} found")
    return header


def is_native(path: str | os.PathLike) -> bool:
    try:
        header = read_safetensors_header(path)
    except CheckpointError:
        return True  # a truncated native file: let load_native raise the precise error
    return bool(header) and header.get("__metadata__", {}).get("format") == FORMAT_NAME


def load_native(path: str | os.PathLike) -> Generator:
    """Load a file written by :func:`save_generator` into a Generator in eval mode, with its tuned DragGAN
    parameters (the metadata's ``drag_defaults``, ``{}`` if none) in ``G.drag_defaults``."""
    from safetensors.torch import load_file

    header = read_safetensors_header(path)
    if header is None:
        raise CheckpointError(f"{path}: not a safetensors file")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: safetensors file without dragnb generator metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported dragnb format version {meta.get('format_version')!r}")
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid generator config: {e}") from e
    try:
        drag_defaults = json.loads(meta.get("drag_defaults", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid drag_defaults: {e}") from e
    if not isinstance(drag_defaults, dict):
        raise CheckpointError(f"{path}: drag_defaults must be a JSON object, got {type(drag_defaults).__name__}")
    tensors = load_file(str(path))
    G = build_generator(cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad_shape = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or bad_shape:
        detail = "; ".join(
            f"{label}: {names[:5]}{' ...' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape))
            if names
        )
        raise CheckpointError(f"{path}: config does not match the tensors ({detail})")
    G.load_state_dict(tensors, strict=True)
    G.drag_defaults = drag_defaults
    return G.eval().requires_grad_(False)
