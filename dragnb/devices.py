"""Where the PyTorch side runs: the ``device`` setting of ``load_generator``, ``DragSession``, the CLI and the
workbench.

"auto" is a CUDA GPU when one is visible *and works* (a tiny tensor op is tried: a driver/toolkit mismatch shows
up only when used), else the CPU; "cpu", "cuda", "cuda:N" and "mps" name a device, which must exist and work.
Anything else is a ValueError, raised before anything is loaded or changed. torch is imported only when a
device other than the CPU has to be checked, so a torch-free (ORT artifact) session can pass "auto"/"cpu".
"""

from __future__ import annotations

import functools
import re

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?|auto")


def check_device_spec(device) -> str:
    """The device spelling, checked without touching any device (ValueError on an unknown one)."""
    if not isinstance(device, str) or not _PATTERN.fullmatch(device):
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    return device


@functools.cache
def _works(name: str) -> str | None:
    """None when a tiny tensor op runs on ``name`` and comes back right, else why not (one line)."""
    try:
        import torch

        x = torch.arange(4, dtype=torch.float32, device=name)
        if float((x * 2).sum().cpu()) != 12.0:
            return "a test computation gave a wrong result"
    except Exception as e:  # any failure of a device (driver, toolkit, out of memory) makes it unusable
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]
    return None


def _visible(name: str) -> str | None:
    """None when ``name`` (canonical, not "cpu") exists on this machine, else why not."""
    import torch

    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "no Apple MPS device on this machine"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch on this machine"
    index, count = int(name.split(":")[1]), torch.cuda.device_count()
    return None if index < count else f"this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"


def resolve_device(device="auto") -> str:
    """A device setting -> the canonical torch device string ("cpu", "cuda:N", "mps") it runs on.

    ValueError, with the reason and what is available, for an unknown spelling or a device that is missing or
    fails a tiny tensor op; "auto" never fails (CUDA when usable, else "cpu")."""
    spec = check_device_spec(device)
    if spec == "cpu":
        return "cpu"
    if spec == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() and _works("cuda:0") is None else "cpu"
    name = "cuda:0" if spec == "cuda" else spec
    why = _visible(name) or _works(name)
    if why:
        raise ValueError(f"device {device!r} is not available: {why} (available: {', '.join(available_devices())})")
    return name


def available_devices() -> list[str]:
    """The settings that work here: "auto", "cpu", then each working CUDA device and MPS."""
    import torch

    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count()) if _works(f"cuda:{i}") is None]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and _works("mps") is None:
        found.append("mps")
    return found
