"""The workbench's "Open image": a picture (uploaded, or a path) projected into the model, optionally pivotal-tuned,
shown live on the canvas while it runs, then dragged as usual.

The work runs as a long action (:func:`~dragnb.widgets.jobs.long_action`, the worker thread): every image the
projection and the tuning render is drawn on the canvas, and the message line shows the phase, step and PSNR.
The picture is checked before any work starts (``dragnb.projection.load_image``), so a bad file is one error line
and the current session stays as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ipywidgets as W

from ..session import DragSession
from .controls import SESSION_MODEL
from .jobs import long_action

if TYPE_CHECKING:
    from .workbench import Workbench


class PictureControls:
    """The "Open image" widgets: an upload button, a path field, the tuning switch and the Open button."""

    def __init__(self):
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload",
                                   layout=W.Layout(width="100px"))
        self.path = W.Text(description="picture", placeholder="path of a picture (or Upload)",
                           layout=W.Layout(width="300px"), style={"description_width": "96px"})
        self.tune = W.Checkbox(value=True, description="tune", indent=False, layout=W.Layout(width="60px"),
                               tooltip="pivotal tuning of the generator after the projection")
        self.open_button = W.Button(description="Open image", icon="upload", layout=W.Layout(width="120px"),
                                    tooltip="project the picture into the model (and tune), then drag it")

    def box(self) -> W.VBox:
        return W.VBox([W.HTML("<b>Picture</b>"), self.path,
                       W.HBox([self.upload, self.tune, self.open_button])])


def picture_source(pc: PictureControls):
    """The uploaded file's bytes if there is one, else the path; ValueError if neither."""
    value = pc.upload.value
    if value:
        item = value[0] if isinstance(value, (list, tuple)) else next(iter(value.values()))
        return bytes(item["content"])
    if pc.path.value.strip():
        return pc.path.value.strip()
    raise ValueError("choose a picture: Upload one or type its path")


def base_model(wb: Workbench):
    """The model the picture is projected into: the session's base model (before any tuning)."""
    s = wb.session
    return s._base_G if getattr(s, "_base_G", None) is not None else s.G


def open_image(wb: Workbench, source=None, tune: bool | None = None, **kwargs) -> None:
    """Project ``source`` (default: the upload or the path field) into the session's model in the background,
    drawing every rendered iteration; then drive the new session. ``kwargs`` go to ``DragSession.from_image``."""
    from ..projection import load_image

    pc = wb._picture
    source = picture_source(pc) if source is None else source
    tune = pc.tune.value if tune is None else bool(tune)
    G = base_model(wb)
    if not hasattr(G, "synthesis"):
        raise ValueError("Open image needs a PyTorch model: this session runs on ORT artifacts only")
    load_image(source, G.img_width, G.img_resolution)  # a bad picture fails here, before any work
    backend = wb.session.backend_name

    def progress(phase, step):
        wb.message.value = f"{phase}: step {step.step + 1}, {step.psnr:.2f} dB"
        if step.image is not None:
            with wb._frame():
                wb._draw_image(step.image)

    def work():
        return DragSession.from_image(G, source, tune=tune, backend=backend, callback=progress, **kwargs)

    def done(new):
        wb._model_value = SESSION_MODEL  # the tuned generator lives in the session
        wb._attach(new)
        p = new.picture
        tuned = f", tuned {p['psnr']:.2f} dB" if p["tuned"] else ""
        wb._say(f"opened the picture: projection {p['projection_psnr']:.2f} dB{tuned} (loss {p['loss']})")

    long_action(wb, "projecting the picture" + (" and tuning" if tune else ""), work, done)
