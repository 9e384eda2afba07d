"""A tuned generator stored as its difference to the base model: a small safetensors file, not a full copy.

Pivotal tuning changes the synthesis weights, and the projection writes its own noise maps; the mapping network
and everything else stay the base model's. :func:`weight_delta` keeps only the tensors that changed, as
``tuned - base`` (float32); :func:`apply_delta` adds them to a copy of the base. The file's metadata names the
base by a hash of its weights, so a delta is never applied to another model.

Format (safetensors, so loading runs no code): tensors named as in ``G.state_dict()`` (``synthesis.*``);
metadata ``{"format": "dragnb-delta", "format_version": "1", "base_sha256": <hex>, "info": <JSON object>}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

DELTA_FORMAT, DELTA_VERSION = "dragnb-delta", "1"
MAX_DELTA_BYTES = 4 << 30


class DeltaError(ValueError):
    """A delta file that is damaged, of another format, or made for another base model."""


def base_sha256(G) -> str:
    """sha256 of the generator's weights and buffers (names, shapes, float32 bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        a = np.ascontiguousarray(t.detach().cpu().float().numpy())
        h.update(f"{name}:{list(a.shape)};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def weight_delta(base, tuned) -> dict[str, np.ndarray]:
    """``tuned - base`` for every state tensor that differs (float32 numpy arrays, by state-dict name)."""
    b, t = base.state_dict(), tuned.state_dict()
    if set(b) != set(t):
        raise ValueError("the two generators have different tensors")
    out = {}
    for name, v in t.items():
        if tuple(v.shape) != tuple(b[name].shape):
            raise ValueError(f"{name}: shape {list(v.shape)} differs from the base's {list(b[name].shape)}")
        if not v.is_floating_point() or torch_equal(v, b[name]):
            continue
        out[name] = (v.detach().cpu().float() - b[name].detach().cpu().float()).numpy()
    return out


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.detach().cpu(), b.detach().cpu()))


def apply_delta(base, delta: dict[str, np.ndarray]):
    """A copy of ``base`` (eval, no grad) with ``delta`` added; ValueError for a name or shape it lacks."""
    import copy

    import torch

    G = copy.deepcopy(base).eval().requires_grad_(False)
    state = G.state_dict()
    for name, d in delta.items():
        if name not in state:
            raise ValueError(f"the delta names {name!r}, which this generator does not have")
        if tuple(state[name].shape) != tuple(d.shape):
            raise ValueError(f"{name}: delta shape {list(d.shape)} differs from the generator's "
                             f"{list(state[name].shape)}")
        with torch.no_grad():
            state[name].add_(torch.as_tensor(np.asarray(d, np.float32)))
    return G


def save_delta(path, base, delta: dict[str, np.ndarray], info: dict | None = None) -> Path:
    """Write ``delta`` (made against ``base``) to ``path`` atomically; ``info``: JSON-able notes (losses, ...)."""
    from safetensors.numpy import save_file

    meta = {"format": DELTA_FORMAT, "format_version": DELTA_VERSION, "base_sha256": base_sha256(base),
            "info": json.dumps(info or {}, sort_keys=True)}
    arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in delta.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=meta), mode=0o644)


def load_delta(path, base) -> tuple[dict[str, np.ndarray], dict]:
    """(delta, info) from ``path``, checked against ``base`` (format, hash, names, shapes, finite values);
    :class:`DeltaError` otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DeltaError(f"{path}: no such delta file")
    if os.path.getsize(path) > MAX_DELTA_BYTES:
        raise DeltaError(f"{path}: larger than {MAX_DELTA_BYTES} bytes")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != DELTA_FORMAT or meta.get("format_version") != DELTA_VERSION:
                raise DeltaError(f"{path}: not a dragnb delta (format {DELTA_FORMAT!r} {DELTA_VERSION})")
            delta = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(meta.get("info", "{}"))
    except DeltaError:
        raise
    except Exception as e:  # noqa: BLE001  (safetensors raises its own types for damaged files)
        raise DeltaError(f"{path}: unreadable delta ({type(e).__name__}: {str(e)[:200]})") from None
    if meta.get("base_sha256") != base_sha256(base):
        raise DeltaError(f"{path}: made for another base model (weights hash differs)")
    state = base.state_dict()
    for k, v in delta.items():
        if k not in state or tuple(state[k].shape) != v.shape or v.dtype != np.float32 or not np.isfinite(v).all():
            raise DeltaError(f"{path}: tensor {k!r} does not fit the base model")
    return delta, info if isinstance(info, dict) else {}
