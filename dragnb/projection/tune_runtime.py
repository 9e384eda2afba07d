"""Pivotal tuning from its ORT artifacts with numpy and onnxruntime-training only (no torch, no dragnb imports).

Copied into every tuning artifact folder (``ort_tune.py``) beside ``ort_sessions.py``, it tunes a generator on a
device that has only numpy and onnxruntime-training::

    python tune_runtime.py ARTIFACTS inputs.npz tuned.npz --steps 100 --lr 3e-3

``inputs.npz`` holds ``pivot``, ``target`` (float [1, 3, H, W] in [-1, 1]), ``reg_ws`` [S, num_ws, w_dim],
``reg_target`` [S, 3, H, W] and ``noise/<layer>`` maps (what ``dragnb.projection.tuning.locality_batch`` and the
projection give); ``tuned.npz`` receives every trainable weight. Per step: ONE training-graph call (both
forwards, the losses, the backward into every trainable weight), ONE AdamW update (ORT's optimizer graph), the
gradients reset. The learning-rate schedule is the PyTorch tuner's (``lr_at``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

if __package__:  # inside dragnb
    from ..backends import ort_sessions
else:  # the copy in an artifact folder: ort_sessions.py lies beside it
    import ort_sessions

MANIFEST = "manifest.json"


def lr_at(step: int, num_steps: int, lr: float, rampdown: float, rampup: float = 0.0) -> float:
    """The tuning schedule (``TuningSettings.lr_at``): a linear ramp up over the first ``rampup`` of the steps,
    ``lr``, then a cosine ramp to 0 over the last ``rampdown``."""
    t = step / num_steps
    up = min(1.0, (step + 1) / (rampup * num_steps)) if rampup > 0 else 1.0
    if rampdown <= 0:
        return lr * up
    ramp = min(1.0, (1.0 - t) / rampdown)
    return lr * up * (0.5 - 0.5 * math.cos(ramp * math.pi))


def _check(folder: Path, check_hashes: bool) -> dict:
    m = json.loads((folder / MANIFEST).read_text())
    for name, info in m["files"].items():
        p = folder / name
        if name != Path(name).name or not p.is_file() or p.stat().st_size != info["size"]:
            raise RuntimeError(f"{folder}: {name} missing or of the wrong size")
        if check_hashes and hashlib.sha256(p.read_bytes()).hexdigest() != info["sha256"]:
            raise RuntimeError(f"{folder}: {name} differs from the manifest")
    return m


class TuneRuntime:
    """The tuning artifacts of one model, loaded: :meth:`step` trains, :meth:`weights` reads the weights back."""

    def __init__(self, folder, threads: int | None = None, check_hashes: bool = True):
        self.folder = Path(folder)
        self.manifest = _check(self.folder, check_hashes)
        self.config = self.manifest["config"]
        opts = ort_sessions.session_options(threads)
        opts.log_severity_level = 3  # errors only: the generated graph declares the loss [] and returns [1]
        f = self.folder
        self.trainer = ort_sessions.Trainer(f / "checkpoint", f / "training_model.onnx", f / "eval_model.onnx",
                                            "cpu", opts)
        C = self.trainer._C
        device = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
        self.optimizer = C.Optimizer(os.fspath(f / "optimizer_model.onnx"), self.trainer.state, device, opts)
        self._OrtValue = ort_sessions.import_onnxruntime().OrtValue
        self.inputs = list(self.config["inputs"])

    def _values(self, feeds: dict) -> list:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise ValueError(f"missing inputs {missing}")
        return [self._OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[n], np.float32)) for n in self.inputs]

    def step(self, feeds: dict, lr: float) -> tuple[float, float, float, np.ndarray]:
        """One training step with ``feeds`` (input name -> array); returns (loss, recon, locality, image
        float32 [1, 3, H, W]) of the forward before the update."""
        self.optimizer.set_learning_rate(float(lr))
        out = self.trainer.run(self._values(feeds), training=True)
        self.optimizer.optimizer_step()
        self.trainer.lazy_reset_grad()
        loss, recon, reg, img = (v.numpy() for v in out)
        scalar = lambda a: float(np.asarray(a).reshape(-1)[0])  # noqa: E731
        return scalar(loss), scalar(recon), scalar(reg), np.array(img, np.float32)

    def render(self, feeds: dict) -> np.ndarray:
        """The eval graph's pivot image with the current weights, float32 [1, 3, H, W]."""
        return np.array(self.trainer.run(self._values(feeds), training=False)[3].numpy(), np.float32)

    def weights(self) -> dict[str, np.ndarray]:
        """Every trainable weight (graph name -> float32 array)."""
        return {n: self.trainer.get(n) for n in self.config["trainable"]}


def run(folder, inputs: dict, steps: int, lr: float, rampdown: float = 0.5, rampup: float = 0.1,
        locality_weight: float = 1.0,
        threads: int | None = None, callback=None):
    """Tune for ``steps`` steps from ``inputs`` (see the module docstring); returns (runtime, losses)."""
    rt = TuneRuntime(folder, threads)
    losses = []
    for i in range(steps):
        feeds = {k: v for k, v in inputs.items() if k.startswith("noise/")}
        feeds.update(pivot=inputs["pivot"], target=inputs["target"], reg_ws=inputs["reg_ws"][i : i + 1],
                     reg_target=inputs["reg_target"][i : i + 1],
                     locality_weight=np.array(locality_weight, np.float32))
        out = rt.step(feeds, lr_at(i, steps, lr, rampdown, rampup))
        losses.append(out[0])
        if callback is not None and callback(i, out):
            break
    return rt, losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("inputs")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    with np.load(a.inputs) as z:
        inputs = {k: z[k] for k in z.files}
    rt, losses = run(a.folder, inputs, a.steps, a.lr, threads=a.threads,
                     callback=lambda i, o: print(f"step {i}: loss {o[0]:.6f}", file=sys.stderr) and False)
    np.savez(a.out, **rt.weights())
    print(json.dumps({"steps": len(losses), "loss": losses[-1]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
