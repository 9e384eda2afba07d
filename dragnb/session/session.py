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

Conditional generators (``c_dim > 0``) take a class label ``c``: a class index, a one-hot vector, or None for
the all-zeros label that the official DragGAN code passes; ``set_class`` changes it (a new image).

Torch-free ORT drags: a session on an ORT artifact folder (``DragSession(folder)``) maps seeds with the
artifacts' mapping graph and never imports torch (nothing imported at the top of this package does). The
artifacts fix the feature block, the noise mode and the compat mode; there is no PyTorch back-end to switch to.

Thread safety: every method takes the session lock, and ``run()`` releases it between steps, so
``stop()`` (a ``threading.Event``, safe from any thread or asyncio task) and edits from another
thread land between two steps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# numpy-only imports: torch, the checkpoints and the generator are imported where a torch model is used
from ..backends import load_backend
from ..backends.ort_model import ArtifactModel
from ..drag import geometry
from ..drag.params import MAX_STEPS, DragParams, check_int, check_real
from ..drag.recording import Recording
from .files import SessionFiles
from .history import SessionHistory
from .model import check_backend, check_label, default_backend, open_model, seed_ws
from .points import PointIndexError, PointSet  # noqa: F401  (PointIndexError: part of this module's API)
from .settings import SessionSettings, check_latent_space, check_seed, durable


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


