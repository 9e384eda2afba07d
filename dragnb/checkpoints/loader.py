"""``load_generator``: one entry point for the bundled model, our own files and foreign checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from ..devices import resolve_device
from ..fileio import user_models_dir  # noqa: F401  (part of this module's API)
from ..stylegan.networks import Generator
from .errors import CheckpointError, checkpoint_boundary
from .native import is_native, load_native

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED = {"toyfaces": MODELS_DIR / "toyfaces.safetensors"}
DEFAULT_MODEL = "toyfaces"


def resolve_model(path_or_name: str | os.PathLike) -> Path:
    """A bundled name, a file in the user models folder, or a path -> an existing file path."""
    s = str(path_or_name)
    if s in BUNDLED:
        p = BUNDLED[s]
        if not p.exists():
            raise FileNotFoundError(f"bundled model {s!r} is missing from the package ({p})")
        return p
    p = Path(s).expanduser()
    if p.is_file():
        return p
    for cand in (user_models_dir() / s, user_models_dir() / f"{s}.safetensors", user_models_dir() / f"{s}.pkl"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no model {s!r}: not a bundled name ({', '.join(BUNDLED)}), not a file, and not in {user_models_dir()}"
    )


def load_generator(path_or_name: str | os.PathLike | None = None, device: str = "auto") -> Generator:
    """Load a generator (eval mode, no grad) from a bundled name, our safetensors file, or a foreign checkpoint.

    ``None`` loads the bundled default model. Foreign formats (NVIDIA pickles, rosinality ``.pt``) are
    read without executing code from the file. Raises ``FileNotFoundError`` for a name or path that is
    no file, and :class:`CheckpointError` naming the file for any file that does not load (see
    ``errors.py``): nothing else escapes.

    ``device`` ("auto", "cpu", "cuda", "cuda:N", "mps"; see :mod:`dragnb.devices`) is where the generator is
    put; it is checked first, so an unknown or unavailable device is a ValueError before anything is read.
    """
    name = resolve_device(device)
    path = resolve_model(DEFAULT_MODEL if path_or_name is None else path_or_name)
    with checkpoint_boundary(path):
        if os.path.getsize(path) == 0:
            raise CheckpointError(f"{path}: empty file")
        if is_native(path):
            G = load_native(path)
        else:
            from .foreign import load_foreign

            G = load_foreign(path)
    return G.to(name)
