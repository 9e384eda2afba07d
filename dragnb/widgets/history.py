"""What the workbench drew for each state the session's Undo returns to: the loss curve and the handle trails.

The session keeps a snapshot (latent, optimizer state, points, mask) before each drag and before each reset
that changes something; its Undo returns to the last one. The widget keeps, beside each, the loss curve and the
trails it showed then, so Undo, Reset and Load show the curve and trails of the state they return to and a
later run does not draw over an undone one. It takes them when the session takes its snapshot: at the first
step of a drag (a drag ends at every edit and at a run's start and end) and at a reset that changed something.

A session saved by the workbench carries them in ``workbench.json`` beside its own files (read as untrusted:
anything unexpected there is ignored, and Load then starts an empty curve).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..session.io import MAX_HISTORY

if TYPE_CHECKING:
    from .workbench import Workbench

FILE = "workbench.json"

# One saved state: (session step count when it was taken, trails [[(x, y), ...] per handle], loss curve
# [(step, loss, lambda * mask, motion), ...]).
Saved = tuple[int, list, list]


class History:
    """The widget's side of the session's undo history (see the module docstring)."""

    def __init__(self):
        self.saved: list[Saved] = []
        self.drag_open = False  # the session is in a drag: its next step takes no snapshot

    def clear(self) -> None:
        """A new image: the session's history is gone, so is this."""
        self.saved.clear()
        self.drag_open = False

    def close_drag(self) -> None:
        """An edit, or a run's start or end: the session's next step starts a drag (and takes a snapshot)."""
        self.drag_open = False

    def push(self, n_steps: int, trails, losses) -> None:
        self.saved.append((n_steps, [list(t) for t in trails], list(losses)))
        del self.saved[:-MAX_HISTORY]

    def before_step(self, wb: Workbench, step: int) -> None:
        """Step ``step`` is about to be recorded: if it starts a drag, keep what is shown now."""
        if not self.drag_open:
            self.push(step, wb._trails, wb._losses)
            self.drag_open = True

    def undone(self, wb: Workbench) -> None:
        """The session's Undo went back one state: show that state's curve and trails."""
        self.drag_open = False
        n, handles = wb.session.num_steps, wb.session.handle_points
        trails = losses = None
        if self.saved:
            saved_n, trails, losses = self.saved.pop()
            if saved_n != n:  # out of step with the session (it cannot be, but never show a wrong curve)
                trails = losses = None
        if losses is None:  # what is known: the steps before the state returned to, trails from its handles
            losses = [e for e in wb._losses if e[0] < n]
        if trails is None or len(trails) != len(handles) or any(t[-1] != h for t, h in zip(trails, handles)):
            trails = [[h] for h in handles]
        wb._trails, wb._losses = trails, losses

    # ------------------------------------------------------------------ with a saved session

    def write(self, wb: Workbench, folder: Path) -> None:
        data = {"trails": wb._trails, "losses": wb._losses,
                "saved": [{"n_steps": n, "trails": t, "losses": lo} for n, t, lo in self.saved]}
        (Path(folder) / FILE).write_text(json.dumps(data))

    def read(self, wb: Workbench, folder: Path) -> bool:
        """Take the curve, trails and history saved with the session in ``folder``; False (nothing taken) if
        there are none or they do not fit the loaded session."""
        try:
            data = json.loads((Path(folder) / FILE).read_text())
            trails, losses = _trails(data["trails"]), _losses(data["losses"])
            saved = [(int(e["n_steps"]), _trails(e["trails"]), _losses(e["losses"])) for e in data["saved"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return False
        handles = wb.session.handle_points
        if len(trails) != len(handles) or any(t[-1] != h for t, h in zip(trails, handles)):
            return False
        wb._trails, wb._losses = trails, losses
        self.saved, self.drag_open = saved[-MAX_HISTORY:], False
        return True


def _number(v) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError("not a finite number")
    return v


def _trails(data) -> list:
    return [[(_number(x), _number(y)) for x, y in t] for t in data if len(t) >= 1]


def _losses(data) -> list:
    return [(int(e[0]), _number(e[1]), _number(e[2]), _number(e[3])) for e in data]
