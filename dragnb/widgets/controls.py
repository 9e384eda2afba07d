"""The workbench's controls: the widgets beside its canvas, their layout, and what a change of each one does.

:class:`Controls` builds the widgets (the workbench exposes each as its own attribute: ``wb.seed``,
``wb.step_button``, ...) and sets them from a session; :func:`connect` wires them to a workbench. A control
set from the session does not act: its observer sees ``Controls.syncing`` and returns.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as W
from ipycanvas import Canvas

from ..backends.ort_model import ArtifactModel
from ..session import DragSession
from .edits import edit, new_class, new_image
from .jobs import long_action
from .render import STATUS_HEIGHT

if TYPE_CHECKING:
    from .workbench import Workbench

CHECKPOINT_GLOBS = ("*.safetensors", "*.pkl", "*.pt")
SESSION_MODEL = ""       # model dropdown value for "the model this session was built with"
BACKEND_OPTIONS = (("PyTorch", "torch"), ("ONNX Runtime", "ort"))
PARAM_NAMES = ("compat", "lr", "lambda_mask", "r1", "r2", "tolerance", "max_steps", "feature_block")
COMPAT_OPTIONS = (("dragnb", "dragnb"), ("official", "official"), ("blog", "blog"))
CANVAS_CLASS = "dragnb-image"  # CSS class of the workbench's image canvas
# A canvas shown larger than its pixels (a wide cell, a zoomed page) keeps the image's pixels square and crisp.
CANVAS_CSS = f"<style>canvas.{CANVAS_CLASS} {{ image-rendering: pixelated; }}</style>"
NO_CLASS = -1            # class control value for the all-zeros label (what the official DragGAN code passes)


def row(*children, **layout) -> W.HBox:
    return W.HBox(list(children), layout=W.Layout(**layout))


def _field(cls, description, width="300px", **kw):
    return cls(description=description, style={"description_width": "92px"}, layout=W.Layout(width=width), **kw)


def _button(description, icon="", tooltip="", width="96px"):
    return W.Button(description=description, icon=icon, tooltip=tooltip, layout=W.Layout(width=width, flex="0 0 auto"))


class Controls:
    """Every control and output line of the workbench; :meth:`panel` lays the controls out."""

    def __init__(self):
        self.syncing = False  # set from the session: observers ignore the change
        self.pending_image: tuple | None = None  # (seed, psi or None) of a new image waiting for a yes
        self.step_button = _button("Step", "step-forward", "one optimisation step (key S, mouse over the image)",
                                   "80px")
        self.run_button = _button("Run", "play",
                                  "run until converged, max steps, or Stop (Space or R, mouse over the image)", "80px")
        self.undo_button = _button("Undo", "undo",
                                   "back to before the last drag (U or Ctrl+Z, mouse over the image)", "76px")
        self.reset_points_button = _button("Reset points", "times", "remove every point pair", "120px")
        self.reset_image_button = _button("Reset image", "refresh", "back to the seed image (undoable)", "120px")
        self.mode = W.ToggleButtons(options=[("Points", "points"), ("Mask", "mask")], value="points",
                                    tooltips=["place and drag points", "paint the region allowed to move"],
                                    style={"button_width": "72px"})
        self.internals_toggle = W.ToggleButton(description="Internals", icon="eye", layout=W.Layout(width="108px"),
                                               tooltip="features, r1 / r2, tracking distance, motion directions")
        self.paint = W.ToggleButtons(options=[("Movable", "movable"), ("Fixed", "fixed")], value="movable",
                                     tooltips=["paint the region allowed to move (Shift: the other one)",
                                               "paint the region kept as it is (Shift: the other one)"],
                                     style={"button_width": "84px"})
        self.brush = W.IntSlider(value=4, min=1, max=32, description="brush", tooltip="brush radius, image pixels",
                                 style={"description_width": "44px"}, layout=W.Layout(width="214px"))
        self.show_mask = W.Checkbox(value=True, description="show", indent=False, layout=W.Layout(width="60px"))
        self.clear_mask_button = _button("Clear", "eraser", "remove the mask", "80px")

        self.model = _field(W.Dropdown, "model")
        self.backend = _field(W.Dropdown, "back-end", options=BACKEND_OPTIONS)
        # Offered by offer(): the devices that work here (probing them imports torch, not done at import).
        self.device = _field(W.Dropdown, "device", options=["cpu"])
        self.seed = _field(W.BoundedIntText, "seed", "250px", min=0, max=2**32 - 1)
        self.random_seed_button = _button("", "random", "random seed", "46px")
        self.psi = _field(W.FloatSlider, "psi", min=0.0, max=1.5, step=0.05, continuous_update=False,
                          tooltip="truncation psi (a new image: points are cleared)")
        # Conditional models only (hidden otherwise): the class label, -1 = the all-zeros label.
        self.label = _field(W.BoundedIntText, "class", "250px", min=NO_CLASS, max=NO_CLASS,
                            tooltip="class of a conditional model; -1: the all-zeros label (as the official "
                                    "DragGAN). A new image: points are cleared")
        self.compat = W.ToggleButtons(options=COMPAT_OPTIONS, style={"button_width": "72px"},
                                      tooltips=["dragnb's step and defaults",
                                                "the official DragGAN code's step, defaults and Adam rule "
                                                "(docs/compat.md); unset parameters follow the mode",
                                                "the blog sample's loop: its step, defaults and Adam rule, no "
                                                "mask term (docs/compat.md)"])
        self.latent_space = W.ToggleButtons(options=[("W", "w"), ("W+", "w+")], style={"button_width": "60px"},
                                            tooltips=["one w for the optimised layers", "one w per optimised layer"])
        self.lr = _field(W.BoundedFloatText, "learning rate", min=1e-6, max=1.0, step=1e-4)
        self.lambda_mask = _field(W.BoundedFloatText, "lambda", min=0.0, max=1e4, step=1.0,
                                  tooltip="weight of the mask term")
        self.r1 = _field(W.BoundedFloatText, "r1 (px)", min=0.5, max=512, step=0.5)
        self.r2 = _field(W.BoundedIntText, "r2 (px)", min=1, max=512)
        self.tolerance = _field(W.BoundedFloatText, "tolerance (px)", min=0.1, max=512, step=0.5)
        self.max_steps = _field(W.BoundedIntText, "max steps", min=1, max=100_000)
        self.feature_block = _field(W.Dropdown, "feature block")

        self.save_path = _field(W.Text, "save as", value="dragnb_out/drag",
                                tooltip="path stem: adds .png / .gif / .mp4; a session is the folder <stem>_session")
        self.save_png_button = _button("PNG", "image", "the current image", "70px")
        self.save_gif_button = _button("GIF", "film", "the recorded steps, with points", "70px")
        self.save_mp4_button = _button("MP4", "video-camera", "the recorded steps, with points", "70px")
        self.save_session_button = _button("Session", "save", "points, mask, latents, optimizer state", "86px")
        self.load_path = _field(W.Text, "session", value="dragnb_out/drag_session")
        self.load_button = _button("Load session", "folder-open", "", "150px")

        # A new image drops points, mask and undo history: the workbench asks first when there are any.
        self.confirm_text = W.HTML()
        self.confirm_yes = _button("New image", "check", "drop them and show the new image", "120px")
        self.confirm_no = _button("Keep", "times", "keep this image, its points and its history", "90px")
        self.confirm = row(self.confirm_text, self.confirm_yes, self.confirm_no, align_items="center",
                           display="none", flex_flow="row wrap")

        self.css = W.HTML(CANVAS_CSS, layout=W.Layout(display="none"))  # a <style> applies wherever it sits
        self.status = W.HTML(layout=W.Layout(height=STATUS_HEIGHT, width="100%", overflow="hidden"))
        self.message = W.HTML()
        self.error = W.HTML()
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="", bar_style="info",
                                        layout=W.Layout(visibility="hidden", width="300px"))
        self.loss_canvas = Canvas(width=300, height=80, layout=W.Layout(width="300px", height="80px"))

    def widgets(self) -> dict[str, W.Widget]:
        """Every widget by its attribute name."""
        return {name: w for name, w in vars(self).items() if isinstance(w, W.Widget)}

    def panel(self) -> W.VBox:
        """The controls column, right of the canvas."""
        return W.VBox([
            row(self.mode, self.internals_toggle),
            row(self.paint, self.clear_mask_button),
            row(self.brush, self.show_mask),
            W.HTML("<b>Image</b>"), self.model, self.backend, self.device, row(self.seed, self.random_seed_button),
            self.psi, self.label, row(W.Label("latent space", layout=W.Layout(width="96px")), self.latent_space),
            W.HTML("<b>Optimisation</b>"), row(W.Label("mode", layout=W.Layout(width="96px")), self.compat),
            self.lr, self.lambda_mask, self.r1, self.r2, self.tolerance,
            self.max_steps, self.feature_block,
            W.HTML("<b>Files</b>"), self.save_path,
            row(self.save_png_button, self.save_gif_button, self.save_mp4_button, self.save_session_button),
            row(self.load_path), self.load_button,
        ], layout=W.Layout(width="360px", margin="0 0 0 10px", flex="0 0 auto"))

    def toolbar(self) -> W.HBox:
        """The actions, above the canvas: whatever the width, they are seen together with the image."""
        return row(self.step_button, self.run_button, self.undo_button, self.reset_points_button,
                   self.reset_image_button, flex_flow="row wrap")

    def offer(self, session: DragSession, model_options: list[tuple[str, str]]) -> None:
        """Set the choices of the model, feature block and back-end dropdowns for ``session``."""
        self.syncing = True
        try:
            self.model.options = model_options
            # A session on ORT artifacts (no torch weights) offers only what they were exported for.
            artifacts = isinstance(session.G, ArtifactModel)
            blocks = [session.G.feature_block] if artifacts else range(session.G.num_blocks)
            self.feature_block.options = [(f"{b} ({4 * 2**b} px)", b) for b in blocks]
            self.backend.options = [o for o in BACKEND_OPTIONS if not artifacts or o[1] == session.backend_name]
            self.device.options = [session.device] if artifacts else _devices(session.device)
            self.device.disabled = artifacts  # ONNX Runtime picks its provider when the artifacts are opened
            self.compat.options = [o for o in COMPAT_OPTIONS if not artifacts or o[1] == session.G.compat]
            c_dim = session.G.c_dim
            self.label.max = c_dim - 1 if c_dim else NO_CLASS
            self.label.layout.display = "" if c_dim else "none"
            # A brush that suits the image: 1/16 of its shorter side (8 px on 128 px), strokes a few apart meet.
            side = min(session.H, session.W)
            self.brush.max = max(32, side // 4)
            self.brush.value = max(2, round(side / 16))
        finally:
            self.syncing = False

    def show(self, session: DragSession, model_value: str) -> None:
        """Set every control from ``session`` (without acting on the change)."""
        s, p = session, session.params
        self.syncing = True
        try:
            self.model.value = model_value
            self.backend.value = s.backend_name
            if s.device not in self.device.options:
                self.device.options = [*self.device.options, s.device]
            self.device.value = s.device
            self.seed.value = s.seed
            self.psi.value = s.truncation_psi
            self.label.value = NO_CLASS if s.class_index is None else s.class_index
            self.latent_space.value = s.latent_space
            for name in PARAM_NAMES:
                getattr(self, name).value = p[name]
        finally:
            self.syncing = False

    def set_busy(self, busy: bool, run: bool = False) -> None:
        """Grey out what must not start now; the Run button turns into Stop during a run."""
        for b in (self.step_button, self.model, self.backend, self.device, self.load_button, self.save_png_button,
                  self.save_gif_button, self.save_mp4_button, self.save_session_button):
            b.disabled = busy
        if run:
            self.run_button.description, self.run_button.icon = ("Stop", "stop") if busy else ("Run", "play")
            self.run_button.button_style = "warning" if busy else ""
        else:
            self.run_button.disabled = busy


def _devices(current: str) -> list[str]:
    """The concrete devices that work here ("cpu", "cuda:0", ..., "mps"), and the session's own."""
    from ..devices import available_devices  # imports torch: only for a torch session, never at import

    found = [d for d in available_devices() if d != "auto"]
    return found if current in found else [*found, current]


