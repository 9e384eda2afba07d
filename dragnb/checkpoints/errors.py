"""Errors raised by the foreign-checkpoint loaders. All are :class:`CheckpointError` (a ``ValueError``)."""

from .native import CheckpointError


class UnknownFormatError(CheckpointError):
    """The file is none of the formats we read (NVIDIA pickle, torch zip, our safetensors)."""


class TruncatedFileError(CheckpointError):
    """The file ends before its format says it should (interrupted download or copy)."""


class UnsafePickleError(CheckpointError):
    """The pickle asks for something outside the allowlist (a function call that could run code)."""


class MissingNetworkError(CheckpointError):
    """The file has no generator we can use (e.g. an NVIDIA pickle without ``G_ema``)."""


class UnsupportedArchitectureError(CheckpointError):
    """A generator that is not a StyleGAN2 we can reproduce (e.g. StyleGAN3)."""


__all__ = [
    "CheckpointError", "MissingNetworkError", "TruncatedFileError", "UnknownFormatError",
    "UnsafePickleError", "UnsupportedArchitectureError",
]
