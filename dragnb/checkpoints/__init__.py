"""Checkpoint loading and saving: our own format, NVIDIA pickles, rosinality files, downloads."""

from .errors import CheckpointError
from .loader import BUNDLED, DEFAULT_MODEL, load_generator, resolve_model, user_models_dir
from .native import load_native, save_generator

__all__ = [
    "BUNDLED", "DEFAULT_MODEL", "CheckpointError", "load_generator", "load_native", "resolve_model",
    "save_generator", "user_models_dir",
]
