"""The ORT artifact folder format: its manifest, file integrity and the constants both sides agree on.

An artifact folder holds the exported graphs, ORT's checkpoint, ``manifest.json`` (format, the export's
``config`` and every file's size and sha256) and a copy of the torch-free runtime (:data:`RUNTIME_FILES`).
This module uses the standard library only: it is one of the runtime's files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = "dragnb-ort-artifacts"
FORMAT_VERSION = 2  # 2: drag_params in the config, the runtime copied into the folder
MANIFEST = "manifest.json"
ADAM_FILE = "adamw.onnx"         # ORT's AdamWOptimizer node (dragnb mode)
TORCH_ADAM_FILE = "torch_adam.onnx"  # torch.optim.Adam's rule as elementwise ops (official and blog modes)
# The optimizer of each compat mode, as the manifest records it (config.optimizer).
OPTIMIZERS = {"dragnb": {"rule": "ort-adamw", "file": ADAM_FILE},
              "official": {"rule": "torch-adam", "file": TORCH_ADAM_FILE},
              "blog": {"rule": "torch-adam", "file": TORCH_ADAM_FILE}}
MAX_MANIFEST_BYTES = 1 << 20
LATENT_SPACES = ("w", "w+")
EXPORT_NOISE_MODES = ("const", "none")  # "random" would need noise inputs; refused
# The torch-free runtime as copied into every artifact folder: {file name there: source path in the package}.
# Run there as ``python ort_runtime.py FOLDER ...`` with numpy and onnxruntime-training only.
RUNTIME_FILES = {
    "ort_runtime.py": "backends/ort_runtime.py",
    "ort_sessions.py": "backends/ort_sessions.py",
    "ort_files.py": "backends/ort_files.py",
    "geometry.py": "drag/geometry.py",
    "conventions.py": "stylegan/conventions.py",
}


class ArtifactError(RuntimeError):
    """An artifact folder that is missing, incomplete, corrupted or from an incompatible version."""


# ----------------------------------------------------------------------------
# Artifact folder: manifest and integrity


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def required_files(config: dict) -> set[str]:
    """The files a runtime opens for this ``config`` (the manifest's): each must be listed, with its hash."""
    optimizer = config.get("optimizer")
    adam = optimizer.get("file") if isinstance(optimizer, dict) else None
    need = {"training_model.onnx", "eval_model.onnx", "checkpoint", adam if isinstance(adam, str) else ADAM_FILE,
            *RUNTIME_FILES}
    if config.get("tail_inputs"):
        need.add("tail.onnx")
    if config.get("has_mapping"):
        need.add("mapping.onnx")
    for name in config.get("preoptimized") or ():
        need.add(str(name)[: -len(".onnx")] + ".cpu-opt.onnx")
    return need


def _plain_name(name) -> bool:
    """A file name inside the folder: no separators, no parent, no hidden or special names."""
    return isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..") \
        and not name.startswith(".") and "\\" not in name and "\0" not in name


def _read_manifest(folder: Path) -> dict | str:
    path = folder / MANIFEST
    try:
        if path.is_symlink() or not path.is_file():
            return f"{MANIFEST} is missing"
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"{MANIFEST} is not a {FORMAT} manifest"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"format version {str(manifest.get('format_version'))[:20]!r}, this runtime reads {FORMAT_VERSION}"
    if not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("files"), dict):
        return f"{MANIFEST} has no config or no file list"
    return manifest


def _check_file(folder: Path, name, info, check_hashes: bool) -> str | None:
    if not _plain_name(name):
        return f"{MANIFEST} lists {str(name)[:60]!r}, which is not a plain file name in the folder"
    if not (isinstance(info, dict) and isinstance(info.get("size"), int) and not isinstance(info["size"], bool)
            and isinstance(info.get("sha256"), str) and len(info["sha256"]) == 64):
        return f"{MANIFEST}: the entry of {name} is not {{size, sha256}}"
    p = folder / name
    if p.is_symlink() or not p.is_file():
        return f"{name} is missing (or not a regular file)"
    size = p.stat().st_size
    if size != info["size"]:
        return f"{name} has {size} bytes, the manifest says {info['size']} (truncated or replaced)"
    if check_hashes and file_sha256(p) != info["sha256"]:
        return f"{name} does not match its sha256 (corrupted or foreign)"
    return None


def verify_artifacts(folder: str | os.PathLike, check_hashes: bool = True, expect: dict | None = None) -> str | None:
    """None if ``folder`` holds a complete, intact artifact set; otherwise why not (one line).

    Every file the runtime opens must be listed with its size and sha256, and only plain names inside the folder
    are accepted. ``expect``: manifest entries that must be equal (the cache passes the key and what went into
    it, so a foreign set copied under a key's folder is refused).
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if isinstance(manifest, str):
        return manifest
    for k, v in (expect or {}).items():
        if manifest.get(k) != v:
            return f"{MANIFEST}: {k} is not the one asked for (a set made for another model or settings)"
    files = manifest["files"]
    missing = sorted(required_files(manifest["config"]) - set(files))
    if missing:
        return f"{MANIFEST} does not list {missing}"
    try:
        for name, info in files.items():
            why = _check_file(folder, name, info, check_hashes)
            if why is not None:
                return why
    except OSError as e:
        return f"a file is unreadable ({type(e).__name__}: {e.strerror})"
    return None


def load_manifest(folder: str | os.PathLike, check_hashes: bool = True) -> dict:
    """The manifest of a verified artifact folder; raises :class:`ArtifactError` with the reason."""
    why = verify_artifacts(folder, check_hashes)
    if why is not None:
        raise ArtifactError(f"{folder}: {why}")
    return _read_manifest(Path(folder))