def model_options(models_dir: Path, model_value: str) -> tuple[list[tuple[str, str]], str]:
    """(options, value): the bundled models that are installed, then the checkpoints in ``models_dir``, then the
    session's model unless it is one of them (a path is recognised by the file it names), and the value among
    them that stands for ``model_value``."""
    from ..checkpoints import BUNDLED  # imports torch: not at this module's import

    opts = [(f"{name} (bundled)", name) for name, path in BUNDLED.items() if path.exists()]
    if models_dir.is_dir():
        files = sorted({p for g in CHECKPOINT_GLOBS for p in models_dir.glob(g)})
        opts += [(p.name, str(p)) for p in files]
    if model_value != SESSION_MODEL and model_value not in [v for _, v in opts]:
        files = {_same_file(BUNDLED.get(v, v)): v for _, v in opts}
        model_value = files.get(_same_file(model_value), model_value)
    if model_value not in [v for _, v in opts]:
        label = "(the given session's model)" if model_value == SESSION_MODEL else str(model_value)
        opts.insert(0, (label, model_value))
    return opts, model_value


def _same_file(path) -> str:
    """A path's canonical form (links and ``~`` resolved), to compare the files two paths name."""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(path)


def session_model_value(session: DragSession) -> str:
    """The model menu's value for a given session: its model's name or file where it was opened from one
    unchanged, else ``SESSION_MODEL`` (an in-memory generator, a picture's tuned one)."""
    source = session.model_source
    return SESSION_MODEL if source is None else source


