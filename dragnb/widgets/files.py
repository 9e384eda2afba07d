"""The workbench's file actions: the image as PNG, the recorded steps as GIF / MP4, the session as a folder.

Paths come from the ``save as`` stem and the ``session`` field; GIF, MP4 and loading run in the background
(:func:`~dragnb.widgets.jobs.long_action`), the others at once.
"""

from __future__ import annotations

import html
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from ..session import DragSession
from .controls import session_model_value
from .jobs import long_action

if TYPE_CHECKING:
    from .workbench import Workbench


def _stem(wb: Workbench) -> Path:
    """The ``save as`` path stem, its folder created."""
    stem = Path(wb.save_path.value).expanduser()
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem


def linked(path) -> str:
    """HTML naming ``path``: relative to the notebook's folder (the kernel's working directory) and linked, so a
    click opens it in the lab (a relative link resolves beside the notebook's own address); a path outside
    that folder as plain text, saying so (the lab's file browser may not reach it)."""
    p = Path(path).expanduser().resolve()
    try:
        rel = p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return f"{html.escape(str(path))} (outside this notebook's folder)"
    return (f"<a href='{html.escape(urllib.parse.quote(rel))}' target='_blank' "
            f"style='text-decoration:underline'>{html.escape(rel)}</a>")


def _video_size(wb: Workbench) -> int:
    """Longer side of exported videos: the canvas size, or the image's when that is larger."""
    return max(wb.display_size, wb.session.H, wb.session.W)


def save_png(wb: Workbench) -> Path:
    wb._clear_error()
    path = wb.session.export_png(_stem(wb).with_suffix(".png"))
    wb._say("saved ", linked(path))
    return path


def save_gif(wb: Workbench) -> None:
    path = _stem(wb).with_suffix(".gif")
    long_action(wb, f"writing {path}", lambda: wb.session.export_gif(path, size=_video_size(wb)),
                    lambda p: wb._say("saved ", linked(p)))


def save_mp4(wb: Workbench) -> None:
    path = _stem(wb).with_suffix(".mp4")
    long_action(wb, f"writing {path}", lambda: wb.session.export_mp4(path, size=_video_size(wb)),
                    lambda p: wb._say("saved ", linked(p)))


def save_session(wb: Workbench) -> Path:
    wb._clear_error()
    stem = _stem(wb)
    folder = stem.with_name(stem.name + "_session")
    wb.session.save(folder)
    wb._history.write(wb, folder)  # the loss curve and trails, for Load
    wb.load_path.value = str(folder)
    wb._say("saved session ", linked(folder))
    return folder


def load_session(wb: Workbench) -> None:
    path = Path(wb.load_path.value).expanduser()

    def done(new):
        wb._model_value = session_model_value(new)
        wb._attach(new)
        if wb._history.read(wb, path):
            wb._redraw(image=False)
        wb._say(f"loaded session {path}")

    long_action(wb, f"loading session {path}", lambda: DragSession.load(path), done)
