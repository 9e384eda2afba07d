"""The point pairs of a session: handles, targets and where each handle was placed, validated in (x, y).

Points are (x, y) image pixels (x right, y down, pixel centres at integers). Handles snap to the nearest pixel
(tracking moves them pixel by pixel); targets may be fractional. Every method validates before it changes
anything, so a refused call leaves the set as it was.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..drag.params import check_real

MAX_POINTS = 64  # point pairs of one session: each costs a tracking window and a disk of features per step


class PointIndexError(ValueError, IndexError):
    """A point index out of range (a ValueError, and an IndexError for ``except IndexError`` users)."""


class PointSet:
    """Handles (tracked), targets and origins (where each handle was placed), float64 [P, 2] (x, y) each.

    Args:
        width, height: the image size in pixels; every point must lie in [0, width - 1] x [0, height - 1].
    """

    def __init__(self, width: int, height: int):
        self.W, self.H = int(width), int(height)
        self.handles = np.zeros((0, 2))
        self.targets = np.zeros((0, 2))
        self.origins = np.zeros((0, 2))

    def __len__(self) -> int:
        return len(self.targets)

    # ------------------------------------------------------------------ validation

    def check_xy(self, name: str, p) -> np.ndarray:
        """A validated (x, y) point inside the image, float64 [2]."""
        bad = TypeError(f"{name} must be an (x, y) pair of numbers, got {_short(p)}")
        if isinstance(p, (list, tuple)):
            if len(p) != 2:
                raise bad
            xy = np.array([check_real(f"{name} {c}", v) for c, v in zip("xy", p)])
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

    def check_pair(self, handle, target) -> tuple[np.ndarray, np.ndarray]:
        """(handle snapped to its pixel, target), validated."""
        h = np.rint(self.check_xy("handle", handle))
        t = self.check_xy("target", target)
        if np.array_equal(h, t):
            raise ValueError(f"handle and target coincide at {tuple(t)}: nothing to drag")
        return h, t

    def check_index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"point index must be an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise PointIndexError(f"point index {i} out of range ({n} points)")
        return int(i) % n

    # ------------------------------------------------------------------ edits (validated first by the caller)

    def check_room(self) -> None:
        if len(self) >= MAX_POINTS:
            raise ValueError(f"at most {MAX_POINTS} point pairs")

    def append(self, h: np.ndarray, t: np.ndarray) -> int:
        self.handles = np.vstack([self.handles, h])
        self.targets = np.vstack([self.targets, t])
        self.origins = np.vstack([self.origins, h])
        return len(self) - 1

    def set(self, i: int, h: np.ndarray, t: np.ndarray, placed: bool) -> None:
        """Point ``i`` to (h, t); ``placed``: the handle was placed anew, so its origin moves with it."""
        self.handles[i], self.targets[i] = h, t
        if placed:
            self.origins[i] = h

    def delete(self, i: int) -> None:
        self.handles, self.targets, self.origins = (
            np.delete(a, i, axis=0) for a in (self.handles, self.targets, self.origins))

    def clear(self) -> None:
        self.handles, self.targets, self.origins = np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))

    def copies(self) -> dict:
        """{"handles", "targets", "origins"}: copies, for snapshots."""
        return {"handles": self.handles.copy(), "targets": self.targets.copy(), "origins": self.origins.copy()}

    def restore(self, snap: dict) -> None:
        self.handles, self.targets, self.origins = snap["handles"], snap["targets"], snap["origins"]


def _short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never render large user data whole."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 3, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