# ----------------------------------------------------------------------------
# What a change of each control does


def connect(wb: Workbench) -> None:
    """Wire the controls of ``wb`` to its actions; every callback shows its errors in the widget."""
    c, guarded = wb._controls, wb._guarded
    for b, fn in [(c.step_button, wb.step), (c.run_button, lambda: _on_run_button(wb)),
                  (c.undo_button, wb.undo), (c.reset_points_button, wb.reset_points),
                  (c.reset_image_button, wb.reset_image), (c.clear_mask_button, wb.clear_mask),
                  (c.random_seed_button, lambda: _on_random_seed(wb)), (c.save_png_button, wb.save_png),
                  (c.save_gif_button, wb.save_gif), (c.save_mp4_button, wb.save_mp4),
                  (c.save_session_button, wb.save_session), (c.load_button, wb.load_session)]:
        b.on_click(guarded(lambda _b, fn=fn: fn()))
    c.confirm_yes.on_click(guarded(lambda _b: _on_confirm(wb, True)))
    c.confirm_no.on_click(guarded(lambda _b: _on_confirm(wb, False)))
    c.seed.observe(guarded(lambda ch: _on_seed(wb, ch)), "value")
    c.psi.observe(guarded(lambda ch: _on_psi(wb, ch)), "value")
    c.label.observe(guarded(lambda ch: _on_label(wb, ch)), "value")
    c.latent_space.observe(guarded(lambda ch: _on_latent_space(wb, ch)), "value")
    c.backend.observe(guarded(lambda ch: _on_backend(wb, ch)), "value")
    c.device.observe(guarded(lambda ch: _on_device(wb, ch)), "value")
    c.model.observe(guarded(lambda ch: _on_model(wb, ch)), "value")
    for name in PARAM_NAMES:
        getattr(c, name).observe(guarded(lambda ch, name=name: _on_param(wb, name, ch)), "value")
    c.show_mask.observe(guarded(lambda _ch: wb._redraw(image=False)), "value")
    c.internals_toggle.observe(guarded(lambda ch: _on_internals_toggle(wb, ch)), "value")


