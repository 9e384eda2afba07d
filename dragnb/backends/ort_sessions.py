"""ONNX Runtime sessions as dragnb opens them: the import, devices, session options, CPU-optimised graphs and
the training Module through ORT's C bindings. numpy and onnxruntime only: one of the runtime's files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


def import_onnxruntime():
    """``import onnxruntime``, without the ORTModule check of the training build.

    In onnxruntime-training 1.19.2, ``import onnxruntime`` runs ``capi/onnxruntime_validation.py``, which
    imports ``onnxruntime.training.ortmodule`` only to print build information; that pulls in torch (if
    installed), onnx and sympy: +62 MB of RSS and ~1.3 s next to an already imported torch (measured). Nothing
    here needs ORTModule, so ``onnxruntime.training`` is made unimportable while the package initialises
    (the check treats that as "no ORTModule") and importable again right after: ``onnxruntime.training``
    (artifact generation, the notebooks) still imports normally later. Every dragnb module imports
    onnxruntime through this function first.
    """
    mod = sys.modules.get("onnxruntime")
    if mod is not None:
        return mod
    block = "onnxruntime.training" not in sys.modules
    if block:
        sys.modules["onnxruntime.training"] = None  # import of it -> ModuleNotFoundError (an ImportError)
    try:
        import onnxruntime
    finally:
        if block and sys.modules.get("onnxruntime.training", 0) is None:
            del sys.modules["onnxruntime.training"]
    return onnxruntime


def providers_and_device(device: str | None = None) -> tuple[list[str], str]:
    """(InferenceSession providers, training Module device): CUDA when this onnxruntime build has it, else CPU.

    ``device`` "cpu" / "cuda" forces a choice. A CUDA build without a usable GPU fails when the sessions
    are created; :class:`DragRuntime` then falls back to the CPU with a warning.
    """
    ort = import_onnxruntime()

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device is None:
        device = "cuda" if cuda else "cpu"
    if device.startswith("cuda"):
        if not cuda:
            raise ValueError("device 'cuda' asked for, but this onnxruntime build has no CUDA provider")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], device
    return ["CPUExecutionProvider"], "cpu"


# Session options of every session (docs/performance.md measures what each one buys). Keys:
#   optimization: graph optimisation level, "all" (incl. the NCHWc conv layout), "extended", "basic", "disabled";
#   arena: "shared" = one CPU memory arena for all sessions of the process that extends by exactly what is
#       requested (the sessions never run at the same time, so the peak is the largest session's, not the sum;
#       per-session arenas grow in powers of two and keep their peak: about twice the memory on FFHQ-512),
#       "session" = ORT's default arena per session, "off" = plain malloc/free (slow for large models);
#   mem_pattern: plan the buffers of a run from the previous one;
#   spinning: idle intra-op worker threads spin (costs CPU that a busy or shared machine needs elsewhere).
SESSION_OPTIONS = {"optimization": "extended", "arena": "shared", "mem_pattern": True, "spinning": False}

# Graphs the artifact cache stores already optimised for the CPU (at SESSION_OPTIONS["optimization"]), as
# "<name>.cpu-opt.onnx" beside the originals: ORT then loads them with graph optimisation off, which is what
# most of a cached start is (the toy's training + eval sessions: 0.28 -> 0.10 s, the same results bit for bit).
# Extended-level fusions are CPU kernels, so a CUDA session, or other optimisation settings, use the originals.
PREOPTIMIZABLE = ("training_model.onnx", "eval_model.onnx", "tail.onnx", "mapping.onnx")


def preoptimized_name(name: str) -> str:
    """``training_model.onnx`` -> ``training_model.cpu-opt.onnx``."""
    return name[: -len(".onnx")] + ".cpu-opt.onnx"


def preoptimize(folder, names=PREOPTIMIZABLE) -> list[str]:
    """Write the CPU-optimised copy of each of ``names`` present in ``folder`` (see :data:`PREOPTIMIZABLE`);
    returns the names done. ORT applies its graph transformations once and saves the result."""
    ort = import_onnxruntime()

    folder = Path(folder)
    done = []
    for name in names:
        if not (folder / name).exists():
            continue
        opts = session_options(1)
        opts.optimized_model_filepath = os.fspath(folder / preoptimized_name(name))
        ort.InferenceSession(os.fspath(folder / name), opts, providers=["CPUExecutionProvider"])
        done.append(name)
    return done
_SHARED_ARENA = []  # the process-wide arena, registered on first use


def _register_shared_arena(ort) -> None:
    if not _SHARED_ARENA:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))  # kSameAsRequested
        _SHARED_ARENA.append(info)


def session_options(threads: int | None = None, **overrides):
    """An ``onnxruntime.SessionOptions`` from :data:`SESSION_OPTIONS` (``overrides`` replace entries)."""
    ort = import_onnxruntime()

    unknown = set(overrides) - set(SESSION_OPTIONS)
    if unknown:
        raise ValueError(f"unknown session option(s) {sorted(unknown)}; known: {sorted(SESSION_OPTIONS)}")
    cfg = {**SESSION_OPTIONS, **overrides}
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    if cfg["optimization"] not in levels or cfg["arena"] not in ("shared", "session", "off"):
        raise ValueError(f"bad session options {cfg}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[cfg["optimization"]]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = bool(cfg["mem_pattern"])
    opts.enable_cpu_mem_arena = cfg["arena"] != "off"
    if cfg["arena"] == "shared":
        _register_shared_arena(ort)
        opts.add_session_config_entry("session.use_env_allocators", "1")
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not cfg["spinning"]:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class Trainer:
    """ORT's training Module and CheckpointState through onnxruntime's C bindings.

    ``onnxruntime.training.api`` is a thin wrapper over exactly these calls, but importing it runs
    ``onnxruntime/training/__init__.py``, which imports torch (via ``training.optim``) in 1.19.2, so it
    cannot load on a device without torch. The bindings themselves need only numpy.

    Args:
        checkpoint, train_model, eval_model: artifact paths; device: "cpu" or "cuda[:i]";
        options: an ``onnxruntime.SessionOptions``.
    """

    def __init__(self, checkpoint, train_model, eval_model, device: str, options):
        import_onnxruntime()
        from onnxruntime.capi import _pybind_state as C
        from onnxruntime.capi.onnxruntime_inference_collection import get_ort_device_type

        kind, _, index = device.partition(":")
        index = int(index or 0)
        ort_device = C.OrtDevice(get_ort_device_type(kind, index), C.OrtDevice.default_memory(), index)
        self._C = C
        self.state = C.load_checkpoint(os.fspath(checkpoint))
        self.module = C.Module(os.fspath(train_model), self.state, os.fspath(eval_model), ort_device, options)

    def input_names(self) -> list[str]:
        return list(self.module.input_names(True))

    def run(self, feeds: list, training: bool) -> list:
        """Training step (forward + backward into the parameter gradients) or eval forward. OrtValues in; out:
        the binding's own C OrtValues (``.numpy()`` reads one; ``onnxruntime.OrtValue(v)`` wraps one)."""
        inputs, fetches = self._C.OrtValueVector(), self._C.OrtValueVector()
        inputs.reserve(len(feeds))
        for v in feeds:
            inputs.push_back(v._ortvalue)
        (self.module.train_step_with_ort_values if training else self.module.eval_step_with_ort_values)(inputs, fetches)
        return list(fetches)

    def lazy_reset_grad(self) -> None:
        self.module.lazy_reset_grad()

    def get(self, name: str) -> np.ndarray:
        return self.state.get_parameter(name).data.numpy().copy()  # .numpy() views the live buffer: copy

    def set(self, name: str, value: np.ndarray) -> None:
        OrtValue = import_onnxruntime().OrtValue

        value = OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, np.float32))
        self.state.get_parameter(name).copy_from(self.state, value._ortvalue)

    def grad(self, name: str) -> np.ndarray:
        return self.state.get_parameter(name).grad.numpy().copy()