class DragSession(SessionSettings, SessionHistory, SessionFiles):
    """Interactive DragGAN on one generated image.

    Args:
        model: None (the bundled "toyfaces"), a model name or checkpoint path, or a ``dragnb.Generator``; or, for
            a torch-free ORT drag, an ORT artifact folder (any directory is taken as one) or an
            :class:`~dragnb.backends.ort_model.ArtifactModel` (``backend`` then "ort" or None).
        seed: image seed, ``z = RandomState(seed).randn(1, z_dim)``, in [0, 2**32).
        truncation_psi: truncation toward the mean w (DragGAN uses 0.7).
        c: class label of a conditional generator (``c_dim > 0``): a class index in [0, c_dim), a one-hot vector,
            or None (all zeros, what the official DragGAN code passes). Unconditional generators: None only.
        backend: "torch" or "ort" (ONNX Runtime training; optional dependency); None: "ort" on ORT artifacts
            (their only back-end), else "torch".
        latent_space: "w+" (one w per optimised layer) or "w" (one w broadcast to them).
        device: where a torch generator and the PyTorch back-end run: "auto" (a working CUDA GPU, else the CPU),
            "cpu", "cuda", "cuda:N" or "mps" (:mod:`dragnb.devices`); a generator object is moved there. ORT
            artifacts take "auto" only (ONNX Runtime's provider). An unknown or unavailable device: ValueError.
        autosave_dir: if set, the session saves itself there (:meth:`save`) when it is made, after every edit,
            step, undo and reset: a kernel crash loses at most the running step.
        **params: the fields of :class:`~dragnb.drag.params.DragParams` (lr, lambda_mask, r1, r2, tolerance,
            max_steps, feature_block, num_layers, l1_tracking, render_every, noise_mode, reg, compat); unset ones
            take the model's tuned defaults (``G.drag_defaults``), then the rules for its resolution.
            ``compat="official"`` reproduces the official DragGAN code's arithmetic step for step (its defaults,
            motion disk, Adam rule and latent regulariser ``reg``), ``compat="blog"`` the PyTorch loop of the blog
            sample (its defaults, motion term, L1 tracking one step behind, stop test; no mask term); docs/compat.md.
    """

    def __init__(self, model=None, seed=0, truncation_psi=0.7, backend=None, latent_space="w+", *,
                 autosave_dir=None, c=None, device="auto", **params):
        seed = check_seed(seed)
        psi = check_real("truncation_psi", truncation_psi)
        latent_space = check_latent_space(latent_space)
        DragParams.check_names(params)  # before the (possibly slow) model load
        if backend is not None:
            check_backend(None, backend)
        G, model_ref = open_model(model, device)
        backend = default_backend(G) if backend is None else backend
        check_backend(G, backend)
        label = check_label(c, G.c_dim)
        raw = DragParams.for_model(G, **params)
        if isinstance(G, ArtifactModel):
            resolved = raw.resolved(G)
            G.check_params(resolved.feature_block, resolved.noise_mode, resolved.compat)
        self.G, self._model_ref = G, model_ref
        self.truncation_psi = psi
        self._label = label
        self.backend_name, self.latent_space = backend, latent_space
        self._raw = raw
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.recording = Recording()
        self.autosave_dir = None if autosave_dir is None else Path(autosave_dir)
        self._weights_saved: set[str] = set()  # where this session already wrote in-memory weights
        self.H, self.W = G.img_resolution, G.img_width
        p = self.params
        self._backend = load_backend(backend)(G, p["feature_block"], p["noise_mode"], compat=p["compat"])
        self._points = PointSet(self.W, self.H)  # (x, y): tracked handles, targets, where each handle was placed
        self._mask: np.ndarray | None = None
        self._history: list[dict] = []
        self._n_steps = 0             # steps since the seed / reset
        self._drag_open = False       # steps taken since the last edit / run() call
        self._drag_steps = 0
        self._needs_init = True       # the optimisation restarts (F0, refs, Adam) at the next step
        self._initial_rc = None       # int64 [P, 2] handles when F0 was taken
        self._previous_rc = None      # int64 [P, 2] handles the previous step of the drag used
        self._ref_feats = self._fixed = self._f0_fixed = None
        self._image: np.ndarray | None = None  # image of the current latent, when known
        self._ws_seed = self._seed_ws(seed)
        self.seed = seed
        self._restart(self._ws_seed)
        self._autosave()  # from the first moment on, a crash leaves the session on disk

    def _seed_ws(self, seed: int, truncation_psi: float | None = None, label: np.ndarray | None = None) -> np.ndarray:
        """float32 [1, num_ws, w_dim]: the ws of ``z_from_seed(seed)`` at ``truncation_psi`` with ``label`` (None:
        the session's)."""
        return seed_ws(self.G, self._backend, seed, self.truncation_psi if truncation_psi is None else truncation_psi,
                       self._label if label is None else label)

    # ------------------------------------------------------------------ properties

    @property
    def params(self) -> dict:
        """The parameters in force, model-derived defaults resolved to numbers."""
        return self._raw.resolved(self.G).to_dict()

    @property
    def device(self) -> str:
        """Where the generator and the PyTorch back-end run ("cpu", "cuda:0", ...); on ORT artifacts, the ONNX
        Runtime back-end's device. Images and state cross to the host as numpy, so saved sessions are portable."""
        if isinstance(self.G, ArtifactModel):
            return str(self._backend.device)
        return str(next(self.G.parameters()).device)

    @property
    def c(self) -> np.ndarray:
        """float32 [c_dim]: the class label of the image (all zeros: none; empty for unconditional generators)."""
        return self._label.copy()

    @property
    def class_index(self) -> int | None:
        """The class of a one-hot label, else None (the all-zeros label, or an unconditional generator)."""
        hot = np.flatnonzero(self._label)
        return int(hot[0]) if len(hot) else None

    @property
    def image(self) -> np.ndarray:
        """uint8 [H, W, 3] image of the current latent."""
        with self._lock:
            if self._image is None:
                self._image = self._backend.features()[0]
            return self._image.copy()

    @property
    def handle_points(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in self._points.handles]

    @property
    def target_points(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in self._points.targets]

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
    def needs_f0(self) -> bool:
        """True when the next step first restarts the optimisation (after an edit, a new seed, a reset or undo):
        it computes F0, the features of the current latent (one generator forward more, and the resized
        [C, H, W] map: 1 GiB at 1024 px), before its own forward, so it takes about twice a later step's time."""
        return self._needs_init

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    @property
    def ort_artifacts(self) -> Path | None:
        """The ORT artifact folder the back-end runs (None on the PyTorch back-end): ``DragSession(folder)`` opens
        it in a process without torch, and ``ort_runtime.py`` runs it on a device with numpy and onnxruntime only."""
        with self._lock:
            return Path(self._backend.folder) if self.backend_name == "ort" else None

    @property
    def model_source(self) -> str | None:
        """Where the generator was opened from, unchanged: a bundled model's name or an absolute checkpoint /
        ORT artifact path; None for an in-memory generator or one tuned to a picture (its weights are the
        session's own)."""
        return None if self.picture is not None else self._model_ref

    def __repr__(self) -> str:
        label = f", class={self.class_index}" if self.G.c_dim else ""
        return (f"DragSession({self._model_ref or 'in-memory model'}, seed={self.seed}{label}, {self.W}x{self.H}, "
                f"backend={self.backend_name!r}, latent_space={self.latent_space!r}, points={len(self._points)}, "
                f"steps={self._n_steps})")

    # ------------------------------------------------------------------ points and mask

    def _edited(self) -> None:
        """Any edit ends the open drag and restarts the optimisation at the next step."""
        self._close_drag()
        self._needs_init = True

    @durable
    def add_point(self, handle, target) -> int:
        """Add a pair; ``handle`` and ``target`` are (x, y) in image pixels. Returns the point index."""
        with self._lock:
            h, t = self._points.check_pair(handle, target)
            self._points.check_room()
            self._edited()
            return self._points.append(h, t)

    @durable
    def move_point(self, i, handle=None, target=None) -> None:
        """Move the handle and/or the target of point ``i`` (None leaves it)."""
        with self._lock:
            pts = self._points
            i = pts.check_index(i)
            if handle is None and target is None:
                return
            h, t = pts.check_pair(pts.handles[i] if handle is None else handle,
                                  pts.targets[i] if target is None else target)
            self._edited()
            pts.set(i, h, t, placed=handle is not None)

    @durable
    def remove_point(self, i) -> None:
        with self._lock:
            i = self._points.check_index(i)
            self._edited()
            self._points.delete(i)

    @durable
    def clear_points(self) -> None:
        with self._lock:
            self._edited()
            self._points.clear()

    @durable
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

    @durable
    def clear_mask(self) -> None:
        with self._lock:
            self._edited()
            self._mask = None

    # ------------------------------------------------------------------ optimisation

    def _restart(self, ws: np.ndarray) -> None:
        p = self.params
        self._backend.start(ws, self.latent_space, p["num_layers"], p["lr"])
        self._needs_init = True
        self._image = None


    def _init_optimisation(self) -> None:
        """Restart from the current latent: fresh Adam, F0 and the reference features of the handles."""
        p = self.params
        self._backend.start(self._backend.ws(), self.latent_space, p["num_layers"], p["lr"])
        img, f0 = self._backend.features()
        self._image = img
        self._initial_rc = geometry.xy_to_rc(self._points.handles).round().astype(np.int64)
        self._previous_rc = None  # the handles the last step of this drag used (blog mode's stop test)
        self._set_refs(f0)
        self._needs_init = False

    def _set_refs(self, f0: np.ndarray) -> None:
        r, c = self._initial_rc[:, 0], self._initial_rc[:, 1]
        self._ref_feats = np.ascontiguousarray(f0[:, r, c].T)  # [P, C]
        # The official code leaves out the mask term unless the mask has both kinds of pixels; the blog sample's
        # loss has none.
        compat = self.params["compat"]
        no_term = self._mask is None or compat == "blog" or (compat == "official" and self._mask.all())
        if no_term:
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
        if not len(self._points):
            raise ValueError("no points to drag: add_point(handle=(x, y), target=(x, y)) first")
        snap = None if self._drag_open else self._snapshot()
        if self._needs_init:
            self._init_optimisation()
        p = self.params
        ws_before = self._backend.ws() if render else None
        pts = self._points
        handles_rc = geometry.xy_to_rc(pts.handles).round().astype(np.int64)
        t0 = time.perf_counter()
        out = self._backend.step(
            handles_rc, geometry.xy_to_rc(pts.targets).astype(np.float32), self._ref_feats, self._fixed,
            self._f0_fixed, p["lambda_mask"], p["r1"], p["r2"], p["tolerance"], p["l1_tracking"], p["lr"],
            render_image=render, reg=p["reg"], previous_rc=self._previous_rc,
        )
        self._previous_rc = handles_rc
        ms = (time.perf_counter() - t0) * 1000
        if snap is not None and not out.converged:  # a drag that starts converged changes nothing: no undo unit
            self._push_history(snap)
            self._drag_open = True
        self._drag_steps += 1
        index, self._n_steps = self._n_steps, self._n_steps + 1
        pts.handles = geometry.rc_to_xy(out.tracked_rc)
        image = out.image
        if out.converged:  # no update was made: the step's image is the current one
            image = image if image is not None else self._backend.features()[0]
            ws_before = self._backend.ws()
            self._image = image
        else:
            self._image = None
        if image is not None:
            self.recording.add(index, image, pts.handles, pts.targets, ws_before)
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
        n = self.params["max_steps"] if max_steps is None else check_int("max_steps", max_steps, low=1, high=MAX_STEPS)
        if not len(self._points):
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
                    res = self._step(render=(i + 1) % self.params["render_every"] == 0 or i == n - 1)
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

    def tracking_features(self) -> tuple[np.ndarray, np.ndarray]:
        """What point tracking compares, for inspection (the workbench's internals view); one generator forward.

        Returns ``(features, ref_feats)``: float32 [C, H, W] features of the current latent at ``feature_block``,
        resized to image size; float32 [P, C] each handle's reference feature, i.e. its feature in F0 at its
        initial position (before the first step after an edit: its feature here, which is what F0 will hold).
        """
        with self._lock:
            self._image, feat = self._backend.features()
            if self._needs_init or self._ref_feats is None or len(self._ref_feats) != len(self._points):
                rc = geometry.xy_to_rc(self._points.handles).round().astype(np.int64)
                return feat, np.ascontiguousarray(feat[:, rc[:, 0], rc[:, 1]].T)
            return feat, self._ref_feats.copy()
