"""The workbench's background work: Run's steps, or one long action, in a worker thread.

A worker thread, not an asyncio task: ipykernel 7 does not keep driving asyncio tasks started from a widget
callback once the cell has finished. Each result is drawn from that thread, one ``hold_canvas`` batch per
frame under the workbench's drawing lock. The kernel keeps serving clicks meanwhile: Stop ends the loop
before the next step, and edits made while a step is in flight are queued here and applied at the step
boundary (shown dashed until then).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .edits import flush

if TYPE_CHECKING:
    from .workbench import Workbench

# An edit: (apply it, it changes the image, a (handle, target) pair to draw dashed while queued, or None).
Edit = tuple[Callable[[], None], bool, tuple | None]


class Jobs:
    """The worker thread (one at a time), Run's stop request, and the edits queued while a run is stepping."""

    def __init__(self):
        self._lock = threading.Lock()  # guards running and queued
        self.queued: list[Edit] = []
        self.running = False
        self.stop_requested = False
        self.thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, target: Callable, name: str, *args) -> None:
        self.thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current thread has finished; False on timeout."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def set_running(self, running: bool) -> None:
        with self._lock:
            self.running = running

    def defer(self, edit: Edit) -> bool:
        """Queue ``edit`` if a run is stepping (True); False: apply it now."""
        with self._lock:
            if self.running:
                self.queued.append(edit)
                return True
        return False

    def take(self) -> list[Edit]:
        """The queued edits, in order; the queue is left empty."""
        with self._lock:
            edits, self.queued = self.queued, []
        return edits

    def ghosts(self) -> list[tuple]:
        """The (handle, target) pairs of the queued edits that add one."""
        with self._lock:
            return [g for _, _, g in self.queued if g is not None]


def run_loop(wb: Workbench, max_steps: int | None) -> None:
    """Run's worker thread: step ``wb.session`` until convergence, ``max_steps``, Stop or no points left."""
    jobs = wb._jobs
    failed = converged = False
    wb._pace.reset()
    try:
        if not jobs.stop_requested:
            wb._status_preparing()
            steps = wb.session.run(max_steps)
            try:
                for r in steps:
                    converged = bool(r.converged)
                    wb._show_step(r)
                    flush(wb)  # the step boundary: the session lock is free until the next step
                    if jobs.stop_requested or not wb.session.target_points:
                        break
            finally:
                steps.close()
    except Exception as e:  # shown in the widget
        failed = True
        wb._show_error(e)
    finally:
        # The run's own last words first, while edits are still queued (running): an edit made meanwhile is
        # applied after them, and what it shows is not overwritten by this run's status.
        wb._history.close_drag()
        wb._draw_step()  # the run's last step, if it was not drawn (frames are paced while running)
        ended = ("failed" if failed else "stopped" if jobs.stop_requested
                 else "no points left" if not wb.session.target_points
                 else "converged" if converged else "max steps")
        wb._say(f"run ended: {ended}")
        if wb._last_step is not None:
            wb._status_step(ended)
        else:  # an edit at a step boundary redrew the status
            wb._status_idle(ended)
        jobs.set_running(False)
        flush(wb)
        wb._controls.set_busy(False, run=True)
        wb._update_internals()


def long_action(wb: Workbench, label: str, fn: Callable, done: Callable | None = None) -> None:
    """Run ``fn()`` in a worker thread with the progress bar showing; then ``done(result)`` (same thread)."""
    if wb._jobs.busy():
        wb._say("busy: wait for the current action (or Stop the run)")
        return
    wb._clear_error()
    finished = threading.Event()
    progress = wb.progress

    def tick():  # fn reports no progress: the bar fills toward 95 % and shows the elapsed time
        t0 = time.monotonic()
        while not finished.wait(0.2):
            t = time.monotonic() - t0
            progress.value = 0.95 * (1 - np.exp(-t / 5))
            progress.description = f"{t:.0f} s"

    def work():
        threading.Thread(target=tick, daemon=True).start()
        try:
            result = fn()
            if done is not None:
                done(result)
        except Exception as e:  # shown in the widget
            wb._show_error(e)
            wb._say(label + " failed")
        finally:
            finished.set()
            progress.value = 1
            progress.layout.visibility = "hidden"
            wb._controls.set_busy(False)

    progress.value, progress.description = 0, ""
    progress.layout.visibility = "visible"
    wb._say(label + " ...")
    wb._controls.set_busy(True)
    wb._jobs.start(work, "dragnb-action")
