"""The machine and this process: CPU, cores, memory, load, package versions, RSS and open files."""

from __future__ import annotations

import contextlib
import os
import platform
import resource


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU model, logical / usable cores, memory, load average, OS and Python."""
    info = {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    with contextlib.suppress(AttributeError):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return info


def versions() -> dict:
    import numpy as np
    import onnx
    import torch

    from ..backends.ort_sessions import import_onnxruntime

    onnxruntime = import_onnxruntime()

    from .. import __version__

    return {"dragnb": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM (``ru_maxrss`` would include the parent's RSS at fork on Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))
