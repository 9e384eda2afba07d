"""What a session changes besides points and mask: parameters, seed, class label, latent space and back-end.

:class:`SessionSettings` is a base class of :class:`~dragnb.session.session.DragSession` (which provides the
state these methods change); every change is validated before anything changes, and auto-saved once made.
"""

from __future__ import annotations

import functools

import numpy as np

from ..backends import load_backend
from ..backends.base import LATENT_SPACES
from ..backends.ort_model import ArtifactModel
from ..drag.params import DragParams, check_int, check_real
from .model import check_backend, check_label, check_model_device


def durable(edit):
    """An edit that auto-saves (when the session has an ``autosave_dir``) before its call returns: once an edit
    has returned, a crash does not lose it."""
    @functools.wraps(edit)
    def durable(self, *args, **kwargs):
        with self._lock:
            result = edit(self, *args, **kwargs)
            self._autosave()
            return result

    return durable


def check_seed(seed) -> int:
    return check_int("seed", seed, low=0, high=2**32 - 1)


def check_latent_space(latent_space) -> str:
    if latent_space not in LATENT_SPACES:
        raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
    return latent_space


class SessionSettings:
    """Parameter, seed, class, latent-space and back-end changes of ``DragSession``."""

    # ------------------------------------------------------------------ settings

    def _checked_params(self, **changes) -> DragParams:
        """The parameters with ``changes``, validated for this model (nothing changes on error)."""
        raw = self._raw.replace(self.G, **changes)
        if isinstance(self.G, ArtifactModel):
            resolved = raw.resolved(self.G)
            self.G.check_params(resolved.feature_block, resolved.noise_mode, resolved.compat)
        return raw

    @durable
    def set_params(self, **params) -> None:
        """Change parameters (validated all together; on error nothing changes)."""
        with self._lock:
            raw = self._checked_params(**params)
            old, new = self.params, raw.resolved(self.G).to_dict()
            if raw == self._raw:
                return
            backend = self._backend
            if any(new[k] != old[k] for k in ("feature_block", "noise_mode", "compat")):  # what a back-end is made for
                backend = load_backend(self.backend_name)(self.G, new["feature_block"], new["noise_mode"],
                                                          compat=new["compat"])
                backend.set_state(self._backend.get_state())
            self._close_drag()
            self._backend, self._raw = backend, raw
            # A new mode starts afresh too: its Adam rule begins with its own (empty) state.
            if any(new[k] != old[k] for k in ("feature_block", "noise_mode", "num_layers", "compat")):
                self._needs_init = True
                self._image = None if new["noise_mode"] != old["noise_mode"] else self._image

    @durable
    def set_seed(self, seed, truncation_psi=None) -> None:
        """A new image: the latent of ``seed`` at ``truncation_psi`` (None: unchanged); points, mask, history and
        recording are cleared."""
        seed = check_seed(seed)
        psi = self.truncation_psi if truncation_psi is None else check_real("truncation_psi", truncation_psi)
        with self._lock:
            self._new_image(self._seed_ws(seed, psi), seed=seed, truncation_psi=psi)

    def _new_image(self, ws: np.ndarray, **attributes) -> None:
        """Start over on the seed latent ``ws`` (the open drag closed first, then ``attributes`` set on the session):
        points, mask, history and recording cleared."""
        self._close_drag()
        for name, value in attributes.items():
            setattr(self, name, value)
        self._ws_seed = ws
        self._points.clear()
        self._mask = None
        self._history.clear()
        self.recording.clear()
        self._n_steps = 0
        self._restart(ws)

    @durable
    def set_class(self, c) -> None:
        """A new image: the current seed with class label ``c`` (see the constructor); points, mask, history and
        recording are cleared, as by :meth:`set_seed`. Nothing changes on a refused label."""
        label = check_label(c, self.G.c_dim)
        with self._lock:
            self._new_image(self._seed_ws(self.seed, label=label), _label=label)

    @durable
    def set_latent_space(self, latent_space) -> None:
        """Optimise in "w" or "w+" from the next step on, from the current latent (a new drag).

        Going from "w+" to "w" after a drag starts the single w from the first optimised layer's w (the
        back-end's "w" start), so the image can jump at that step.
        """
        check_latent_space(latent_space)
        with self._lock:
            if latent_space != self.latent_space:
                self._edited()
                self.latent_space = latent_space

    @durable
    def set_backend(self, backend, progress: bool = True) -> None:
        """Switch the optimisation back-end ("torch" / "ort"). Latent and Adam state carry over (both back-ends
        keep the same state), so the drag continues; the ORT back-end exports its artifacts on first use (slow once;
        ``progress``: with a tqdm bar meanwhile). A session on ORT artifacts has no PyTorch back-end (ValueError)."""
        check_backend(None, backend)
        with self._lock:
            if backend == self.backend_name:
                return
            check_backend(self.G, backend)
            p = self.params
            extra = {"progress": bool(progress)} if backend == "ort" else {}
            new = load_backend(backend)(self.G, p["feature_block"], p["noise_mode"], compat=p["compat"], **extra)
            new.set_state(self._backend.get_state())
            self._backend, self.backend_name = new, backend

    @durable
    def set_device(self, device) -> None:
        """Move the generator and the PyTorch back-end to ``device`` (see the constructor); latent and Adam state
        carry over (they cross as numpy), so the drag continues. ValueError for an unknown or unavailable
        device, and then nothing changes. On ORT artifacts only "auto" is accepted (and changes nothing)."""
        name = check_model_device(self.G, device)
        if isinstance(self.G, ArtifactModel):
            return
        with self._lock:
            old = self.device
            if name == old:
                return
            state = self._backend.get_state()
            try:
                self.G.to(name)
                backend = self._backend
                if self.backend_name == "torch":  # the ORT back-end keeps its own provider; only G moves
                    p = self.params
                    backend = load_backend("torch")(self.G, p["feature_block"], p["noise_mode"], compat=p["compat"])
                    backend.set_state(state)
            except BaseException:
                self.G.to(old)  # e.g. out of GPU memory half-way: the session stays where it was
                raise
            self._backend = backend
