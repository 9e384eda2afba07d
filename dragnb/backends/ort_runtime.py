"""The DragGAN loop from ORT artifacts with numpy and onnxruntime-training only (no torch, no dragnb imports).

This file is self-contained on purpose: copied next to an artifact folder (``ort_cache.py`` writes one) it
runs a drag on a device that has only ``numpy`` and ``onnxruntime-training``::

    python ort_runtime.py ARTIFACTS --seed 0 --handle 10,12 --target 14,12 --steps 20

:class:`~dragnb.backends.ort_backend.OrtBackend` drives this same class, so the in-process ORT back-end
and the on-device loop are one implementation.

Per :meth:`DragRuntime.step`: ONE training-graph call (forward to the feature block, tracking, motion and
mask losses, backward to the latent), then, unless every point has arrived, ONE AdamW update run as ORT's
own ``AdamWOptimizer`` node on state held here (``adamw.onnx``; see ``ort_export.explicit_optimizer``).
The display image comes from ``tail.onnx`` fed with the step's own feature-block activations, only when asked.

The training Module and CheckpointState are used through onnxruntime's C bindings (:class:`Trainer`):
``import onnxruntime.training`` imports torch in onnxruntime-training 1.19.2. Inputs and outputs stay
OrtValues (per-drag constants such as F0 * mask are wrapped once), so no large array is copied per step.
Device: CUDA when the installed onnxruntime-training build has the CUDA provider (untested here; a failure
to create the CUDA sessions falls back to the CPU with a warning), else the CPU.

Coordinates: arrays' (row, col); images float [3, H, W] in about [-1, 1]. Latent layout: see ``ort_export``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

FORMAT = "dragnb-ort-artifacts"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LATENT_SPACES = ("w", "w+")
ADAM_FILE = "adamw.onnx"


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


# ----------------------------------------------------------------------------
# Small numpy pieces (the drag geometry mirrors dragnb.drag.geometry; a test checks they agree)


def window_offsets(r2: int) -> np.ndarray:
    """(drow, dcol) int64 [(2 r2 + 1)^2, 2], row-major: as ``dragnb.drag.geometry.window_offsets``."""
    d = np.arange(-int(r2), int(r2) + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    return np.stack([dr.ravel(), dc.ravel()], axis=1).astype(np.int64)


def disk_offsets(r1: float) -> np.ndarray:
    """(drow, dcol) int64 [K, 2] strictly inside radius r1: as ``dragnb.drag.geometry.disk_offsets``."""
    r = int(math.ceil(r1))
    d = np.arange(-r, r + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    keep = dr**2 + dc**2 < r1**2
    return np.stack([dr[keep], dc[keep]], axis=1).astype(np.int64)


@functools.lru_cache(maxsize=64)
def axis_taps(n_out: int, n_in: int) -> tuple[np.ndarray, ...]:
    """1-D bilinear taps (i0, i1, w0, w1) from n_in to n_out samples: as ``dragnb.drag.geometry.axis_taps``."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = src - i0
    t[i1 == i0] = 0.0
    return i0, i1, (1.0 - t).astype(np.float32), t.astype(np.float32)


def resize_features(block_x: np.ndarray, size, chunk: int = 16) -> np.ndarray:
    """Feature-block activation [1, C, h, w] -> features float32 [C, H, W] resized to ``size`` (H, W).

    ``F.interpolate(mode="bilinear", align_corners=False)`` computed as ``dragnb.drag.core.ResizedFeatures.full``
    computes it (rows, then columns; separate multiplies and adds, each rounded once), so the map equals the
    training graph's sampling of it bit for bit. ``chunk`` channels at a time: the temporaries stay small.
    """
    x = np.asarray(block_x, np.float32)
    x = x.reshape(x.shape[-3:])
    c, h, w = x.shape
    hh, ww = (int(v) for v in size)
    if (h, w) == (hh, ww):
        return x.copy()
    r0, r1, wr0, wr1 = axis_taps(hh, h)
    c0, c1, wc0, wc1 = axis_taps(ww, w)
    wr0, wr1 = wr0[:, None], wr1[:, None]
    out = np.empty((c, hh, ww), np.float32)
    for k in range(0, c, chunk):
        xs = x[k:k + chunk]
        t = wr0 * xs[:, r0, :]
        t += wr1 * xs[:, r1, :]  # [c, H, w]
        o = out[k:k + chunk]
        np.multiply(t[:, :, c0], wc0, out=o)
        o += t[:, :, c1] * wc1  # [c, H, W]
    return out


