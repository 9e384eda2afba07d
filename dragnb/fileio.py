"""Atomic file writes (a file appears complete or not at all, whatever crashes in between) and the user models
folder.

Every writer in dragnb that replaces a file the user keeps (sessions, weights, downloads, ORT manifests)
goes through :func:`atomic_write`, so a killed process never leaves a half-written file under the real name.
This module imports the standard library only (the torch-free paths use it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def user_models_dir() -> Path:
    """Folder searched for user checkpoints by name and for optional weights such as LPIPS' (``$DRAGNB_MODELS`` or
    ``~/.cache/dragnb/models``)."""
    return Path(os.environ.get("DRAGNB_MODELS", Path.home() / ".cache" / "dragnb" / "models"))


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], mode: int | None = None) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    ``mode`` (e.g. ``0o644``) is applied before the rename (``mkstemp`` creates files 0600). The temporary file
    is removed if ``write`` raises. Returns ``Path(path)``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def writable_folder_for(path: str | os.PathLike, what: str = "output") -> Path:
    """The nearest existing folder at or above ``path``'s parent, checked writable: where writing ``path`` will
    create what is missing. ValueError (naming ``what``) if that is a file or not writable; nothing is created."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} {path}: no permission to write in {folder}")
    return folder


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_move(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Move ``src`` onto ``dest`` so that ``dest`` appears complete or not at all, also across file systems."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
        return dest
    except OSError:
        pass
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    src.unlink()
    return dest
