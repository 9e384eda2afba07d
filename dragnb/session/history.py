"""A session's undo history: snapshots of the optimisation state, points and mask, taken before each drag.

:class:`SessionHistory` is a base class of :class:`~dragnb.session.session.DragSession` (which provides the state
these methods snapshot and restore).
"""

from __future__ import annotations

import numpy as np

from .io import MAX_HISTORY


class SessionHistory:
    """Undo and reset of ``DragSession``."""

    def _snapshot(self) -> dict:
        return {
            "state": self._backend.get_state(),
            **self._points.copies(), "mask": self.mask,
            "initial_rc": None if self._initial_rc is None else self._initial_rc.copy(),
            "needs_init": self._needs_init, "n_steps": self._n_steps,
        }

    def _push_history(self, snap: dict) -> None:
        self._history.append(snap)
        del self._history[:-MAX_HISTORY]

    def _restore(self, snap: dict) -> None:
        self._backend.set_state(snap["state"])
        self._points.restore(snap)
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
            pts = self._points
            if self._n_steps == 0 and np.array_equal(pts.handles, pts.origins) and np.array_equal(
                    self._backend.ws(), self._ws_seed):
                return  # already at the seed image
            self._push_history(self._snapshot())
            pts.handles = pts.origins.copy()
            self._n_steps = 0
            self._restart(self._ws_seed)
            self._autosave()
