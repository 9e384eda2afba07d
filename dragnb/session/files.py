"""What a session writes and reads: its files (save / load / auto-save) and exports of its recording.

:class:`SessionFiles` is a base class of :class:`~dragnb.session.session.DragSession`, kept apart so that the
session module holds the drag itself; the file format is :mod:`dragnb.session.io`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..backends.ort_model import ArtifactModel
from ..drag.recording import draw_points
from . import io
from . import picture as picture_mod
from .model import check_model_device, default_backend, open_model


class SessionFiles(picture_mod.PictureSessions):
    """Save, load, auto-save and export methods of ``DragSession`` (which provides the state they read); with
    ``from_image`` and the picture state from :class:`~dragnb.session.picture.PictureSessions`."""

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
            img = draw_points(img, self._points.handles, self._points.targets)
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

        Holds points, mask, latents, optimizer state, settings and history (not the recording); see
        :mod:`dragnb.session.io`. A session on an in-memory generator also writes its weights
        (``generator.safetensors``) once.
        """
        with self._lock:
            jpath, _, wpath = io.session_paths(path)
            jpath.parent.mkdir(parents=True, exist_ok=True)
            if self._model_ref is not None:
                model = {"ref": self._model_ref}
            else:
                if str(wpath.resolve()) not in self._weights_saved or not wpath.exists():
                    from ..checkpoints import save_generator

                    save_generator(self.G, wpath)
                    self._weights_saved.add(str(wpath.resolve()))
                model = {"file": wpath.name}
            model = self._save_picture(jpath, model)
            return io.write_session(path, io.SavedSession(
                model=model, image_size=[self.H, self.W], seed=self.seed, truncation_psi=self.truncation_psi,
                backend=self.backend_name, latent_space=self.latent_space, params=self._raw.to_dict(),
                ws_seed=self._ws_seed, current=self._snapshot(), history=list(self._history),
                drag_open=self._drag_open, drag_steps=self._drag_steps,
                c=self._label.tolist() if self.G.c_dim else None,
            ))

    @classmethod
    def load(cls, path, model=None, autosave_dir=None, device="auto"):
        """Restore a session saved by :meth:`save`; continuing gives the same steps as never having stopped.

        ``model`` overrides the saved model reference (a name, path, ORT artifact folder, Generator or
        ArtifactModel of the same architecture). On ORT artifacts the session runs the "ort" back-end whatever
        it was saved with (the optimisation state is the same for both back-ends). The file is validated as the
        API validates calls; whatever is wrong with it (damaged, hand-edited, a model it names that cannot be
        opened) raises :class:`~dragnb.session.io.SessionFileError` naming the file, and no session is made.
        ``FileNotFoundError`` when there is no session there at all. ``device`` as in the constructor (the file
        holds numpy arrays only: a session saved on one device loads on any other); checked first (ValueError).
        """
        jpath = io.session_paths(path)[0]
        saved = io.read_session(path)
        weights = None
        if model is None:
            ref = saved.model.get("ref")
            model = ref if ref is not None else jpath.parent / saved.model["file"]
            weights = None if ref is not None else str(Path(model).resolve())
            check_model_device(model, device)  # a bad device is the caller's error (ValueError), not the file's
            G = _open_saved_model(jpath, model, device)
        else:
            G, _ = open_model(model, device)
        base, picture = G, None
        if "delta" in saved.model:  # a session from a picture: the tuned weights are a delta of the base model
            try:
                G, delta, info = picture_mod.open_with_delta(jpath, base, saved.model)
            except ValueError as e:
                raise io.SessionFileError(f"{jpath}: {_short(e)}") from None
            picture = (delta, info)
        backend = default_backend(G) if isinstance(G, ArtifactModel) else saved.backend
        try:
            s = cls(G, seed=saved.seed, truncation_psi=saved.truncation_psi, backend=backend,
                    latent_space=saved.latent_space, c=saved.c, device=device, **saved.params)
            s._adopt(saved, model, weights)
            if picture is not None:
                s._base_G, (s._delta, s.picture) = base, picture
        except (ValueError, TypeError) as e:  # a value the API refuses came from the file
            raise io.SessionFileError(f"{jpath}: {_short(e)}") from None
        if autosave_dir is not None:  # only now: the folder may be the one just read
            s.autosave_dir = Path(autosave_dir)
            s._autosave()
        return s

    def _adopt(self, saved: io.SavedSession, model, weights: str | None) -> None:
        """Take over a loaded file's state (validated against this session's model; nothing kept on error)."""
        if [self.H, self.W] != list(saved.image_size) or saved.ws_seed.shape != (1, self.G.num_ws, self.G.w_dim):
            raise io.SessionFileError("the session was saved with a different model architecture")
        shape = (self.H, self.W, self.G.num_ws, self.G.w_dim)
        snaps = [io.check_snapshot(s, *shape) for s in [*saved.history, saved.current]]
        if not np.isfinite(saved.ws_seed).all() or saved.ws_seed.dtype != np.float32:
            raise io.SessionFileError("the seed latent must be finite float32")
        _, self._model_ref = open_model(model) if weights is None else (None, None)
        if weights is not None:
            self._weights_saved.add(weights)  # the weights live beside the session: keep saving them with it
        self._ws_seed = saved.ws_seed
        self._history = snaps[:-1]
        self._restore(snaps[-1])
        self._drag_open, self._drag_steps = saved.drag_open, int(saved.drag_steps)


def _open_saved_model(jpath: Path, model, device="auto"):
    """The model a session file names; SessionFileError if it cannot be opened (missing, refused, damaged:
    CheckpointError and ArtifactError are a ValueError and a RuntimeError)."""
    try:
        return open_model(model, device)[0]
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise io.SessionFileError(f"{jpath}: its model {str(model)[:200]!r} cannot be opened ({_short(e)})") \
            from None


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit - 3] + "..."
