"""Pivotal tuning as ONNX Runtime on-device training: the generator's synthesis weights are the trainable
parameters (where the drag artifacts train only a latent).

The training graph (:class:`TuneGraph`) is one step of :class:`~dragnb.projection.tuning.PivotalTuner`: the
synthesis network renders the pivot and the step's regulariser latent, and the graph returns
``loss = recon(G'(pivot), picture) + locality_weight * recon_reg(G'(w_r), G(w_r))`` (first output, where ORT
seeds the backward pass), the two terms and the pivot's image. Inputs: ``pivot`` [1, num_ws, w_dim],
``target`` [1, 3, H, W], ``reg_ws`` [1, num_ws, w_dim], ``reg_target`` [1, 3, H, W], ``locality_weight`` [] and
one noise map per noise layer (``noise/<layer>`` [H_l, W_l]: the projection's, so a picture's own noise maps
need no new artifacts). Trainable: every synthesis parameter but the noise strengths (``trainable`` in the
manifest), which are frozen; Adam is ORT's AdamW with no weight decay (the PyTorch tuner's Adam).

Artifacts (one set per model weights and loss settings, cached beside the drag artifacts, ``<root>/ort-tune/
<key>/``): ``training_model.onnx``, ``eval_model.onnx``, ``optimizer_model.onnx``, ``checkpoint`` (the weights:
trainable and frozen), the torch-free runtime (``tune_runtime.py`` and ``ort_sessions.py``) and
``manifest.json`` with every file's size and sha256, verified before every use. The runtime
(:mod:`dragnb.projection.tune_runtime`) runs them with numpy and onnxruntime-training only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backends import ort_cache, ort_files
from ..backends.onnx_export import OPSET
from ..backends.ort_graph import native_stderr_to_log
from ..backends.ort_sessions import import_onnxruntime
from ..fileio import atomic_write_text
from .losses import ReconstructionLoss
from .projector import noise_buffers
from .tuning import ADAM_BETAS, ADAM_EPS, trainable_parameters

TUNE_FORMAT, TUNE_VERSION = "dragnb-ort-tune", 1
INPUTS = ("pivot", "target", "reg_ws", "reg_target", "locality_weight")
OUTPUTS = ("loss", "recon", "locality", "image")
RUNTIME = {"tune_runtime.py": "projection/tune_runtime.py", "ort_sessions.py": "backends/ort_sessions.py"}
SOURCES = ("stylegan/networks.py", "stylegan/ops.py", "projection/losses.py", "projection/ort_tune.py",
           *RUNTIME.values())
ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")
_PKG = Path(__file__).resolve().parent.parent


class TuneGraph(nn.Module):
    """One pivotal-tuning forward with explicit noise-map inputs (see the module docstring)."""

    def __init__(self, G, loss: ReconstructionLoss, reg_loss: ReconstructionLoss, noise_mode: str = "const"):
        super().__init__()
        import copy

        self.synthesis = copy.deepcopy(G.synthesis).train(False)
        self.loss, self.reg_loss, self.noise_mode = loss, reg_loss, noise_mode
        self.noise_names = sorted(noise_buffers(self.synthesis))

    def forward(self, pivot, target, reg_ws, reg_target, locality_weight, *noise):
        for name, n in zip(self.noise_names, noise):
            layer, _, buf = name.rpartition(".")
            self.synthesis.get_submodule(layer)._buffers[buf] = n
        img = self.synthesis(pivot, noise_mode=self.noise_mode)
        recon = self.loss(img, target)[0]
        reg = self.reg_loss(self.synthesis(reg_ws, noise_mode=self.noise_mode), reg_target)[0]
        return recon + locality_weight * reg, recon, reg, img


def input_names(G) -> list[str]:
    return [*INPUTS, *(f"noise/{n}" for n in sorted(noise_buffers(G.synthesis)))]


def _export(G, loss, reg_loss, path, noise_mode) -> list[str]:
    graph = TuneGraph(G, loss, reg_loss, noise_mode)
    h, w = G.img_resolution, G.img_width
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    img = torch.zeros(1, G.img_channels, h, w)
    noise = [b.detach().clone() for _, b in sorted(noise_buffers(G.synthesis).items())]
    for p in graph.synthesis.parameters():  # the loss's own weights (LPIPS) stay frozen constants
        p.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (ws, img, ws, img, torch.tensor(1.0), *noise), os.fspath(path),
                          input_names=input_names(G), output_names=list(OUTPUTS), opset_version=OPSET,
                          dynamo=False, export_params=True, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.TRAINING)
    return [f"synthesis.{n}" for n, _ in trainable_parameters(graph.synthesis)]


def generate_tune_artifacts(G, out_dir, loss=None, reg_loss=None, noise_mode: str = "const") -> dict:
    """Write the ORT training artifacts of pivotal tuning for ``G`` into the existing folder ``out_dir``;
    returns the manifest's config."""
    import onnx

    import_onnxruntime()
    from onnxruntime.training import artifacts, onnxblock

    h, w = G.img_resolution, G.img_width
    loss = loss or ReconstructionLoss(h, w)
    reg_loss = reg_loss or ReconstructionLoss(h, w, 0.1, perceptual_weight=0.1)
    out = Path(out_dir)
    trainable = _export(G.eval(), loss, reg_loss, out / "tune.onnx", noise_mode)
    model = onnx.load(os.fspath(out / "tune.onnx"))
    inits = {i.name for i in model.graph.initializer}
    missing = [n for n in trainable if n not in inits]
    if missing:
        raise RuntimeError(f"exported tuning graph lacks trainable weights {missing[:3]}")
    frozen = [n for n in inits if n.startswith("synthesis.") and n not in trainable and "noise_const" not in n]
    with contextlib.redirect_stdout(None), native_stderr_to_log():
        artifacts.generate_artifacts(model, requires_grad=trainable, frozen_params=frozen, loss=None,
                                     optimizer=onnxblock.optim.AdamW(betas=ADAM_BETAS, eps=ADAM_EPS,
                                                                     weight_decay=0.0),
                                     artifact_directory=os.fspath(out))
    (out / "tune.onnx").unlink()
    for name, rel in RUNTIME.items():
        shutil.copyfile(_PKG / rel, out / name)
    return {"generator": G.cfg.to_dict(), "noise_mode": noise_mode, "inputs": input_names(G),
            "outputs": list(OUTPUTS), "trainable": trainable, "frozen": sorted(frozen),
            "image_shape": [G.img_channels, h, w], "num_ws": G.num_ws, "w_dim": G.w_dim,
            "loss": loss.name, "reg_loss": reg_loss.name,
            "adam": {"betas": list(ADAM_BETAS), "eps": ADAM_EPS, "weight_decay": 0.0}}