def _on_run_button(wb: Workbench) -> None:
    if wb.running:
        wb.stop()
    else:
        wb.run()


def _on_random_seed(wb: Workbench) -> None:
    wb.seed.value = random.randrange(2**31)


def _on_seed(wb: Workbench, change) -> None:
    if not wb._controls.syncing:
        _ask_new_image(wb, int(change["new"]), None)


def _on_psi(wb: Workbench, change) -> None:
    if not wb._controls.syncing:
        _ask_new_image(wb, wb.session.seed, float(change["new"]))


def _ask_new_image(wb: Workbench, seed: int, psi: float | None) -> None:
    """A new image drops the points, the mask and the undo history: with any of them, ask first (the seed and
    psi controls show the image in use until the user says yes)."""
    s, c = wb.session, wb._controls
    lost = [f"{len(s.target_points)} point pair{'s' * (len(s.target_points) != 1)}"] if s.target_points else []
    lost += ["the mask"] if s.mask is not None else []
    lost += ["the drag and its undo history"] if s.num_steps or s.can_undo else []
    if not lost:
        _confirmed(wb, seed, psi)
        return
    c.pending_image = (seed, psi)
    c.confirm_text.value = (f"<b>A new image ({'seed ' + str(seed) if psi is None else f'psi {psi:g}'})</b> "
                            f"drops {', '.join(lost)}.&nbsp;")
    c.confirm.layout.display = "flex"
    wb._sync_controls()


