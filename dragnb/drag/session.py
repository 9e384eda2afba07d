"""``DragSession``: the one DragGAN API the notebooks, the widget and the CLI use.

A session holds a generator, the image's latent (in a back-end, see ``dragnb/backends/base.py``), the
point pairs, the optional fixed-region mask, the undo history and a recording of every step::

    s = DragSession(seed=3)                       # the bundled model; or DragSession(G) / DragSession("file")
    s.add_point(handle=(40, 30), target=(48, 30))
    for r in s.run():                              # one StepResult per optimisation step
        print(r.step, r.loss, r.handle_points)
    s.undo(); s.save("my_drag")

Points are (x, y) image pixels (x right, y down, pixel centres at integers); the conversion to the
(row, col) of arrays is ``geometry.xy_to_rc`` / ``geometry.rc_to_xy`` only. Handles snap to the nearest pixel
(tracking moves them pixel by pixel); targets may be fractional.

A *drag* is the run of steps between two edits (points, mask, params, seed) or ``run()`` calls; ``undo()``
goes back to the state before the last drag. The optimisation itself (F0, the reference features of the
handles, a fresh Adam state) restarts from the current latent at the first step after an edit, so
stopping and calling ``run()`` again continues exactly where it stopped.

Torch-free ORT drags: a session on an exported ORT artifact folder (``DragSession(folder)``, back-end "ort", or
an :class:`~dragnb.backends.ort_model.ArtifactModel`) maps seeds with the artifacts' mapping graph and never
imports torch: nothing this module imports at its top does. The artifacts fix the feature block and the
noise mode, and such a session cannot switch to the PyTorch back-end.

Thread safety: every method takes the session lock, and ``run()`` releases it between steps, so
``stop()`` (a ``threading.Event``, safe from any thread or asyncio task) and edits from another
thread land between two steps.
"""

from __future__ import annotations

import asyncio
import json
import math
import numbers
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import LATENT_SPACES, STATE_KEYS, load_backend
from ..backends.ort_model import ArtifactModel

# numpy-only imports (torch, the checkpoints and the generator are imported where a torch model is used)
from ..fileio import atomic_write, atomic_write_text
from ..stylegan.conventions import NOISE_MODES, z_from_seed
from . import geometry
from .recording import Recording, draw_points

if TYPE_CHECKING:
    from ..stylegan.networks import Generator

BACKENDS = ("torch", "ort")
ARTIFACT_BACKEND = "ort"  # the only back-end of a session on ORT artifacts (ArtifactModel)
SESSION_FORMAT = "dragnb-session"
SESSION_VERSION = 1
MAX_HISTORY = 100

# Parameter defaults; None = derived from the model (see DragSession.params). A model may carry its own tuned
# defaults (``G.drag_defaults``, from the ``drag_defaults`` metadata of its safetensors file; see
# ``model_defaults``): they replace these, and explicit parameters replace both.
DEFAULT_PARAMS = {
    "lr": 2e-3,             # Adam learning rate (official DragGAN 1e-3; 2e-3 suits small models)
    "lambda_mask": 10.0,    # weight of the fixed-region term
    "r1": None,             # motion-supervision radius, pixels (None: geometry.default_radii)
    "r2": None,             # tracking window half-size, pixels (None: geometry.default_radii)
    "tolerance": None,      # arrival distance, pixels (None: geometry.default_radii)
    "max_steps": 200,       # steps of one run()
    "feature_block": None,  # synthesis block of the features (None: min(5, blocks - 2); 5 = official)
    "num_layers": None,     # leading ws optimised (None: min(6, num_ws); 6 = official)
    "l1_tracking": False,   # tracking distance L1 (paper) instead of L2 (official code)
    "render_every": 1,      # in run(), render the full image every k-th step (always the last)
    "noise_mode": "const",  # generator noise: "const", "random" or "none"
}


class PointIndexError(ValueError, IndexError):
    """A point index out of range (a ValueError, and an IndexError for ``except IndexError`` users)."""


@dataclass
class StepResult:
    """One optimisation step. Image, points and losses are those of the step's forward (before its update)."""

    step: int                                    # session step index (0 = first step after the seed/reset)
    image: np.ndarray | None                     # uint8 [H, W, 3]; None on steps run() did not render
    handle_points: list[tuple[float, float]]     # tracked handles (x, y)
    target_points: list[tuple[float, float]]     # targets (x, y)
    loss: float                                  # motion + lambda_mask * mask
    motion: float                                # motion-supervision term
    mask: float                                  # fixed-region term (before lambda_mask)
    converged: bool                              # every handle within tolerance of its target (no update done)
    ms: float                                    # wall time of the back-end step, milliseconds
    distance: list[float] = field(default_factory=list)  # pixels from each handle to its target


