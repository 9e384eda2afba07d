"""Sessions that start from a picture: projection (and optionally pivotal tuning) instead of a seed.

:meth:`PictureSessions.from_image` projects the picture into the model's W+ (or W), optionally tunes the
synthesis weights around that pivot (PyTorch or ONNX Runtime training), and opens a ``DragSession`` on the tuned
generator whose starting latent is the projection: ``reset()`` and undo go back to the projected image.

Saved sessions keep the base model's reference and the tuned weights as a delta beside the session file
(``<session>/picture_delta.safetensors``, see ``dragnb.projection.delta``): the projection's noise maps and the
tuned weights, not a copy of the model. ``DragSession.load`` applies it to the base model again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DELTA_FILE = "picture_delta.safetensors"
TUNING_BACKENDS = ("torch", "ort")


def delta_path(jpath: Path) -> Path:
    """Where the delta of the session whose document is ``jpath`` lives."""
    return jpath.parent / (DELTA_FILE if jpath.name == "session.json" else jpath.stem + "." + DELTA_FILE)


class PictureSessions:
    """``from_image`` and the picture state of ``DragSession`` (which provides the session it builds on)."""

    picture: dict | None = None      # what the session's image came from: {"psnr", "projection_psnr", ...}
    _base_G = None                   # the model the tuned weights are a delta of
    _delta: dict | None = None       # state-dict name -> float32 difference (tuned - base)

    @classmethod
    def from_image(cls, model=None, image=None, tune: bool = False, *, backend=None, latent_space: str = "w+",
                   projection_steps: int = 200, tuning_steps: int = 300, tuning_backend: str | None = None,
                   callback=None, autosave_dir=None, projection: dict | None = None, tuning: dict | None = None,
                   **params):
        """A session on ``image`` (a path, bytes, an array, a PIL image: see ``dragnb.projection.load_image``).

        Args:
            model: as for ``DragSession`` (a PyTorch model: name, checkpoint path or Generator).
            tune: pivotal tuning of the synthesis weights after the projection (PSNR up, the picture's own details
                kept; the session then drags the tuned generator). A tuning that ends below the projection's PSNR
                (too few steps for its learning rate) is discarded: ``picture["tuned"]`` False, ``"tuned_psnr"``
                says what it reached.
            backend: the drag back-end ("torch" / "ort"), as for ``DragSession``.
            latent_space: of the projection and of the drags ("w+" or "w").
            tuning_backend: "torch" or "ort" (ONNX Runtime training of the weights); None = ``backend`` or "torch".
            callback: called with ("project", ProjectionStep) and ("tune", TuningStep) for every iteration;
                returning True ends that phase early (the session uses what it has).
            projection, tuning: extra keyword arguments of ``Projector`` and ``TuningSettings``.
            **params: drag parameters, as for ``DragSession``.
        """
        from ..projection import load_image
        from ..projection.delta import weight_delta
        from .model import open_model

        if image is None:
            raise TypeError("from_image needs an image (a path, bytes, an array or a PIL image)")
        tuning_backend = tuning_backend or backend or "torch"
        if tuning_backend not in TUNING_BACKENDS:
            raise ValueError(f"tuning_backend must be one of {TUNING_BACKENDS}, got {tuning_backend!r}")
        G, ref = open_model(model)
        if not hasattr(G, "synthesis"):
            raise ValueError("from_image needs a PyTorch model (a name, checkpoint or Generator), not ORT artifacts")
        target = load_image(image, G.img_width, G.img_resolution)  # before any slow work: bad pictures fail fast
        proj = _project(G, target, latent_space, projection_steps, callback, projection or {})
        tuned, info = _tune(G, proj, tune, tuning_steps, tuning_backend, callback, tuning or {})
        s = cls(tuned, backend=backend, latent_space=latent_space, **params)
        s._adopt_picture(G, ref, proj.ws, weight_delta(G, tuned), info)
        if autosave_dir is not None:
            s.autosave_dir = Path(autosave_dir)
            s._autosave()
        return s

    def _adopt_picture(self, base, ref, ws: np.ndarray, delta: dict, info: dict) -> None:
        """Start at the projected latent; remember the base model and the delta to save them."""
        with self._lock:
            self._base_G, self._delta, self.picture = base, delta, dict(info)
            self._model_ref = ref
            self.seed = 0
            self._ws_seed = np.ascontiguousarray(ws, np.float32)
            self._history.clear()
            self._n_steps = 0
            self._restart(self._ws_seed)

    def _save_picture(self, jpath: Path, model: dict) -> dict:
        """The session document's model entry, with the delta written beside the session (when there is a base
        model reference; a session on an in-memory model saves the tuned weights in full instead)."""
        if self.picture is None or self._delta is None or "ref" not in model:
            return model
        from ..projection.delta import save_delta

        path = delta_path(jpath)
        if str(path.resolve()) not in self._weights_saved or not path.exists():
            save_delta(path, self._base_G, self._delta, self.picture)
            self._weights_saved.add(str(path.resolve()))
        return {**model, "delta": path.name}


def open_with_delta(jpath: Path, base, model_entry: dict):
    """(tuned generator, delta, info) from the delta a session document names, checked against ``base``."""
    from ..projection.delta import apply_delta, load_delta

    name = model_entry["delta"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError("the picture delta must be a plain file name beside the session")
    delta, info = load_delta(jpath.parent / name, base)
    return apply_delta(base, delta), delta, info


def _project(G, target, latent_space, steps, callback, kwargs):
    from ..projection import Projector

    p = Projector(G, target, latent_space=latent_space, num_steps=steps, **kwargs)
    for s in p.run():
        if callback is not None and callback("project", s):
            break
    return p.result()


def _tune(G, proj, tune, steps, tuning_backend, callback, kwargs):
    """(generator, info): the tuned copy (or the projection's noise maps in a copy when not tuning)."""
    from ..projection.losses import psnr
    from ..projection.tuning import PivotalTuner, tuned_copy

    info = {"projection_psnr": round(proj.psnr, 3), "psnr": round(proj.psnr, 3), "latent_space": proj.latent_space,
            "projection_steps": proj.steps, "loss": proj.loss_name, "perceptual": proj.perceptual, "tuned": False}
    if not tune:
        return tuned_copy(G, proj.noise), info
    if tuning_backend == "ort":
        from ..projection.ort_tune import OrtPivotalTuner as Tuner
    else:
        Tuner = PivotalTuner
    t = Tuner(G, proj.ws, proj.target, proj.noise, num_steps=steps, **kwargs)
    for s in t.run():
        if callback is not None and callback("tune", s):
            break
    tuned_psnr = psnr(t.render(), proj.target)
    info.update(tuning_backend=tuning_backend, tuning_steps=len(t.history), tuned_psnr=round(tuned_psnr, 3),
                tuning_loss=t.loss.name)
    if tuned_psnr < proj.psnr:  # too few steps for the learning rate: keep the projection, say so
        return tuned_copy(G, proj.noise), info
    info.update(tuned=True, psnr=round(tuned_psnr, 3))
    return t.generator(), info
