"""The DragGAN loop from ORT artifacts with numpy and onnxruntime-training only (no torch, no dragnb imports).

This file is self-contained on purpose: copied next to an artifact folder (``ort_cache.py`` writes one) it
runs a drag on a device that has only ``numpy`` and ``onnxruntime-training``::

    python ort_runtime.py ARTIFACTS --seed 0 --handle 10,12 --target 14,12 --steps 20

:class:`~dragnb.backends.ort_backend.OrtBackend` drives this same class, so the in-process ORT back-end
and the on-device loop are one implementation.

Per :meth:`DragRuntime.step`: ONE training-graph call (forward to the feature block, tracking, motion and
mask losses, backward to the latent), then, unless every point has arrived, ONE Adam update on state held
here: in dragnb mode ORT's own ``AdamWOptimizer`` node (``adamw.onnx``; see ``ort_optim.explicit_optimizer``),
in official and blog modes (artifacts exported with that ``compat``) ``torch.optim.Adam``'s rule as a graph of
elementwise ops (``torch_adam.onnx``; ``ort_optim.torch_adam_model``). The manifest's ``config.optimizer``
names the rule and its file.
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
import json
import os
import sys
from pathlib import Path

import numpy as np

if __package__:  # inside dragnb
    from ..drag import geometry
    from ..stylegan import conventions
    from . import ort_files, ort_sessions
else:  # the copy in an artifact folder (ort_files.RUNTIME_FILES): its modules lie beside it
    import conventions
    import geometry
    import ort_files
    import ort_sessions

z_from_seed = conventions.z_from_seed
OPTIMIZERS, LATENT_SPACES, ArtifactError = ort_files.OPTIMIZERS, ort_files.LATENT_SPACES, ort_files.ArtifactError
load_manifest, SESSION_OPTIONS, Trainer = ort_files.load_manifest, ort_sessions.SESSION_OPTIONS, ort_sessions.Trainer
import_onnxruntime, session_options = ort_sessions.import_onnxruntime, ort_sessions.session_options
preoptimized_name, providers_and_device = ort_sessions.preoptimized_name, ort_sessions.providers_and_device


@functools.lru_cache(maxsize=16)
def _window(r2: int) -> np.ndarray:
    return geometry.window_offsets(r2)


@functools.lru_cache(maxsize=16)
def _disk(r1: float) -> np.ndarray:
    return geometry.disk_offsets(r1)


@functools.lru_cache(maxsize=16)
def _official_box(r1: float) -> np.ndarray:
    return geometry.official_disk_box(r1)


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
        self.compat = cfg.get("compat", "dragnb")
        self.optimizer = cfg.get("optimizer", OPTIMIZERS["dragnb"])
        if self.optimizer not in OPTIMIZERS.values():
            raise ArtifactError(f"{self.folder}: unknown optimizer {self.optimizer!r}")
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
        self._select = geometry.select_matrix(self.num_ws, "w+", 1)
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

        self._optimizer = sess(self.optimizer["file"])
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
        self._select = geometry.select_matrix(self.num_ws, latent_space, num_layers)
        self._space, self._n = latent_space, int(num_layers)
        self._ws0 = ws0.copy()
        self._ov_cache.clear()
        self._set_latent(ws0)  # rows the select matrix ignores keep ws0's values (never updated)
        self._m = np.zeros_like(ws0)
        self._v = np.zeros_like(ws0)
        self._t = 0

    def ws(self) -> np.ndarray:
        """float32 [1, num_ws, w_dim]: the current full ws."""
        return geometry.compose_ws(self._ws0, self._select, self._latent)

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
        """One Adam update by the rule of the artifacts (module docstring)."""
        self._t += 1
        if self.optimizer["rule"] == "torch-adam":
            b1, b2 = 0.9, 0.999  # torch.optim.Adam's defaults; the scalars in float64, as it computes them
            p, self._m, self._v = self._optimizer.run(None, {
                "params": self._latent, "gradients": grad, "exp_avg": self._m, "exp_avg_sq": self._v,
                "step_size": np.array(lr / (1 - b1**self._t), np.float32),
                "bias_correction2_sqrt": np.array((1 - b2**self._t) ** 0.5, np.float32),
            })
            self._set_latent(p)
            return
        # ORT's AdamWOptimizer kernel; step = t after increment, as api.Optimizer passes it
        _, p, m, v = self._optimizer.run(None, {
            "learning_rate": np.array([lr], np.float32), "step": np.array([self._t], np.int64),
            "params": [self._latent], "gradients": [grad], "first_order_moments": [self._m],
            "second_order_moments": [self._v],
        })
        self._set_latent(p[0])
        self._m, self._v = m[0], v[0]

    # ------------------------------------------------------------------ forward pieces

    def mapping(self, z: np.ndarray, psi: float = 0.7, c: np.ndarray | None = None) -> np.ndarray:
        """z [N, z_dim] -> ws [N, num_ws, w_dim] with truncation psi; ``c`` [N, c_dim]: a conditional model's labels
        (None: zeros, the label the official DragGAN code passes)."""
        cfg = self.manifest["config"]
        if self._open_mapping is None:
            raise ArtifactError("these artifacts have no mapping network (a conditional model exported by an older "
                                "dragnb): export them again")
        if self._mapping is None:
            self._mapping = self._open_mapping()
        z = np.asarray(z, np.float32)
        feeds = {"z": z, "psi": np.array(psi, np.float32)}
        if "c" in cfg.get("mapping_inputs", ()):
            c_dim = int(cfg["generator"]["c_dim"])
            feeds["c"] = np.zeros((len(z), c_dim), np.float32) if c is None else np.asarray(c, np.float32)
        elif c is not None and np.size(c):
            raise ValueError("this model is unconditional: it takes no label c")
        return self._mapping.run(None, feeds)[0]

    def seed_ws(self, seed: int, psi: float = 0.7, c: np.ndarray | None = None) -> np.ndarray:
        """ws of ``np.random.RandomState(seed).randn(1, z_dim)`` (the seed convention of dragnb and DragGAN), with
        the label ``c`` [1, c_dim] of a conditional model (None: zeros)."""
        z = z_from_seed(seed, int(self.manifest["config"]["z_dim"]))
        return self.mapping(z, psi, c)

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
        (``geometry.resize_features``, in numpy: no ORT arena keeps the map's temporaries afterwards).
        """
        return geometry.resize_features(_numpy(block_x), self.image_size)

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

    def _scalar(self, name: str, value, dtype):
        """OrtValue of a scalar input [] (made once per value)."""
        return self._const((name, value), lambda: np.array(value, dtype))

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

    def _feeds(self, handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance, l1,
               reg=0.0, previous_rc=None):
        """OrtValues in ``step_inputs`` order (see ``ort_export.STEP_INPUTS`` and ``OFFICIAL_STEP_INPUTS``)."""
        if fixed is None:  # broadcast zeros: the mask term is exactly 0 and nothing large is allocated
            fixed, f0_fixed = self._zero_mask
        wrap = lambda a, dtype: self._wrap(np.ascontiguousarray(a, dtype))  # noqa: E731
        # The official step looks for its disk in a box around each point; the others take the disk's offsets.
        disk = {"official": _official_box, "blog": geometry.blog_disk_offsets}.get(self.compat, _disk)
        feeds = {
            "ws0": lambda: self._cached("ws0", self._ws0, np.float32),
            "select": lambda: self._cached("select", self._select, np.float32),
            "handles_rc": lambda: wrap(np.reshape(handles_rc, (-1, 2)), np.int64),
            "previous_rc": lambda: wrap(np.reshape(handles_rc if previous_rc is None else previous_rc, (-1, 2)),
                                        np.int64),
            "targets_rc": lambda: wrap(np.reshape(targets_rc, (-1, 2)), np.float32),
            "ref_feats": lambda: self._cached("ref_feats", ref_feats, np.float32, (-1, self.feature_shape[0])),
            "window": lambda: self._const(("window", int(r2)), lambda: _window(int(r2))),
            "disk": lambda: self._const(("disk", self.compat, float(r1)), lambda: disk(float(r1))),
            "fixed": lambda: self._cached("fixed", fixed, np.float32),
            "f0_fixed": lambda: self._cached("f0_fixed", f0_fixed, np.float32),
            # Scalars via np.array: ascontiguousarray would make them [1] and the loss [1] with them.
            "lambda_mask": lambda: self._scalar("lambda", lambda_mask, np.float32),
            "tolerance": lambda: self._scalar("tolerance", tolerance, np.float32),
            "l1_tracking": lambda: self._scalar("l1", bool(l1), np.bool_),
            "radius": lambda: self._scalar("radius", r1, np.float32),
            "reg": lambda: self._scalar("reg", reg, np.float32),
        }
        return [feeds[name]() for name in self.step_inputs]

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
             tolerance=2.0, l1_tracking=False, lr=2e-3, render_image=False, return_features=False,
             reg=0.0, previous_rc=None) -> dict:
        """ONE DragGAN step (shapes as in ``dragnb.backends.base.Backend.step``; ``reg``: official artifacts only;
        ``previous_rc``: blog artifacts, the handles of the previous step, which their stop test looks at).

        Returns a dict: loss, motion, mask (floats), tracked_rc int64 [P, 2], distance float32 [P],
        converged (bool; then the latent was not updated), image float [3, H, W] or None, features
        float32 [C, H, W] or None. Everything belongs to the latent BEFORE this step's update.
        """
        if float(reg) and self.compat != "official":
            raise ValueError("reg is an official-mode parameter: these artifacts run the dragnb step")
        if self.compat == "official" and not float(r1) >= 1:
            raise ValueError(f"official mode needs r1 >= 1 px (an empty disk makes the official loss NaN), got {r1}")
        ws = self.ws() if render_image else None
        self.trainer.lazy_reset_grad()  # ORT accumulates gradients across calls otherwise
        feeds = self._feeds(handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance,
                            l1_tracking, reg, previous_rc)
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
         tolerance: float | None = None, l1_tracking: bool | None = None, reg: float | None = None) -> list[dict]:
    """Run DragGAN from ``ws0`` until every handle arrives or ``steps`` steps: the per-step results.

    ``handles_rc`` int [P, 2], ``targets_rc`` float [P, 2] in (row, col); ``fixed`` float [H, W] or None.
    Parameters left None take the model's drag defaults recorded in the manifest (``config.drag_params``:
    the same values a ``DragSession`` on this model uses).
    """
    defaults = rt.manifest["config"]["drag_params"]
    given = {"num_layers": num_layers, "lr": lr, "lambda_mask": lambda_mask, "l1_tracking": l1_tracking, "r1": r1,
             "r2": r2, "tolerance": tolerance, "reg": reg}
    p = {k: v if v is not None else defaults.get(k, 0.0) for k, v in given.items()}
    num_layers, lr, lambda_mask, l1_tracking = p["num_layers"], p["lr"], p["lambda_mask"], p["l1_tracking"]
    r1, r2, tolerance, reg = p["r1"], p["r2"], p["tolerance"], p["reg"]
    if r1 is None:  # official artifacts below 86 px: the official radius rounds to 0
        raise ValueError("these artifacts have no default r1 (the official rule gives 0 px here): give r1 >= 1")
    if rt.compat == "official" and fixed is not None and np.all(np.asarray(fixed) == 1):
        fixed = None  # the official code leaves out a mask term without a movable pixel
    if rt.compat == "blog" and fixed is not None:
        raise ValueError("blog artifacts have no mask term (the blog sample's loss has none): drag without a mask")
    rt.start(ws0, latent_space, num_layers)
    _, f0 = rt.features()
    handles = np.asarray(handles_rc, np.int64).reshape(-1, 2)
    ref = f0[:, handles[:, 0], handles[:, 1]].T.copy()  # [P, C]
    f0_fixed = None if fixed is None else (f0 * np.asarray(fixed, np.float32)[None]).astype(np.float32)
    history = []
    previous = handles
    for _ in range(int(steps)):
        r = rt.step(handles, targets_rc, ref, fixed, f0_fixed, lambda_mask, r1, r2, tolerance, l1_tracking, lr,
                    reg=reg, previous_rc=previous)
        history.append(r)
        previous, handles = handles, r["tracked_rc"]
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
    ap.add_argument("--class", dest="label", type=int,
                    help="class index of a conditional model (default: the all-zeros label, as the official DragGAN)")
    ap.add_argument("--handle", action="append", required=True, help="row,col (repeat per point)")
    ap.add_argument("--target", action="append", required=True, help="row,col (repeat per point)")
    ap.add_argument("--mask", help=".npy file with the fixed mask [H, W] (1 = keep)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--latent-space", default="w+", choices=LATENT_SPACES)
    # Unset: the model's drag defaults from the manifest (config.drag_params).
    ap.add_argument("--num-layers", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--lambda-mask", type=float)
    ap.add_argument("--r1", type=float)
    ap.add_argument("--r2", type=int)
    ap.add_argument("--reg", type=float, help="official artifacts: weight of mean |ws - ws0|")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="write the per-step points and losses as JSON here")
    a = ap.parse_args(argv)
    rt = DragRuntime(a.artifacts, threads=a.threads)
    c = None
    if a.label is not None:
        c_dim = int(rt.manifest["config"]["generator"]["c_dim"])
        if not 0 <= a.label < c_dim:
            ap.error(f"--class must be in [0, {c_dim - 1}] for this model" if c_dim else "the model is unconditional")
        c = np.eye(c_dim, dtype=np.float32)[None, a.label]
    ws0 = rt.seed_ws(a.seed, a.psi, c) if a.seed is not None else np.load(a.ws)
    fixed = np.load(a.mask) if a.mask else None
    hist = drag(rt, ws0, _pairs(a.handle).astype(np.int64), _pairs(a.target), a.steps, fixed, a.latent_space,
                a.num_layers, a.lr, a.lambda_mask, a.r1, a.r2, reg=a.reg)
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