# ----------------------------------------------------------------------------
# Validation helpers (raise before any state changes)


def _real(name: str, v, *, low=None, low_inclusive=True, allow_none=False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {v}")
    return v


def _int(name: str, v, *, low=None, high=None, allow_none=False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    v = int(v)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be in [{low}, {high if high is not None else 'inf'}], got {v}")
    return v


def _check_seed(seed) -> int:
    return _int("seed", seed, low=0, high=2**32 - 1)


def _check_params(params: dict, G: Generator | ArtifactModel) -> dict:
    """Validated copy of a full parameter dict (unknown names -> ValueError, wrong types -> TypeError; on
    ORT artifacts, a feature block or noise mode other than the exported ones -> ValueError)."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    p = dict(params)
    p["lr"] = _real("lr", p["lr"], low=0, low_inclusive=False)
    p["lambda_mask"] = _real("lambda_mask", p["lambda_mask"], low=0)
    p["r1"] = _real("r1", p["r1"], low=0, low_inclusive=False, allow_none=True)
    p["r2"] = _int("r2", p["r2"], low=1, allow_none=True)
    p["tolerance"] = _real("tolerance", p["tolerance"], low=0, low_inclusive=False, allow_none=True)
    p["max_steps"] = _int("max_steps", p["max_steps"], low=1)
    p["feature_block"] = _int("feature_block", p["feature_block"], low=0, high=G.num_blocks - 1, allow_none=True)
    p["num_layers"] = _int("num_layers", p["num_layers"], low=1, high=G.num_ws, allow_none=True)
    if not isinstance(p["l1_tracking"], (bool, np.bool_)):
        raise TypeError(f"l1_tracking must be a bool, got {type(p['l1_tracking']).__name__}")
    p["l1_tracking"] = bool(p["l1_tracking"])
    p["render_every"] = _int("render_every", p["render_every"], low=1)
    if p["noise_mode"] not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {p['noise_mode']!r}")
    if isinstance(G, ArtifactModel):
        resolved = _resolve_params(p, G)
        G.check_params(resolved["feature_block"], resolved["noise_mode"])
    return p


def model_defaults(G: Generator | ArtifactModel) -> dict:
    """The parameter defaults for ``G``: ``DEFAULT_PARAMS`` updated with the model's own tuned ``G.drag_defaults``.

    ``G.drag_defaults`` (a dict, ``{}`` or absent for most models) comes from the ``drag_defaults`` metadata entry
    of a dragnb safetensors file (``save_generator(G, path, drag_defaults=...)``); the bundled ``toyfaces`` carries
    the values tuned for its 128 px faces (``dragnb.toy.train.DRAG_DEFAULTS``). Unknown names are ignored with a
    warning (a newer file); values are validated with the rest of the parameters. Pretrained models have none
    and keep the official DragGAN rules (``geometry.default_radii``, feature block 5, 6 layers). An
    :class:`ArtifactModel` has its manifest's ``drag_defaults`` plus the exported feature block and noise mode.
    """
    tuned = dict(G.drag_defaults)
    unknown = sorted(set(tuned) - set(DEFAULT_PARAMS))
    if unknown:
        warnings.warn(f"ignoring unknown drag_defaults {unknown} of the model", stacklevel=3)
    return {**DEFAULT_PARAMS, **{k: v for k, v in tuned.items() if k in DEFAULT_PARAMS}}


def _resolve_params(raw: dict, G: Generator | ArtifactModel) -> dict:
    """Raw parameters with the model-derived defaults filled in (None: the model's tuned value if it has one,
    else the rule for its resolution)."""
    tuned = G.drag_defaults
    r1, r2, tol = geometry.default_radii(G.img_resolution)
    derived = {"r1": r1, "r2": r2, "tolerance": tol, "feature_block": max(0, min(5, G.num_blocks - 2)),
               "num_layers": min(6, G.num_ws)}
    p = dict(raw)
    for k, v in derived.items():
        if raw[k] is None:
            p[k] = v if tuned.get(k) is None else tuned[k]
    return p


def _check_backend(G, backend: str) -> None:
    """ValueError unless ``backend`` can run ``G``: ORT artifacts have no PyTorch weights."""
    if isinstance(G, ArtifactModel) and backend != ARTIFACT_BACKEND:
        raise ValueError(f"a session on ORT artifacts ({G.folder}) runs backend {ARTIFACT_BACKEND!r} only, not "
                         f"{backend!r}: open the session on the generator's checkpoint for the PyTorch back-end")


def _session_paths(path) -> tuple[Path, Path, Path]:
    """(json, npz, generator weights) of a saved session: a folder, or a ``.json``/``.npz`` pair."""
    path = Path(path)
    if path.suffix in (".json", ".npz"):
        return path.with_suffix(".json"), path.with_suffix(".npz"), path.with_suffix(".safetensors")
    return path / "session.json", path / "session.npz", path / "generator.safetensors"


# ----------------------------------------------------------------------------


class DragSession:
    """Interactive DragGAN on one generated image.

    Args:
        model: None (the bundled "toyfaces"), a model name or checkpoint path, or a ``dragnb.Generator``; or, for
            a torch-free ORT drag, an ORT artifact folder (any directory is taken as one) or an
            :class:`~dragnb.backends.ort_model.ArtifactModel` (``backend`` then "ort" or None).
        seed: image seed, ``z = RandomState(seed).randn(1, z_dim)``, in [0, 2**32).
        truncation_psi: truncation toward the mean w (DragGAN uses 0.7).
        backend: "torch" or "ort" (ONNX Runtime training; optional dependency); None: "ort" on ORT artifacts
            (their only back-end), else "torch".
        latent_space: "w+" (one w per optimised layer) or "w" (one w broadcast to them).
        autosave_dir: if set, the session saves itself there (:meth:`save`) after every step, at the end of
            every drag and after undo/reset, so a kernel crash loses at most the running step.
        **params: see ``DEFAULT_PARAMS`` (lr, lambda_mask, r1, r2, tolerance, max_steps, feature_block,
            num_layers, l1_tracking, render_every, noise_mode). Unset ones take the model's tuned defaults
            (``G.drag_defaults``, see :func:`model_defaults`; the bundled 128 px toyfaces has some), then
            ``DEFAULT_PARAMS`` and the official resolution rules.
    """

    def __init__(self, model=None, seed=0, truncation_psi=0.7, backend=None, latent_space="w+", *,
                 autosave_dir=None, **params):
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
        seed = _check_seed(seed)
        psi = _real("truncation_psi", truncation_psi)
        unknown = sorted(set(params) - set(DEFAULT_PARAMS))
        if unknown:  # before the (possibly slow) model load
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
        G, model_ref = self._open_model(model)
        if backend is None:
            backend = ARTIFACT_BACKEND if isinstance(G, ArtifactModel) else "torch"
        raw = _check_params({**model_defaults(G), **params}, G)
        self._setup(G, model_ref, psi, backend, latent_space, raw, autosave_dir)
        self._ws_seed = self._seed_ws(seed)
        self.seed = seed
        self._restart(self._ws_seed)

    @staticmethod
    def _open_model(model) -> tuple[Generator | ArtifactModel, str | None]:
        """(model, reference to save: a bundled name or an absolute path (a checkpoint file or an ORT artifact
        folder); None for an in-memory generator). Only a torch model imports torch."""
        if isinstance(model, ArtifactModel):
            return model, str(model.folder)
        if isinstance(model, (str, os.PathLike)) and Path(model).expanduser().is_dir():
            G = ArtifactModel(model)  # a checkpoint is a file: a directory can only be an artifact folder
            return G, str(G.folder)
        if model is None or isinstance(model, (str, os.PathLike)):
            from ..checkpoints import BUNDLED, DEFAULT_MODEL, load_generator, resolve_model

            model = DEFAULT_MODEL if model is None else model
            G = load_generator(model)
            return G, (str(model) if str(model) in BUNDLED else str(resolve_model(model).resolve()))
        from ..stylegan.networks import Generator  # any other object: a torch generator, so torch is loaded

        if isinstance(model, Generator):
            return model, None
        raise TypeError(f"model must be None, a name, a path, an ORT artifact folder, an ArtifactModel or a "
                        f"dragnb.Generator, got {type(model).__name__}")

    def _setup(self, G, model_ref, psi, backend, latent_space, raw, autosave_dir):
        if G.c_dim:
            raise ValueError("conditional generators (c_dim > 0) are not supported by DragSession yet")
        _check_backend(G, backend)
        self.G, self._model_ref = G, model_ref
        self.truncation_psi = psi
        self.backend_name, self.latent_space = backend, latent_space
        self._raw = raw
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.recording = Recording()
        self.autosave_dir = None if autosave_dir is None else Path(autosave_dir)
        self._weights_saved: set[str] = set()  # where this session already wrote in-memory weights
        self.H, self.W = G.img_resolution, G.img_width
        p = self.params
        self._backend = load_backend(backend)(G, p["feature_block"], p["noise_mode"])
        # Points, (x, y) float [P, 2]: current (tracked) handles, targets, and where the user put each handle.
        self._handles = np.zeros((0, 2))
        self._targets = np.zeros((0, 2))
        self._origins = np.zeros((0, 2))
        self._mask: np.ndarray | None = None
        self._history: list[dict] = []
        self._n_steps = 0             # steps since the seed / reset
        self._drag_open = False       # steps taken since the last edit / run() call
        self._drag_steps = 0
        self._needs_init = True       # the optimisation restarts (F0, refs, Adam) at the next step
        self._initial_rc = None       # int64 [P, 2] handles when F0 was taken
        self._ref_feats = self._fixed = self._f0_fixed = None
        self._image: np.ndarray | None = None  # image of the current latent, when known

    def _seed_ws(self, seed: int, truncation_psi: float | None = None) -> np.ndarray:
        """float32 [1, num_ws, w_dim]: the ws of ``z_from_seed(seed)`` at ``truncation_psi`` (None: the session's)."""
        psi = self.truncation_psi if truncation_psi is None else truncation_psi
        z = z_from_seed(seed, self.G.z_dim)
        if isinstance(self.G, ArtifactModel):  # no torch generator: the artifacts' mapping graph (mapping.onnx)
            return np.asarray(self._backend.runtime.mapping(z, psi), np.float32)
        import torch

        with torch.no_grad():
            ws = self.G.mapping(torch.from_numpy(z).float().to(next(self.G.parameters()).device), truncation_psi=psi)
        return ws.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ properties

    @property
    def params(self) -> dict:
        """The parameters in force, model-derived defaults resolved to numbers."""
        return _resolve_params(self._raw, self.G)

    @property
    def image(self) -> np.ndarray:
        """uint8 [H, W, 3] image of the current latent."""
        with self._lock:
            if self._image is None:
                self._image = self._backend.features()[0]
            return self._image.copy()

    @property
    def handle_points(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in self._handles]

    @property
    def target_points(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in self._targets]

    @property
    def mask(self) -> np.ndarray | None:
        """bool [H, W] fixed region (True = keep), or None."""
        return None if self._mask is None else self._mask.copy()

    @property
    def ws(self) -> np.ndarray:
        """float32 [1, num_ws, w_dim] current latent."""
        with self._lock:
            return self._backend.ws()

    @property
    def num_steps(self) -> int:
        """Steps taken since the seed image (or the last reset)."""
        return self._n_steps

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    @property
    def ort_artifacts(self) -> Path | None:
        """The ORT artifact folder the back-end runs (None on the PyTorch back-end): ``DragSession(folder)`` opens
        it in a process without torch, and ``ort_runtime.py`` runs it on a device with numpy and onnxruntime only."""
        with self._lock:
            return Path(self._backend.folder) if self.backend_name == "ort" else None

    def __repr__(self) -> str:
        return (f"DragSession({self._model_ref or 'in-memory model'}, seed={self.seed}, {self.W}x{self.H}, "
                f"backend={self.backend_name!r}, latent_space={self.latent_space!r}, points={len(self._targets)}, "
                f"steps={self._n_steps})")

    # ------------------------------------------------------------------ points and mask

    def _check_xy(self, name: str, p) -> np.ndarray:
        """A validated (x, y) point inside the image, float64 [2]."""
        bad = TypeError(f"{name} must be an (x, y) pair of numbers, got {p!r}")
        if isinstance(p, (list, tuple)):
            if len(p) != 2:
                raise bad
            xy = np.array([_real(f"{name} {c}", v) for c, v in zip("xy", p)])
        else:  # numpy arrays, tensors
            try:
                arr = np.asarray(p)
            except Exception:
                raise bad from None
            if arr.shape != (2,) or arr.dtype.kind not in "iuf":
                raise bad
            xy = arr.astype(np.float64)
            if not np.isfinite(xy).all():
                raise ValueError(f"{name} must be finite, got {tuple(xy)}")
        if not (0 <= xy[0] <= self.W - 1 and 0 <= xy[1] <= self.H - 1):
            raise ValueError(
                f"{name} {tuple(xy)} is outside the image (x in [0, {self.W - 1}], y in [0, {self.H - 1}])")
        return xy

    def _check_pair(self, handle, target) -> tuple[np.ndarray, np.ndarray]:
        h = np.rint(self._check_xy("handle", handle))
        t = self._check_xy("target", target)
        if np.array_equal(h, t):
            raise ValueError(f"handle and target coincide at {tuple(t)}: nothing to drag")
        return h, t

    def _check_index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"point index must be an int, got {type(i).__name__}")
        n = len(self._targets)
        if not -n <= i < n:
            raise PointIndexError(f"point index {i} out of range ({n} points)")
        return int(i) % n

    def _edited(self) -> None:
        """Any edit ends the open drag and restarts the optimisation at the next step."""
        self._close_drag()
        self._needs_init = True

    def add_point(self, handle, target) -> int:
        """Add a pair; ``handle`` and ``target`` are (x, y) in image pixels. Returns the point index."""
        with self._lock:
            h, t = self._check_pair(handle, target)
            self._edited()
            self._handles = np.vstack([self._handles, h])
            self._targets = np.vstack([self._targets, t])
            self._origins = np.vstack([self._origins, h])
            return len(self._targets) - 1

    def move_point(self, i, handle=None, target=None) -> None:
        """Move the handle and/or the target of point ``i`` (None leaves it)."""
        with self._lock:
            i = self._check_index(i)
            if handle is None and target is None:
                return
            h, t = self._check_pair(self._handles[i] if handle is None else handle,
                                    self._targets[i] if target is None else target)
            self._edited()
            self._handles[i], self._targets[i] = h, t
            if handle is not None:
                self._origins[i] = h

    def remove_point(self, i) -> None:
        with self._lock:
            i = self._check_index(i)
            self._edited()
            self._handles, self._targets, self._origins = (
                np.delete(a, i, axis=0) for a in (self._handles, self._targets, self._origins))

    def clear_points(self) -> None:
        with self._lock:
            self._edited()
            self._handles, self._targets, self._origins = np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))

    def set_mask(self, fixed) -> None:
        """``fixed``: bool array [H, W], True where the image must stay as it is."""
        if fixed is None:
            raise TypeError("fixed must be a bool array [H, W]; use clear_mask() to remove the mask")
        arr = np.asarray(fixed)
        if arr.dtype != np.bool_:
            raise TypeError(f"fixed must be a bool array, got dtype {arr.dtype}")
        if arr.shape != (self.H, self.W):
            raise ValueError(f"fixed must have shape ({self.H}, {self.W}), got {arr.shape}")
        with self._lock:
            self._edited()
            self._mask = arr.copy()

    def clear_mask(self) -> None:
        with self._lock:
            self._edited()
            self._mask = None

    # ------------------------------------------------------------------ settings

    def set_params(self, **params) -> None:
        """Change parameters (validated all together; on error nothing changes)."""
        with self._lock:
            raw = _check_params({**self._raw, **params}, self.G)
            old, new = self.params, _resolve_params(raw, self.G)
            if raw == self._raw:
                return
            backend = self._backend
            if (new["feature_block"], new["noise_mode"]) != (old["feature_block"], old["noise_mode"]):
                backend = load_backend(self.backend_name)(self.G, new["feature_block"], new["noise_mode"])
                backend.set_state(self._backend.get_state())
            self._close_drag()
            self._backend, self._raw = backend, raw
            if any(new[k] != old[k] for k in ("feature_block", "noise_mode", "num_layers")):
                self._needs_init = True
                self._image = None if new["noise_mode"] != old["noise_mode"] else self._image

    def set_seed(self, seed, truncation_psi=None) -> None:
        """A new image: the latent of ``seed`` at ``truncation_psi`` (None: unchanged); points, mask, history and
        recording are cleared."""
        seed = _check_seed(seed)
        psi = self.truncation_psi if truncation_psi is None else _real("truncation_psi", truncation_psi)
        with self._lock:
            ws = self._seed_ws(seed, psi)
            self._close_drag()
            self.seed, self._ws_seed, self.truncation_psi = seed, ws, psi
            self._handles, self._targets, self._origins = np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))
            self._mask = None
            self._history.clear()
            self.recording.clear()
            self._n_steps = 0
            self._restart(ws)

    def _restart(self, ws: np.ndarray) -> None:
        p = self.params
        self._backend.start(ws, self.latent_space, p["num_layers"], p["lr"])
        self._needs_init = True
        self._image = None

    # ------------------------------------------------------------------ history

    def _snapshot(self) -> dict:
        return {
            "state": self._backend.get_state(),
            "handles": self._handles.copy(), "targets": self._targets.copy(), "origins": self._origins.copy(),
            "mask": self.mask,
            "initial_rc": None if self._initial_rc is None else self._initial_rc.copy(),
            "needs_init": self._needs_init, "n_steps": self._n_steps,
        }

    def _push_history(self, snap: dict) -> None:
        self._history.append(snap)
        del self._history[:-MAX_HISTORY]

    def _restore(self, snap: dict) -> None:
        self._backend.set_state(snap["state"])
        self._handles, self._targets, self._origins = snap["handles"], snap["targets"], snap["origins"]
        self._mask = snap["mask"]
        self._initial_rc, self._needs_init, self._n_steps = snap["initial_rc"], snap["needs_init"], snap["n_steps"]
        self._image = None
        if int(snap["state"]["num_layers"]) != self.params["num_layers"]:
            self._needs_init = True  # num_layers changed since: start afresh with the setting in force
        if not self._needs_init:
            self._recompute_refs()

    def _close_drag(self) -> None:
        if self._drag_open:
            self._drag_open = False
            if self._drag_steps:
                self._autosave()
            self._drag_steps = 0

    def undo(self) -> bool:
        """Back to the latent, optimizer state, points and mask before the last drag (or reset). False if none."""
        with self._lock:
            if not self._history:
                return False
            self._close_drag()
            self._restore(self._history.pop())
            self._autosave()
            return True

    def reset(self) -> None:
        """Back to the seed image; handles return to where they were placed (undoable)."""
        with self._lock:
            self._close_drag()
            if self._n_steps == 0 and np.array_equal(self._handles, self._origins) and np.array_equal(
                    self._backend.ws(), self._ws_seed):
                return  # already at the seed image
            self._push_history(self._snapshot())
            self._handles = self._origins.copy()
            self._n_steps = 0
            self._restart(self._ws_seed)
            self._autosave()

    # ------------------------------------------------------------------ optimisation

    def _init_optimisation(self) -> None:
        """Restart from the current latent: fresh Adam, F0 and the reference features of the handles."""
        p = self.params
        self._backend.start(self._backend.ws(), self.latent_space, p["num_layers"], p["lr"])
        img, f0 = self._backend.features()
        self._image = img
        self._initial_rc = geometry.xy_to_rc(self._handles).round().astype(np.int64)
        self._set_refs(f0)
        self._needs_init = False

    def _set_refs(self, f0: np.ndarray) -> None:
        r, c = self._initial_rc[:, 0], self._initial_rc[:, 1]
        self._ref_feats = np.ascontiguousarray(f0[:, r, c].T)  # [P, C]
        if self._mask is None:
            self._fixed = self._f0_fixed = None
        else:
            self._fixed = self._mask.astype(np.float32)
            self._f0_fixed = f0 * self._fixed

    def _recompute_refs(self) -> None:
        """F0 is the feature map at the back-end's ws0 (where the optimisation started): recompute it there."""
        state = self._backend.get_state()
        p = self.params
        self._backend.start(state["ws0"], str(state["latent_space"]), int(state["num_layers"]), p["lr"])
        _, f0 = self._backend.features()
        self._backend.set_state(state)
        self._set_refs(f0)

    def step(self) -> StepResult:
        """One DragGAN step (one generator forward, tracking, losses, one Adam update unless converged)."""
        with self._lock:
            return self._step(render=True)

    def _step(self, render: bool) -> StepResult:
        if not len(self._targets):
            raise ValueError("no points to drag: add_point(handle=(x, y), target=(x, y)) first")
        snap = None if self._drag_open else self._snapshot()
        if self._needs_init:
            self._init_optimisation()
        p = self.params
        ws_before = self._backend.ws() if render else None
        handles_rc = geometry.xy_to_rc(self._handles).round().astype(np.int64)
        t0 = time.perf_counter()
        out = self._backend.step(
            handles_rc, geometry.xy_to_rc(self._targets).astype(np.float32), self._ref_feats, self._fixed,
            self._f0_fixed, p["lambda_mask"], p["r1"], p["r2"], p["tolerance"], p["l1_tracking"], p["lr"],
            render_image=render,
        )
        ms = (time.perf_counter() - t0) * 1000
        if snap is not None:
            self._push_history(snap)
            self._drag_open = True
        self._drag_steps += 1
        index, self._n_steps = self._n_steps, self._n_steps + 1
        self._handles = geometry.rc_to_xy(out.tracked_rc)
        image = out.image
        if out.converged:  # no update was made: the step's image is the current one
            image = image if image is not None else self._backend.features()[0]
            ws_before = self._backend.ws()
            self._image = image
        else:
            self._image = None
        if image is not None:
            self.recording.add(index, image, self._handles, self._targets, ws_before)
        self._autosave()  # a crash loses at most the running step
        return StepResult(
            step=index, image=image, handle_points=self.handle_points, target_points=self.target_points,
            loss=out.loss, motion=out.motion, mask=out.mask, converged=out.converged, ms=ms,
            distance=[float(d) for d in out.distance],
        )

    def run(self, max_steps=None):
        """Iterator of StepResult, one per step, until convergence, ``max_steps`` (default: params) or ``stop()``.

        Each call starts a new drag (one undo unit). In run(), full images are rendered every
        ``render_every`` steps and on the last step (None otherwise).
        """
        n = self._raw["max_steps"] if max_steps is None else _int("max_steps", max_steps, low=1)
        if not len(self._targets):
            raise ValueError("no points to drag: add_point(handle=(x, y), target=(x, y)) first")
        self._stop.clear()
        with self._lock:
            self._close_drag()
        return self._run(n)

    def _run(self, n: int):
        try:
            for i in range(n):
                if self._stop.is_set():
                    break
                with self._lock:
                    res = self._step(render=(i + 1) % self._raw["render_every"] == 0 or i == n - 1)
                yield res
                if res.converged:
                    break
        finally:
            with self._lock:
                self._close_drag()

    async def arun(self, max_steps=None):
        """``run()`` for asyncio: each step runs in a worker thread so the event loop (and ``stop()``) stays live."""
        it = self.run(max_steps)
        done = object()
        while (res := await asyncio.to_thread(next, it, done)) is not done:
            yield res

    def stop(self) -> None:
        """Ask a running ``run()`` to end before its next step (any thread, or an asyncio task)."""
        self._stop.set()

    # ------------------------------------------------------------------ for the workbench widget

    def set_latent_space(self, latent_space) -> None:
        """Optimise in "w" or "w+" from the next step on, from the current latent (a new drag).

        Going from "w+" to "w" after a drag starts the single w from the first optimised layer's w (the
        back-end's "w" start), so the image can jump at that step.
        """
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
        with self._lock:
            if latent_space != self.latent_space:
                self._edited()
                self.latent_space = latent_space

    def set_backend(self, backend) -> None:
        """Switch the optimisation back-end ("torch" / "ort"). Latent and Adam state carry over (both back-ends
        keep the same state), so the drag continues; the ORT back-end exports its artifacts on first use (slow once).
        A session on ORT artifacts has no PyTorch back-end (ValueError)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
        with self._lock:
            if backend == self.backend_name:
                return
            _check_backend(self.G, backend)
            p = self.params
            new = load_backend(backend)(self.G, p["feature_block"], p["noise_mode"])
            new.set_state(self._backend.get_state())
            self._backend, self.backend_name = new, backend

    def tracking_features(self) -> tuple[np.ndarray, np.ndarray]:
        """What point tracking compares, for inspection (the workbench's internals view); one generator forward.

        Returns ``(features, ref_feats)``: float32 [C, H, W] features of the current latent at ``feature_block``,
        resized to image size; float32 [P, C] each handle's reference feature, i.e. its feature in F0 at its
        initial position (before the first step after an edit: its feature here, which is what F0 will hold).
        """
        with self._lock:
            self._image, feat = self._backend.features()
            if self._needs_init or self._ref_feats is None or len(self._ref_feats) != len(self._handles):
                rc = geometry.xy_to_rc(self._handles).round().astype(np.int64)
                return feat, np.ascontiguousarray(feat[:, rc[:, 0], rc[:, 1]].T)
            return feat, self._ref_feats.copy()

    # ------------------------------------------------------------------ recording

    def export_gif(self, path, overlays: bool = True, fps: float = 10, size: int | None = None) -> Path:
        """The recorded steps as an animated GIF (handles red, targets blue, arrows)."""
        return self.recording.export_gif(path, overlays, fps, size)

    def export_mp4(self, path, overlays: bool = True, fps: float = 10, size: int | None = None) -> Path:
        return self.recording.export_mp4(path, overlays, fps, size)

    def export_png(self, path, overlays: bool = False) -> Path:
        """The current image (optionally with the current points drawn) as PNG."""
        from PIL import Image

        img = self.image
        if overlays:
            img = draw_points(img, self._handles, self._targets)
        path = Path(path)
        Image.fromarray(img).save(path)
        return path

    def export_latents(self, path) -> Path:
        """The ws of every recorded frame, float32 [T, num_ws, w_dim] ``.npy``."""
        return self.recording.export_latents(path)

    # ------------------------------------------------------------------ save / load

    def _autosave(self) -> None:
        if self.autosave_dir is not None:
            try:
                self.save(self.autosave_dir)
            except OSError as e:  # a full disk must not kill the drag
                warnings.warn(f"auto-save to {self.autosave_dir} failed: {e}", stacklevel=2)

    def save(self, path) -> Path:
        """Save to a folder (``session.json`` + ``session.npz``) or a ``.json``/``.npz`` pair; no pickle.

        Holds points, mask, latents, optimizer state, settings and history (not the recording). The npz is
        complete on its own (it embeds the JSON document; ``session.json`` is the readable copy). A session
        on an in-memory generator also writes its weights (``generator.safetensors``) once.
        """
        with self._lock:
            jpath, npath, wpath = _session_paths(path)
            jpath.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"ws_seed": self._ws_seed}
            for k, v in self._backend.get_state().items():
                arrays[f"state/{k}"] = v
            if self._mask is not None:
                arrays["mask"] = self._mask
            history = []
            for i, snap in enumerate(self._history):
                for k, v in snap["state"].items():
                    arrays[f"history/{i}/state/{k}"] = v
                if snap["mask"] is not None:
                    arrays[f"history/{i}/mask"] = snap["mask"]
                history.append(self._points_json(snap))
            if self._model_ref is not None:
                model = {"ref": self._model_ref}
            else:
                if str(wpath.resolve()) not in self._weights_saved or not wpath.exists():
                    from ..checkpoints import save_generator

                    save_generator(self.G, wpath)
                    self._weights_saved.add(str(wpath.resolve()))
                model = {"file": wpath.name}
            doc = {
                "format": SESSION_FORMAT, "version": SESSION_VERSION, "model": model,
                "image_size": [self.H, self.W], "seed": self.seed, "truncation_psi": self.truncation_psi,
                "backend": self.backend_name, "latent_space": self.latent_space, "params": self._raw,
                "current": self._points_json(self._snapshot_meta()),
                "drag_open": self._drag_open, "drag_steps": self._drag_steps, "history": history,
            }

            def write_npz(tmp):
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)

            text = json.dumps(doc, indent=1)
            # The npz carries the document too, so one atomic rename keeps arrays and document consistent
            # (a crash between the two renames leaves a stale session.json, which load() does not trust).
            arrays["session_json"] = np.array(text)
            atomic_write(npath, write_npz)
            atomic_write_text(jpath, text)
            return jpath

    def _snapshot_meta(self) -> dict:
        return {"handles": self._handles, "targets": self._targets, "origins": self._origins,
                "mask": self._mask, "initial_rc": self._initial_rc, "needs_init": self._needs_init,
                "n_steps": self._n_steps}

    @staticmethod
    def _points_json(snap: dict) -> dict:
        return {
            "handles": np.asarray(snap["handles"]).tolist(), "targets": np.asarray(snap["targets"]).tolist(),
            "origins": np.asarray(snap["origins"]).tolist(), "has_mask": snap["mask"] is not None,
            "initial_rc": None if snap["initial_rc"] is None else np.asarray(snap["initial_rc"]).tolist(),
            "needs_init": bool(snap["needs_init"]), "n_steps": int(snap["n_steps"]),
        }

    @classmethod
    def load(cls, path, model=None, autosave_dir=None) -> DragSession:
        """Restore a session saved by :meth:`save`; continuing gives the same steps as never having stopped.

        ``model`` overrides the saved model reference (a name, path, ORT artifact folder, Generator or
        ArtifactModel of the same architecture). On ORT artifacts the session runs the "ort" back-end whatever
        it was saved with (the optimisation state is the same for both back-ends).
        """
        jpath, npath, _ = _session_paths(path)
        with np.load(npath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        doc = json.loads(str(arrays["session_json"])) if "session_json" in arrays else {}
        if doc.get("format") != SESSION_FORMAT or doc.get("version") != SESSION_VERSION:
            raise ValueError(f"{npath}: not a dragnb session file (version {SESSION_VERSION})")
        weights = None
        if model is None:
            ref = doc["model"].get("ref")
            model = ref if ref is not None else jpath.parent / doc["model"]["file"]
            weights = None if ref is not None else str(Path(model).resolve())
        G, model_ref = cls._open_model(model)
        if weights is not None:
            model_ref = None  # weights live beside the session: keep saving them with it
        if [G.img_resolution, G.img_width] != doc["image_size"] or arrays["ws_seed"].shape != (1, G.num_ws, G.w_dim):
            raise ValueError(f"{jpath}: the session was saved with a different model architecture")
        s = cls.__new__(cls)
        raw = _check_params({**model_defaults(G), **doc["params"]}, G)
        backend = ARTIFACT_BACKEND if isinstance(G, ArtifactModel) else doc["backend"]
        s._setup(G, model_ref, float(doc["truncation_psi"]), backend, doc["latent_space"], raw, autosave_dir)
        s.seed, s._ws_seed = int(doc["seed"]), arrays["ws_seed"]
        if weights is not None:
            s._weights_saved.add(weights)

        def snap_from(meta: dict, prefix: str) -> dict:
            return {
                "state": {k: arrays[f"{prefix}state/{k}"] for k in STATE_KEYS},
                "handles": np.array(meta["handles"], float).reshape(-1, 2),
                "targets": np.array(meta["targets"], float).reshape(-1, 2),
                "origins": np.array(meta["origins"], float).reshape(-1, 2),
                "mask": arrays[f"{prefix}mask"] if meta["has_mask"] else None,
                "initial_rc": (None if meta["initial_rc"] is None
                               else np.array(meta["initial_rc"], np.int64).reshape(-1, 2)),
                "needs_init": meta["needs_init"], "n_steps": meta["n_steps"],
            }

        s._history = [snap_from(m, f"history/{i}/") for i, m in enumerate(doc["history"])]
        s._restore(snap_from(doc["current"], ""))
        s._drag_open, s._drag_steps = bool(doc["drag_open"]), int(doc["drag_steps"])
        return s
