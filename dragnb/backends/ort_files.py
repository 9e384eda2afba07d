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
TORCH_ADAM_FILE = "torch_adam.onnx"  # torch.optim.Adam's rule as elementwise ops (official mode)
# The optimizer of each compat mode, as the manifest records it (config.optimizer).
OPTIMIZERS = {"dragnb": {"rule": "ort-adamw", "file": ADAM_FILE},
              "official": {"rule": "torch-adam", "file": TORCH_ADAM_FILE}}
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


def verify_artifacts(folder: str | os.PathLike, check_hashes: bool = True) -> str | None:
    """None if ``folder`` holds a complete, intact artifact set; otherwise why not (one line)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"{MANIFEST} is missing"
    except (OSError, ValueError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"{MANIFEST} is not a {FORMAT} manifest"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"format version {manifest.get('format_version')!r}, this runtime reads {FORMAT_VERSION}"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return f"{MANIFEST} lists no files"
    for name, info in files.items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        size = p.stat().st_size
        if size != info.get("size"):
            return f"{name} has {size} bytes, the manifest says {info.get('size')} (truncated or replaced)"
        if check_hashes and file_sha256(p) != info.get("sha256"):
            return f"{name} does not match its sha256 (corrupted or foreign)"
    return None


def load_manifest(folder: str | os.PathLike, check_hashes: bool = True) -> dict:
    """The manifest of a verified artifact folder; raises :class:`ArtifactError` with the reason."""
    why = verify_artifacts(folder, check_hashes)
    if why is not None:
        raise ArtifactError(f"{folder}: {why}")
    return json.loads((Path(folder) / MANIFEST).read_text())
