"""The one error type of checkpoint loading, its subclasses, and how messages show values from a file.

Contract: every public loader (``load_generator``, ``load_any``, ``convert``, the format readers) turns any
file into a generator or raises :class:`CheckpointError` (a ``ValueError``) whose message names the file and
the reason. :func:`checkpoint_boundary` enforces it: an exception of another type that escapes the checks
(a ``RecursionError`` from a malformed structure, an allocation failure) is re-raised as a CheckpointError.
A missing path stays ``FileNotFoundError``: there is no file to judge.

Values read from a file are shown only through :func:`brief`, whose output and cost are bounded whatever the
value (a 200-byte pickle of shared nested tuples prints as gigabytes with ``repr``).
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

MAX_MESSAGE = 600  # characters of an underlying error's message kept in ours


class CheckpointError(ValueError):
    """A weights file that cannot be loaded: unknown format, truncated, inconsistent or refused."""


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


class LimitExceededError(CheckpointError):
    """The file declares sizes beyond what any real StyleGAN2 has (see ``limits.py``), or more data than it
    holds; refused before anything of that size is allocated."""


class InvalidValueError(CheckpointError):
    """A number that would make every image wrong: NaN or infinite weights, a negative clamp, and so on."""


# ----------------------------------------------------------------------------
# Bounded rendering of values from a file


def brief(value, depth: int = 2, items: int = 6, chars: int = 60) -> str:
    """A short, cheap description of ``value`` for an error message.

    Containers show at most ``items`` entries and ``depth`` levels; strings and bytes at most ``chars``
    characters; big integers their size; objects of other types only their type name (their ``repr`` could
    be anything). The work done is bounded by ``items ** depth`` whatever the value's size or sharing.
    """
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, (str, bytes, bytearray)):
        text = repr(value[:chars])
        return text if len(value) <= chars else f"{text}... ({len(value)} long)"
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        n = len(value)
        if isinstance(value, dict):
            opening, closing = "{", "}"
        elif isinstance(value, list):
            opening, closing = "[", "]"
        elif isinstance(value, tuple):
            opening, closing = "(", ")"
        else:
            opening, closing = f"{type(value).__name__}({{", "})"
        if depth <= 0:
            return f"{opening}...{n} items{closing}" if n else f"{opening}{closing}"
        shown = []
        for k, entry in enumerate(value.items() if isinstance(value, dict) else value):
            if k >= items:
                shown.append(f"... ({n} items)")
                break
            if isinstance(value, dict):
                shown.append(f"{brief(entry[0], depth - 1, items, chars)}: {brief(entry[1], depth - 1, items, chars)}")
            else:
                shown.append(brief(entry, depth - 1, items, chars))
        return opening + ", ".join(shown) + ("," if isinstance(value, tuple) and n == 1 else "") + closing
    return f"<{type(value).__name__}>"


def brief_keys(mapping, n: int = 8) -> str:
    """The first ``n`` keys of a dict-like value from a file, briefly."""
    try:
        keys = list(mapping)[: n + 1]
    except Exception:  # noqa: BLE001 - any iteration failure: show nothing rather than fail the message
        return "?"
    shown = ", ".join(brief(k, depth=1) for k in keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}]"


def describe_exception(e: BaseException) -> str:
    """``Type: first line of the message`` of an underlying error, bounded; never ``str()`` of arbitrary args
    (a ``KeyError`` prints its key with ``repr``)."""
    if len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    elif all(isinstance(a, (str, int, float)) for a in e.args):
        text = ", ".join(brief(a) for a in e.args)
    else:
        text = brief(e.args)
    lines = text.strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _is_memory_failure(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else ""
    return isinstance(e, RuntimeError) and "allocate" in text[:2000] and "memory" in text[:2000]


def as_checkpoint_error(e: BaseException, path) -> CheckpointError:
    """``e`` as a :class:`CheckpointError` whose message names ``path``."""
    where = os.fspath(path)
    if isinstance(e, CheckpointError):
        text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else describe_exception(e)
        if where in text and len(text) <= MAX_MESSAGE + len(where) + 100 and "\n" not in text:
            return e
        lines = text.strip().splitlines()
        text = lines[0][: MAX_MESSAGE + len(where) + 100] if lines else type(e).__name__
        return type(e)(text if where in text else f"{where}: {text}")
    if _is_memory_failure(e):
        return CheckpointError(f"{where}: not enough memory to load this file ({describe_exception(e)})")
    if isinstance(e, RecursionError):
        return CheckpointError(f"{where}: malformed file: its structure is nested too deeply")
    if isinstance(e, OSError):
        return CheckpointError(f"{where}: cannot read the file ({e.strerror or describe_exception(e)})")
    return CheckpointError(f"{where}: malformed or unsupported checkpoint ({describe_exception(e)})")


@contextmanager
def checkpoint_boundary(path):
    """Re-raise whatever escapes the block as a :class:`CheckpointError` naming ``path`` (see the module
    docstring). A path that does not exist raises ``FileNotFoundError``; interrupts pass unchanged."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the one place where everything becomes a CheckpointError
        if isinstance(e, FileNotFoundError) and not os.path.lexists(path):
            raise
        err = as_checkpoint_error(e, path)
        if err is e:
            raise
        raise err from None


def loader_boundary(fn):
    """Decorator: ``fn(path, ...)`` runs inside :func:`checkpoint_boundary` of its first argument."""

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        with checkpoint_boundary(path):
            return fn(path, *args, **kwargs)

    return wrapper


__all__ = [
    "CheckpointError", "InvalidValueError", "LimitExceededError", "MissingNetworkError", "TruncatedFileError",
    "UnknownFormatError", "UnsafePickleError", "UnsupportedArchitectureError", "as_checkpoint_error", "brief",
    "brief_keys", "checkpoint_boundary", "describe_exception", "loader_boundary",
]