def _close_question(c: Controls) -> None:
    c.confirm.layout.display, c.confirm_text.value, c.pending_image = "none", "", None


def _confirmed(wb: Workbench, seed: int, psi: float | None) -> None:
    _close_question(wb._controls)
    new_image(wb, seed, psi)
    wb._sync_controls()


def _on_confirm(wb: Workbench, yes: bool) -> None:
    pending = wb._controls.pending_image
    _close_question(wb._controls)
    if yes and pending is not None:
        _confirmed(wb, *pending)


def _on_label(wb: Workbench, change) -> None:
    if not wb._controls.syncing and change["new"] is not None:
        new_class(wb, None if change["new"] == NO_CLASS else int(change["new"]))


def _on_latent_space(wb: Workbench, change) -> None:
    if not wb._controls.syncing:
        space = change["new"]
        edit(wb, lambda: wb.session.set_latent_space(space))


def _on_param(wb: Workbench, name: str, change) -> None:
    if wb._controls.syncing or change["new"] is None:
        return
    value = change["new"]

    def set_param():
        try:
            wb.session.set_params(**{name: value})
        finally:
            wb._sync_controls()  # a refused value snaps back to the one in force

    edit(wb, set_param)


def _in_background(wb: Workbench, label: str, action, done: str) -> None:
    """Run ``action`` as a long action; whatever happens, the controls then show what is in force (a refused
    choice snaps back) and the status line is redrawn."""
    def run():
        try:
            action()
        finally:
            wb._sync_controls()
            wb._status_idle()

    long_action(wb, label, run, lambda _r: wb._say(done))


def _on_backend(wb: Workbench, change) -> None:
    if wb._controls.syncing:
        return
    name = change["new"]

    def switch():
        # Without tqdm's bar: in a notebook that bar is a widget of its own, left behind in the output ("model not
        # found" once the notebook is reopened); the workbench's bar shows the time meanwhile.
        wb.session.set_backend(name, progress=False)

    label = "preparing ONNX Runtime (exports training artifacts on first use)" if name == "ort" else "back-end"
    _in_background(wb, label, switch, f"back-end: {name}")


def _on_device(wb: Workbench, change) -> None:
    if wb._controls.syncing:
        return
    name = change["new"]
    # A refused device (ValueError) changes nothing.
    _in_background(wb, f"moving to {name}", lambda: wb.session.set_device(name), f"device: {name}")


def _on_model(wb: Workbench, change) -> None:
    if wb._controls.syncing or change["new"] == SESSION_MODEL:
        return
    value, s = change["new"], wb.session
    keep = {k: s.params[k] for k in ("lr", "lambda_mask", "max_steps", "compat")}
    # The new model runs where the session runs; ORT artifacts (a folder) pick their own provider.
    torch_to_torch = not isinstance(s.G, ArtifactModel) and not Path(value).expanduser().is_dir()
    keep["device"] = s.device if torch_to_torch else "auto"

    def load():
        try:
            return DragSession(model=value, seed=s.seed, truncation_psi=s.truncation_psi,
                               backend=s.backend_name, latent_space=s.latent_space, **keep)
        except Exception:
            wb._sync_controls()  # the dropdown snaps back to the model in use
            raise

    def done(new):
        wb._model_value = value
        wb._attach(new)
        wb._say(f"model: {value}")

    long_action(wb, f"loading {value}", load, done)


def _on_internals_toggle(wb: Workbench, change) -> None:
    wb._internals_box.layout.display = "flex" if change["new"] else "none"
    wb._update_internals()