def select_matrix(num_ws: int, latent_space: str, num_layers: int) -> np.ndarray:
    """float32 [num_ws, num_ws] 0/1 map from latent rows to ws rows (W+: diagonal; W: column 0)."""
    if latent_space not in LATENT_SPACES:
        raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
    if not 1 <= int(num_layers) <= num_ws:
        raise ValueError(f"num_layers must be in [1, {num_ws}], got {num_layers}")
    s = np.zeros((num_ws, num_ws), np.float32)
    n = int(num_layers)
    if latent_space == "w+":
        s[np.arange(n), np.arange(n)] = 1
    else:
        s[:n, 0] = 1
    return s


def compose_ws(ws0: np.ndarray, select: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """``ws0 * (1 - rowsum(select)) + select @ latent`` -> float32 [1, num_ws, w_dim], as in the step graph."""
    keep = 1 - select.sum(axis=1)
    return (ws0 * keep[None, :, None] + select @ latent).astype(np.float32)


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


@functools.lru_cache(maxsize=16)
def _window(r2: int) -> np.ndarray:
    return window_offsets(r2)


@functools.lru_cache(maxsize=16)
def _disk(r1: float) -> np.ndarray:
    return disk_offsets(r1)


def _numpy(v) -> np.ndarray:
    return v if isinstance(v, np.ndarray) else v.numpy()


# ----------------------------------------------------------------------------
# The runtime


class DragRuntime:
    """DragGAN optimisation of a W / W+ latent from an artifact folder (see the module docstring).

    Args:
        folder: artifact folder (``manifest.json`` and the files it lists).
        threads: intra-op threads of every session (None = onnxruntime's default, all cores).
        device: None (CUDA if available, else CPU), "cpu" or "cuda".
        check_hashes: verify every file's sha256 against the manifest before loading.
        options: overrides of :data:`SESSION_OPTIONS` (for measurements; the defaults are the tuned ones).
    """

    def __init__(self, folder, threads: int | None = None, device: str | None = None, check_hashes: bool = True,
                 options: dict | None = None):
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder, check_hashes)
        cfg = self.manifest["config"]
        self.num_ws, self.w_dim = int(cfg["num_ws"]), int(cfg["w_dim"])
        self.feature_shape = tuple(cfg["feature_shape"])  # (C, H, W)
        self.image_size = tuple(cfg["image_shape"][1:])  # (H, W)
        self.step_inputs, self.step_outputs = list(cfg["step_inputs"]), list(cfg["step_outputs"])
        self.eval_outputs = list(cfg["eval_outputs"])
        self.threads = threads
        self.options = dict(options or {})
        self.device = None
        try:
            self._open(device)
        except Exception as e:
            if device is not None or self.device == "cpu":
                raise
            import warnings

            warnings.warn(f"CUDA sessions failed ({e}); running the ORT back-end on the CPU", RuntimeWarning,
                          stacklevel=2)
            self._open("cpu")
        self._ws0 = np.zeros((1, self.num_ws, self.w_dim), np.float32)
        self._select = select_matrix(self.num_ws, "w+", 1)
        self._space, self._n = "w+", 1
        self._m = self._v = None
        self._t = 0
        self._zero_mask = (np.zeros((1, 1), np.float32), np.zeros((1, 1, 1), np.float32))
        self._ov_cache: dict[str, tuple] = {}
        self._const_cache: dict = {}

    def _open(self, device):
        ort = import_onnxruntime()

        self.providers, self.device = providers_and_device(device)
        opts = session_options(self.threads, **self.options)
        f = self.folder
        cfg = self.manifest["config"]
        pre = set(cfg.get("preoptimized", ())) if self.device == "cpu" else set()
        if {**SESSION_OPTIONS, **self.options}["optimization"] != SESSION_OPTIONS["optimization"]:
            pre = set()  # measuring other settings: let ORT optimise the originals as asked
        opts_pre = session_options(self.threads, **{**self.options, "optimization": "disabled"}) if pre else None
        self.preoptimized = sorted(pre)

        def pick(name):  # (path, options) of one graph
            return (f / preoptimized_name(name), opts_pre) if name in pre else (f / name, opts)

        (train, o), (evalm, o2) = pick("training_model.onnx"), pick("eval_model.onnx")
        if o is not o2:  # one Module, one set of options
            (train, o), (evalm, _) = (f / "training_model.onnx", opts), (f / "eval_model.onnx", opts)
        self.trainer = Trainer(f / "checkpoint", train, evalm, self.device, o)
        if self.trainer.input_names() != self.step_inputs:
            raise ArtifactError(f"{f}: training inputs {self.trainer.input_names()} != manifest {self.step_inputs}")

        def sess(name):
            path, o = pick(name)
            return ort.InferenceSession(os.fspath(path), o, providers=self.providers)

        self._adamw = sess(ADAM_FILE)
        self._tail = sess("tail.onnx") if cfg["tail_inputs"] else None
        # The mapping session opens on first use: the dragnb back-ends map seeds with torch and never need it.
        self._open_mapping = functools.partial(sess, "mapping.onnx") if cfg["has_mapping"] else None
        self._mapping = None
        self._trainable = cfg["trainable"]
        self._ort_device = "cuda" if self.device.startswith("cuda") else "cpu"
        self._ov_cache, self._const_cache = {}, {}

    # ------------------------------------------------------------------ latent and Adam state

    @property
    def _latent(self) -> np.ndarray:
        return self.trainer.get(self._trainable)

    def _set_latent(self, latent: np.ndarray) -> None:
        self.trainer.set(self._trainable, latent)

    def start(self, ws0: np.ndarray, latent_space: str = "w+", num_layers: int = 6) -> None:
        """Train the latent from ``ws0`` float32 [1, num_ws, w_dim]: written into the checkpoint state,
        Adam moments and step reset. No re-export, no new session."""
        ws0 = np.asarray(ws0, np.float32)
        if ws0.shape != (1, self.num_ws, self.w_dim):
            raise ValueError(f"ws0 must have shape [1, {self.num_ws}, {self.w_dim}], got {list(ws0.shape)}")
        self._select = select_matrix(self.num_ws, latent_space, num_layers)
        self._space, self._n = latent_space, int(num_layers)
        self._ws0 = ws0.copy()
        self._ov_cache.clear()
        self._set_latent(ws0)  # rows the select matrix ignores keep ws0's values (never updated)
        self._m = np.zeros_like(ws0)
        self._v = np.zeros_like(ws0)
        self._t = 0

    def ws(self) -> np.ndarray:
        """float32 [1, num_ws, w_dim]: the current full ws."""
        return compose_ws(self._ws0, self._select, self._latent)

    def _rows(self) -> int:
        return self._n if self._space == "w+" else 1

    def get_state(self) -> dict:
        """The optimisation state in the layout of ``dragnb.backends.base.STATE_KEYS`` (copies)."""
        r = self._rows()
        return {
            "ws0": self._ws0.copy(), "latent": self._latent[:, :r].copy(), "exp_avg": self._m[:, :r].copy(),
            "exp_avg_sq": self._v[:, :r].copy(), "step": np.array(self._t, np.int64),
            "num_layers": np.array(self._n, np.int64), "latent_space": np.array(self._space),
        }

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state` exactly (shapes are the caller's to check)."""
        space, n = str(np.asarray(state["latent_space"])), int(state["num_layers"])
        self.start(np.asarray(state["ws0"], np.float32), space, n)
        r = self._rows()
        latent = self._ws0.copy()
        latent[:, :r] = np.asarray(state["latent"], np.float32)
        self._set_latent(latent)
        self._m[:, :r] = np.asarray(state["exp_avg"], np.float32)
        self._v[:, :r] = np.asarray(state["exp_avg_sq"], np.float32)
        self._t = int(state["step"])

    def _adam(self, grad: np.ndarray, lr: float) -> None:
        """One update by ORT's AdamWOptimizer kernel (step = t after increment, as api.Optimizer passes it)."""
        self._t += 1
        _, p, m, v = self._adamw.run(None, {
            "learning_rate": np.array([lr], np.float32), "step": np.array([self._t], np.int64),
            "params": [self._latent], "gradients": [grad], "first_order_moments": [self._m],
            "second_order_moments": [self._v],
        })
        self._set_latent(p[0])
        self._m, self._v = m[0], v[0]

    # ------------------------------------------------------------------ forward pieces

    def mapping(self, z: np.ndarray, psi: float = 0.7) -> np.ndarray:
        """z [N, z_dim] -> ws [N, num_ws, w_dim] with truncation psi (unconditional models)."""
        if self._open_mapping is None:
            raise ArtifactError("these artifacts have no mapping network (conditional model)")
        if self._mapping is None:
            self._mapping = self._open_mapping()
        return self._mapping.run(None, {"z": np.asarray(z, np.float32), "psi": np.array(psi, np.float32)})[0]

    def seed_ws(self, seed: int, psi: float = 0.7) -> np.ndarray:
        """ws of ``np.random.RandomState(seed).randn(1, z_dim)`` (the seed convention of dragnb and DragGAN)."""
        z = np.random.RandomState(int(seed)).randn(1, int(self.manifest["config"]["z_dim"]))
        return self.mapping(z, psi)

    def render(self, ws: np.ndarray, block_x, block_img) -> np.ndarray:
        """Display image float [3, H, W] from a step's feature-block activations (OrtValues or arrays)."""
        if self._tail is None:  # the feature block is the last block: its partial image is the image
            return _numpy(block_img)[0]
        feeds = {"ws": ws, "block_x": block_x, "block_img": block_img}
        feeds = {k: self._wrap(feeds[k]) for k in self.manifest["config"]["tail_inputs"]}
        return self._tail.run_with_ort_values(None, feeds)[0].numpy()[0]

    def resize(self, block_x) -> np.ndarray:
        """Feature-block activation [1, C, h, w] -> features float32 [C, H, W] at image size.

        F0 (:meth:`features`) and ``return_features``: the same arithmetic as the step's own sampling
        (:func:`resize_features`, in numpy: no ORT arena keeps the map's temporaries afterwards).
        """
        return resize_features(_numpy(block_x), self.image_size)

    def _wrap(self, a):
        """An OrtValue on the session device (zero-copy for C-contiguous arrays on the CPU, and for the C
        OrtValues that :meth:`Trainer.run` returns)."""
        OrtValue = import_onnxruntime().OrtValue

        if isinstance(a, OrtValue):
            return a
        if isinstance(a, np.ndarray):
            return OrtValue.ortvalue_from_numpy(a, self._ort_device)
        return OrtValue(a)

    def _const(self, key, make):
        """OrtValue of a value that depends on ``key`` only (window and disk offsets, scalars), made once."""
        hit = self._const_cache.get(key)
        if hit is None:
            if len(self._const_cache) > 64:  # values a slider went through: keep the cache small
                self._const_cache.clear()
            arr = make()
            hit = self._const_cache[key] = (arr, self._wrap(arr))
        return hit[1]

    def _cached(self, slot: str, a, dtype, shape=None):
        """OrtValue of a per-drag constant (ws0, F0 * mask, mask, reference features), made once per array object.

        Callers pass the same array every step and a new one after an edit (DragSession does); an array
        changed in place is seen on the CPU (zero-copy) but not re-uploaded on CUDA.
        """
        hit = self._ov_cache.get(slot)
        if hit is None or hit[0] is not a:
            arr = np.ascontiguousarray(np.asarray(a, dtype).reshape(shape if shape else np.shape(a)))
            hit = self._ov_cache[slot] = (a, arr, self._wrap(arr))  # keep ``arr`` alive: the OrtValue uses it
        return hit[2]

    def _feeds(self, handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance, l1):
        """OrtValues in ``step_inputs`` order (see ``ort_export.STEP_INPUTS``)."""
        if fixed is None:  # broadcast zeros: the mask term is exactly 0 and nothing large is allocated
            fixed, f0_fixed = self._zero_mask
        wrap = lambda a, dtype: self._wrap(np.ascontiguousarray(a, dtype))  # noqa: E731
        return [
            self._cached("ws0", self._ws0, np.float32), self._cached("select", self._select, np.float32),
            wrap(np.reshape(handles_rc, (-1, 2)), np.int64), wrap(np.reshape(targets_rc, (-1, 2)), np.float32),
            self._cached("ref_feats", ref_feats, np.float32, (-1, self.feature_shape[0])),
            self._const(("window", int(r2)), lambda: _window(int(r2))),
            self._const(("disk", float(r1)), lambda: _disk(float(r1))),
            self._cached("fixed", fixed, np.float32), self._cached("f0_fixed", f0_fixed, np.float32),
            # Scalars via np.array: ascontiguousarray would make them [1] and the loss [1] with them.
            self._const(("lambda", float(lambda_mask)), lambda: np.array(lambda_mask, np.float32)),
            self._const(("tolerance", float(tolerance)), lambda: np.array(tolerance, np.float32)),
            self._const(("l1", bool(l1)), lambda: np.array(bool(l1))),
        ]

    def _run(self, feeds, names, training: bool = True) -> dict:
        out = dict(zip(names, self.trainer.run(feeds, training)))  # OrtValues: no output copies
        out.setdefault("block_img", None)
        return out

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(image float [3, H, W], features float32 [C, H, W]) at the current latent.

        The eval graph (the step's forward without backward) gives the feature-block activations, the tail
        the image, then :meth:`resize` the features: the same elementwise arithmetic as the training graph's
        sampling of them (``dragnb.drag.core.ResizedFeatures``), so they equal the training forward's bit for
        bit and F0 taken from here makes the mask term exactly 0 at the start. Rendering before resizing keeps
        the [C, H, W] map and the tail's activations out of memory at the same time. (Artifact sets whose eval
        graph outputs the features themselves, as ``ort_export.generate_step_artifacts`` makes by default,
        are read from there.)
        """
        c = self.feature_shape[0]
        dummy = self._feeds(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, c)), None, None, 0.0, 1.0, 0, 0.0, False)
        out = self._run(dummy, self.eval_outputs, training=False)
        if "features" in out:
            return self.render(self.ws(), out["block_x"], out["block_img"]), out["features"].numpy()
        image = self.render(self.ws(), out["block_x"], out["block_img"])
        return image, self.resize(out["block_x"])

    def step(self, handles_rc, targets_rc, ref_feats, fixed=None, f0_fixed=None, lambda_mask=10.0, r1=3.0, r2=12,
             tolerance=2.0, l1_tracking=False, lr=2e-3, render_image=False, return_features=False) -> dict:
        """ONE DragGAN step (shapes as in ``dragnb.backends.base.Backend.step``).

        Returns a dict: loss, motion, mask (floats), tracked_rc int64 [P, 2], distance float32 [P],
        converged (bool; then the latent was not updated), image float [3, H, W] or None, features
        float32 [C, H, W] or None. Everything belongs to the latent BEFORE this step's update.
        """
        ws = self.ws() if render_image else None
        self.trainer.lazy_reset_grad()  # ORT accumulates gradients across calls otherwise
        feeds = self._feeds(handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance,
                            l1_tracking)
        out = self._run(feeds, self.step_outputs)
        converged = bool(out["converged"].numpy())
        if not converged:
            self._adam(self.trainer.grad(self._trainable), float(lr))
        return {
            "loss": float(out["loss"].numpy()), "motion": float(out["motion"].numpy()),
            "mask": float(out["mask"].numpy()), "tracked_rc": out["tracked_rc"].numpy().astype(np.int64),
            "distance": out["distance"].numpy().astype(np.float32), "converged": converged,
            "image": self.render(ws, out["block_x"], out["block_img"]) if render_image else None,
            "features": self.resize(out["block_x"]) if return_features else None,
        }


# ----------------------------------------------------------------------------
# A whole drag (the on-device loop)


def drag(rt: DragRuntime, ws0: np.ndarray, handles_rc, targets_rc, steps: int = 100, fixed=None,
         latent_space: str = "w+", num_layers: int | None = None, lr: float | None = None,
         lambda_mask: float | None = None, r1: float | None = None, r2: int | None = None,
         tolerance: float | None = None, l1_tracking: bool | None = None) -> list[dict]:
    """Run DragGAN from ``ws0`` until every handle arrives or ``steps`` steps: the per-step results.

    ``handles_rc`` int [P, 2], ``targets_rc`` float [P, 2] in (row, col); ``fixed`` float [H, W] or None.
    Parameters left None take the model's tuned values from the manifest (``drag_defaults``, as
    ``DragSession`` does), else the official ones: 6 layers, lr 2e-3, lambda 10, L2 tracking, and
    r1/r2/tolerance from ``dragnb.drag.core.default_radii`` (also in the manifest).
    """
    cfg = rt.manifest["config"]
    tuned = cfg.get("drag_defaults") or {}
    d1, d2, dt = cfg["default_radii"]
    official = {"num_layers": 6, "lr": 2e-3, "lambda_mask": 10.0, "l1_tracking": False, "r1": d1, "r2": d2,
                "tolerance": dt}
    given = {"num_layers": num_layers, "lr": lr, "lambda_mask": lambda_mask, "l1_tracking": l1_tracking, "r1": r1,
             "r2": r2, "tolerance": tolerance}
    p = {k: v if v is not None else tuned.get(k, official[k]) for k, v in given.items()}
    num_layers, lr, lambda_mask, l1_tracking = p["num_layers"], p["lr"], p["lambda_mask"], p["l1_tracking"]
    r1, r2, tolerance = p["r1"], p["r2"], p["tolerance"]
    rt.start(ws0, latent_space, num_layers)
    _, f0 = rt.features()
    handles = np.asarray(handles_rc, np.int64).reshape(-1, 2)
    ref = f0[:, handles[:, 0], handles[:, 1]].T.copy()  # [P, C]
    f0_fixed = None if fixed is None else (f0 * np.asarray(fixed, np.float32)[None]).astype(np.float32)
    history = []
    for _ in range(int(steps)):
        r = rt.step(handles, targets_rc, ref, fixed, f0_fixed, lambda_mask, r1, r2, tolerance, l1_tracking, lr)
        history.append(r)
        handles = r["tracked_rc"]
        if r["converged"]:
            break
    return history


def _pairs(values) -> np.ndarray:
    return np.array([[float(v) for v in s.split(",")] for s in values]).reshape(-1, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="DragGAN from dragnb ORT artifacts (numpy + onnxruntime only)")
    ap.add_argument("artifacts", help="artifact folder")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="start from this seed (truncation --psi)")
    src.add_argument("--ws", help=".npy file with ws0 [1, num_ws, w_dim]")
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--handle", action="append", required=True, help="row,col (repeat per point)")
    ap.add_argument("--target", action="append", required=True, help="row,col (repeat per point)")
    ap.add_argument("--mask", help=".npy file with the fixed mask [H, W] (1 = keep)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--latent-space", default="w+", choices=LATENT_SPACES)
    # Unset: the model's tuned values (manifest drag_defaults), else the official ones.
    ap.add_argument("--num-layers", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--lambda-mask", type=float)
    ap.add_argument("--r1", type=float)
    ap.add_argument("--r2", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="write the per-step points and losses as JSON here")
    a = ap.parse_args(argv)
    rt = DragRuntime(a.artifacts, threads=a.threads)
    ws0 = rt.seed_ws(a.seed, a.psi) if a.seed is not None else np.load(a.ws)
    fixed = np.load(a.mask) if a.mask else None
    hist = drag(rt, ws0, _pairs(a.handle).astype(np.int64), _pairs(a.target), a.steps, fixed, a.latent_space,
                a.num_layers, a.lr, a.lambda_mask, a.r1, a.r2)
    result = {
        "tracked_rc": [h["tracked_rc"].tolist() for h in hist], "loss": [h["loss"] for h in hist],
        "converged": hist[-1]["converged"] if hist else False, "ws": rt.ws().tolist(),
    }
    if a.out:
        Path(a.out).write_text(json.dumps(result))
    print(f"{len(hist)} steps, loss {result['loss'][-1]:.5g}, points {hist[-1]['tracked_rc'].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