def cache_key(G, loss_name: str, reg_name: str, noise_mode: str) -> tuple[str, dict]:
    src = hashlib.sha256()
    for rel in SOURCES:
        src.update(rel.encode() + b"\0" + (_PKG / rel).read_bytes())
    fields = {"weights_sha256": ort_cache.weights_sha256(G), "loss": loss_name, "reg_loss": reg_name,
              "noise_mode": noise_mode, "opset": OPSET, "sources_sha256": src.hexdigest(),
              "versions": {"torch": torch.__version__, "onnxruntime": import_onnxruntime().__version__}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24], fields


def verify(folder: Path, key: str) -> str | None:
    """None if ``folder`` holds a complete, unmodified tuning artifact set for ``key``; else why not."""
    try:
        m = json.loads((folder / ort_files.MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"manifest unreadable ({e})"
    if not isinstance(m, dict) or m.get("format") != TUNE_FORMAT or m.get("version") != TUNE_VERSION:
        return "not a tuning artifact manifest"
    if m.get("key") != key:
        return "made for other weights or settings"
    files = m.get("files")
    if not isinstance(files, dict) or set(files) != {*ARTIFACT_FILES, *RUNTIME}:
        return "the manifest does not list exactly the artifact files"
    for name, info in files.items():
        p = folder / name
        if not p.is_file() or p.is_symlink() or p.stat().st_size != info.get("size"):
            return f"{name}: missing or of the wrong size"
        if ort_files.file_sha256(p) != info.get("sha256"):
            return f"{name}: contents differ from the manifest"
    return None


def ensure_tune_artifacts(G, loss=None, reg_loss=None, noise_mode: str = "const", root=None) -> Path:
    """The cached tuning artifact folder of ``G`` (generated once, then verified at every use)."""
    h, w = G.img_resolution, G.img_width
    loss = loss or ReconstructionLoss(h, w)
    reg_loss = reg_loss or ReconstructionLoss(h, w, 0.1, perceptual_weight=0.1)
    key, fields = cache_key(G, loss.name, reg_loss.name, noise_mode)
    base = Path(root) if root is not None else ort_cache.default_root()
    folder = base / "ort-tune" / key
    if folder.is_dir() and verify(folder, key) is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with ort_cache._locked(folder.parent / f".{key}.lock"):
        why = verify(folder, key) if folder.is_dir() else None
        if folder.is_dir() and why is None:
            return folder
        if folder.is_dir():
            warnings.warn(f"tuning artifacts {folder} unusable ({why}): regenerating", ort_cache.ArtifactCacheWarning,
                          stacklevel=2)
            shutil.rmtree(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:
            t0 = time.perf_counter()
            config = generate_tune_artifacts(G, tmp, loss, reg_loss, noise_mode)
            files = {n: {"size": (tmp / n).stat().st_size, "sha256": ort_files.file_sha256(tmp / n)}
                     for n in (*ARTIFACT_FILES, *RUNTIME)}
            manifest = {"format": TUNE_FORMAT, "version": TUNE_VERSION, "key": key, **fields, "config": config,
                        "files": files, "seconds": round(time.perf_counter() - t0, 2)}
            atomic_write_text(tmp / ort_files.MANIFEST, json.dumps(manifest, indent=1))
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def artifact_sizes(folder) -> dict[str, int]:
    """Bytes of each file of a tuning artifact folder (notebook and docs)."""
    return {p.name: p.stat().st_size for p in sorted(Path(folder).iterdir()) if p.is_file()}


def noise_feeds(G, noise: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """``noise/<layer>`` inputs: the projection's noise maps, else the generator's stored ones."""
    bufs = noise_buffers(G.synthesis)
    noise = noise or {}
    return {f"noise/{n}": np.ascontiguousarray(noise.get(n, bufs[n].detach().numpy()), np.float32)
            for n in sorted(bufs)}


class OrtPivotalTuner:
    """:class:`~dragnb.projection.tuning.PivotalTuner` on ONNX Runtime: the same data, schedule and steps, the
    weights trained by ORT from the cached artifacts. ``run()``, ``stop()``, ``render()`` and ``generator()``
    behave as the PyTorch tuner's; ``generator()`` copies the trained weights into a PyTorch generator."""

    def __init__(self, G, ws, target, noise=None, settings=None, *, threads: int | None = None, root=None,
                 **kwargs):
        from .tuning import PivotalTuner

        self._torch = PivotalTuner(G, ws, target, noise, settings, **kwargs)  # data, settings, the copy to fill
        t = self._torch
        self.settings, self.G, self.target, self.pivot = t.settings, G, t.target, t.pivot
        self.loss, self.reg_loss = t.loss, t.reg_loss  # their .name / .perceptual say which terms ran
        self.folder = ensure_tune_artifacts(G, t.loss, t.reg_loss, t.noise_mode, root)
        from .tune_runtime import TuneRuntime

        self.runtime = TuneRuntime(self.folder, threads)
        self._noise = noise_feeds(t.tuned, None)  # the tuned copy holds the projection's noise maps
        self._step = 0
        self.history: list[float] = []
        self._stop = t._stop

    def stop(self) -> None:
        self._stop.set()

    def _feeds(self, i: int) -> dict:
        from .projector import to_tensor

        return {"pivot": self.pivot, "target": to_tensor(self.target).numpy(), **self._noise,
                "reg_ws": self._torch.reg_ws[i : i + 1], "reg_target": self._torch.reg_image(i),
                "locality_weight": np.array(self.settings.locality_weight, np.float32)}

    def run(self):
        from .losses import psnr
        from .projector import to_tensor, to_uint8
        from .tuning import TuningStep

        self._stop.clear()
        s, target = self.settings, to_tensor(self.target)
        while self._step < s.num_steps and not self._stop.is_set():
            i, t0 = self._step, time.perf_counter()
            loss, recon, reg, img = self.runtime.step(self._feeds(i), s.lr_at(i))
            img = torch.from_numpy(img)
            last = i == s.num_steps - 1
            self.history.append(loss)
            self._step += 1
            yield TuningStep(i, loss, recon, reg, psnr(img, target),
                             to_uint8(img) if last or i % s.render_every == 0 else None,
                             (time.perf_counter() - t0) * 1000)

    def generator(self):
        """The PyTorch generator with the ORT-trained weights (the tuner's copy, updated at each call)."""
        T = self._torch.tuned
        params = dict(T.named_parameters())
        with torch.no_grad():
            for name, value in self.runtime.weights().items():
                params[name].copy_(torch.from_numpy(value))
        return T

    def load_weights(self, weights: dict) -> None:
        """Overwrite ORT's trainable weights (graph names, ``synthesis.<param>``, as :meth:`generator` reads them;
        float32 arrays or tensors) and leave the optimizer state alone: two back-ends can then take the next step
        from the same weights (``dragnb.toy.picturecheck.tuning_agreement``)."""
        unknown = set(weights) - set(self.runtime.config["trainable"])
        if unknown:
            raise KeyError(f"not trainable weights of this tuning graph: {sorted(unknown)[:3]}")
        for name, value in weights.items():
            value = value.detach().numpy() if isinstance(value, torch.Tensor) else value
            self.runtime.trainer.set(name, np.asarray(value, np.float32))

    def render(self) -> np.ndarray:
        from .projector import to_uint8

        return to_uint8(torch.from_numpy(self.runtime.render(self._feeds(0))))
