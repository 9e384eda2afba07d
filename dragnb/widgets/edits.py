"""The workbench's edits: each changes the session and, with it, the widget's own state (handle trails, loss
history, painted mask, selected pair).

An edit runs at once, or, while Run is stepping, is queued (:class:`~dragnb.widgets.jobs.Jobs`) and runs at
the next step boundary, where the session is free; a queued new pair is drawn dashed until then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .workbench import Workbench


def edit(wb: Workbench, fn: Callable[[], None], image: bool = False, ghost: tuple | None = None) -> None:
    """Apply ``fn`` now or, while a run's step is in flight, at the next step boundary.

    ``image``: the edit changes the image (seed, reset, undo); ``ghost``: a (handle, target) pair to draw
    dashed until a queued edit is applied.
    """
    wb._say("")  # a message belongs to the action that made it: the next edit ends it
    if wb._jobs.defer((fn, image, ghost)):
        with wb._frame():
            wb._draw_marks()
        wb._say("queued: applied at the next step boundary")
        return
    _apply(wb, [(fn, image, ghost)])


def flush(wb: Workbench) -> None:
    """Apply the queued edits (at a step boundary, or when a run ends)."""
    edits = wb._jobs.take()
    if edits:
        _apply(wb, edits)


def _apply(wb: Workbench, edits) -> None:
    error = None
    for fn, _, _ in edits:
        try:
            fn()
            wb._history.close_drag()  # the session ends its drag at an edit
        except Exception as e:  # shown below; the other edits still apply
            error = e
    if error is None:
        wb._clear_error()
    else:
        wb._show_error(error)
    wb._redraw(image=any(image for _, image, _ in edits))
    if not wb._jobs.running:
        wb._status_idle()


# ----------------------------------------------------------------------------
# Points, mask and image


def add_point(wb: Workbench, handle, target) -> None:
    h, t = tuple(handle), tuple(target)

    def add():
        wb.selected = wb.session.add_point(handle=h, target=t)
        wb._trails.append([wb.session.handle_points[-1]])

    edit(wb, add, ghost=(h, t))


def move_point(wb: Workbench, i: int, handle=None, target=None) -> None:
    def move():
        wb.session.move_point(i, handle=handle, target=target)
        if handle is not None:
            wb._trails[i] = [wb.session.handle_points[i]]

    edit(wb, move)


def remove_point(wb: Workbench, i: int) -> None:
    def remove():
        wb.session.remove_point(i)
        del wb._trails[i]
        wb.selected = None

    edit(wb, remove)


def reset_points(wb: Workbench) -> None:
    wb._pointer.pending = None

    def clear():
        wb.session.clear_points()
        wb._trails, wb.selected = [], None

    edit(wb, clear)


def _where(s) -> tuple:
    return s.num_steps, s.handle_points, s.ws.tobytes()


def reset_image(wb: Workbench) -> None:
    def reset():
        before, trails, losses = _where(wb.session), wb._trails, list(wb._losses)
        wb.session.reset()
        if _where(wb.session) != before:  # the session kept the state it left for Undo: so does the widget
            wb._history.push(before[0], trails, losses)
        wb._reset_trails()
        wb._losses.clear()

    edit(wb, reset, image=True)


def new_image(wb: Workbench, seed: int, psi: float | None = None) -> None:
    """A new seed image (seed or truncation psi changed): the session clears points and mask, so does the widget."""
    def new():
        wb.session.set_seed(seed, truncation_psi=psi)
        wb._movable, wb._pointer.pending, wb.selected = None, None, None
        wb._reset_trails()
        wb._losses.clear()
        wb._history.clear()

    edit(wb, new, image=True)


def new_class(wb: Workbench, c) -> None:
    """A new image of the same seed with class label ``c`` (a conditional model's): points and mask cleared."""
    def new():
        try:
            wb.session.set_class(c)
        finally:
            wb._sync_controls()  # a refused label snaps back to the one in force
        wb._movable, wb._pointer.pending, wb.selected = None, None, None
        wb._reset_trails()
        wb._losses.clear()

    edit(wb, new, image=True)


def undo(wb: Workbench) -> None:
    def undo():
        if not wb.session.undo():
            wb._say("Nothing to undo.")
            return
        wb._history.undone(wb)
        mask = wb.session.mask
        wb._movable = None if mask is None else ~mask

    edit(wb, undo, image=True)


def set_mask(wb: Workbench, movable: np.ndarray | None) -> None:
    wb._movable = None if movable is None or not np.any(movable) else np.asarray(movable, bool).copy()
    fixed = None if wb._movable is None else ~wb._movable
    edit(wb, wb.session.clear_mask if fixed is None else (lambda: wb.session.set_mask(fixed)))
