"""Export ONE DragGAN step as an ONNX Runtime on-device-training graph, plus the inference pieces around it.

The training graph (``DragStep``) is, per call, exactly what :class:`~dragnb.backends.torch_backend.TorchBackend`
does per step: the synthesis blocks up to the feature block, the bilinear resize to image size, and
:func:`dragnb.drag.core.drag_objective` (tracking, motion and mask terms) on those same features. Its
first output is the scalar loss (``generate_artifacts(loss=None)`` seeds the backward pass there).

The only trainable parameter is ``latent`` [1, num_ws, w_dim]. W / W+ and the number of trained layers are
NOT baked into the graph: a constant 0/1 matrix ``select`` [num_ws, num_ws] (an input) maps the latent onto
the ws, ``ws = ws0 * (1 - rowsum(select)) + select @ latent``:

* W+, n layers: ``select = diag(1, .., 1, 0, ..)`` (n ones); latent rows >= n get exactly zero gradient;
* W, n layers: ``select[:n, 0] = 1``; one vector broadcast, rows >= 1 get zero gradient.

Rows with zero gradient stay put under Adam (m = v = 0 gives an update of exactly 0), so one artifact set
serves every latent space and layer count, and ``ws`` equals the PyTorch back-end's bit for bit.

Official mode (``compat="official"``, :class:`OfficialDragStep`): the official DragGAN code's motion term
(``core.official_motion_loss``: its disk is found per point inside the graph, from the tracked handle) and
latent regulariser; the step graph has two more inputs (:data:`OFFICIAL_STEP_INPUTS`) and the optimizer is
``torch.optim.Adam``'s rule as a graph of elementwise ops (:func:`torch_adam_model`). A separate artifact set.

Blog mode (``compat="blog"``, :class:`BlogDragStep`): the blog sample's loop (``core.blog_objective``: its stop
test and motion term at the given handles, L1 tracking after them on the same features, no mask term); its inputs
are :data:`BLOG_STEP_INPUTS`, its optimizer ``torch.optim.Adam``'s rule as in official mode. A separate set too.

The graph surgery (the stop-gradient marker that keeps ``detach()``, convolution gradients, constant folding)
is in ``ort_graph.py``. The other artifacts: ``tail.onnx`` (blocks after the feature block, from the step's
activations, for the display image only) and ``mapping.onnx`` (z, psi -> ws, so a device can start from a seed
without torch); the runtime resizes the features for F0 in numpy. See ``ort_cache.py`` for the cache.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from ..drag import core
from ..drag.params import DragParams
from ..stylegan import ops
from ..stylegan.networks import Generator
from .onnx_export import OPSET  # the TorchScript exporter's output that ORT 1.19 trains
from .ort_files import EXPORT_NOISE_MODES, OPTIMIZERS, TORCH_ADAM_FILE
from .ort_graph import (  # noqa: F401  (count_markers: part of this module's API)
    CONV_DOMAIN,
    FOLDED_PREFIX,
    MARKER_DOMAIN,
    TRAINABLE,
    MarkerMismatch,
    StopGradient,
    add_conv_functions,
    add_marker_function,
    check_markers,
    conv_export_hook,
    conv_transpose_export_hook,
    conv_transpose_inference_hook,
    count_markers,
    drop_output,
    fold_constants,
    native_stderr_to_log,
    register_conv_gradients,
    register_stop_gradient,
    stop_gradient,
)
from .ort_optim import adamw_block, explicit_optimizer, torch_adam_model  # noqa: F401  (part of this API)
from .ort_sessions import import_onnxruntime

log = logging.getLogger(__name__)
_EXPORT_LOCK = threading.Lock()  # tracing is not thread-safe, and StopGradient.emitted counts per export

# Inputs of the step graph, in order (ORT training Modules take positional inputs). Shapes:
# P points (dynamic), M window offsets (dynamic), K disk offsets (dynamic), C/H/W features at image size.
STEP_INPUTS = (
    "ws0",          # float32 [1, num_ws, w_dim]: ws of the drag's start; untrained rows keep these
    "select",       # float32 [num_ws, num_ws]: 0/1 map latent rows -> ws rows (see module docstring)
    "handles_rc",   # int64 [P, 2]: handles tracked so far (row, col)
    "targets_rc",   # float32 [P, 2]: targets (row, col)
    "ref_feats",    # float32 [P, C]: features of the initial handles in F0
    "window",       # int64 [M, 2]: tracking window offsets (core.window_offsets(r2))
    "disk",         # int64 [K, 2]: motion disk offsets (core.disk_offsets(r1))
    "fixed",        # float32 [H, W] or [1, 1] (no mask, zero): 1 = keep fixed
    "f0_fixed",     # float32 [C, H, W] or [1, 1, 1]: F0 * fixed
    "lambda_mask",  # float32 []: weight of the mask term
    "tolerance",    # float32 []: arrival distance in pixels
    "l1_tracking",  # bool []: L1 (paper) instead of L2 (official code) tracking distance
)
# The official step's inputs: ``disk`` is then the box the official disk is looked for in
# (geometry.official_disk_box(r1)), and two more follow.
OFFICIAL_STEP_INPUTS = STEP_INPUTS + (
    "radius",       # float32 []: the official motion disk's radius r1, pixels
    "reg",          # float32 []: weight of mean |ws - ws0| (the official latent regulariser)
)
# The blog step's inputs: no mask term, L1 tracking always; ``disk`` holds geometry.blog_disk_offsets(r1), and
# ``previous_rc`` int64 [P, 2] the handles of the previous step (its stop test looks at them).
BLOG_STEP_INPUTS = ("ws0", "select", "handles_rc", "previous_rc", "targets_rc", "ref_feats", "window", "disk",
                    "tolerance")
STEP_OUTPUTS = (
    "loss",         # float32 []: motion + lambda_mask * mask (MUST stay first: the backward pass starts here)
    "motion",       # float32 []
    "mask",         # float32 []: mask term before lambda
    "tracked_rc",   # int64 [P, 2]
    "distance",     # float32 [P]: pixels from the tracked handles to their targets
    "converged",    # bool []: every distance <= tolerance
    "block_x",      # float32 [1, C, h, w]: feature-block activation (input of the tail / of the resize)
    "block_img",    # float32 [1, 3, h, w]: partial RGB image at the feature block (absent if the arch has none)
)
# The eval model (same forward, no backward) also returns the resized features, so F0 is computed by the
# very kernels of the training forward: bit-identical features at ws0 make the L1 mask term's subgradient
# exactly 0 at the start, as in PyTorch (a separate resize model differs by 1 ulp, which flips signs).
# The training model does not return them (a [C, H, W] copy per step).
EVAL_ONLY_OUTPUT = "features"   # float32 [C, H, W]
_DYNAMIC = {
    "handles_rc": {0: "points"}, "previous_rc": {0: "points"}, "targets_rc": {0: "points"}, "ref_feats": {0: "points"},
    "window": {0: "window"}, "disk": {0: "disk"},  # "disk" is the official step's box too
    "fixed": {0: "mask_h", 1: "mask_w"}, "f0_fixed": {0: "mask_c", 1: "mask_h", 2: "mask_w"},
    "tracked_rc": {0: "points"}, "distance": {0: "points"},
}


def step_outputs(has_img: bool) -> list[str]:
    """Outputs of the training graph (the eval graph adds :data:`EVAL_ONLY_OUTPUT`)."""
    return list(STEP_OUTPUTS if has_img else STEP_OUTPUTS[:-1])


# ----------------------------------------------------------------------------
# The exported modules


class DragStep(nn.Module):
    """ONE DragGAN step's forward (inputs/outputs: :data:`STEP_INPUTS` / :data:`STEP_OUTPUTS`).

    Args:
        G: the generator; only ``G.synthesis`` blocks 0..feature_block are exported here.
        feature_block: synthesis block index (0 = 4x4) whose output are the features.
        noise_mode: "const" or "none".
        marker: True = :func:`stop_gradient` (correct); False = ``detach`` (dropped by the exporter: the
            WRONG gradient, kept only so a test can show that the marker matters).
    """

    def __init__(self, G: Generator, feature_block: int, noise_mode: str = "const", marker: bool = True):
        super().__init__()
        self.synthesis = G.synthesis
        self.feature_block, self.noise_mode = int(feature_block), noise_mode
        self.size = (G.img_resolution, G.img_width)
        self.has_img = _has_partial_image(G, feature_block)
        self.sg = stop_gradient if marker else torch.Tensor.detach
        self.latent = nn.Parameter(torch.zeros(1, G.num_ws, G.w_dim))  # [1, num_ws, w_dim]

    def forward(self, ws0, select, handles_rc, targets_rc, ref_feats, window, disk, fixed, f0_fixed,
                lambda_mask, tolerance, l1_tracking):
        keep = 1 - select.sum(dim=1)  # [num_ws]: 1 for rows the latent does not drive
        ws = ws0 * keep[None, :, None] + select @ self.latent  # [1, num_ws, w_dim]
        x, img = self.synthesis.run_blocks(ws, 0, self.feature_block + 1, noise_mode=self.noise_mode,
                                           render_rgb=self.has_img)
        feat = core.ResizedFeatures(x, self.size)  # sampled where needed; never [C, H, W] in the training graph
        loss, motion, masked, tracked, dist, converged = core.drag_objective(
            feat, ref_feats, handles_rc, targets_rc, window, disk, fixed, f0_fixed, lambda_mask, tolerance,
            l1_tracking=l1_tracking, stop_gradient=self.sg,
        )
        out = (loss, motion, masked, tracked, dist, converged, x)
        # The full map is the eval graph's F0; prune drops its nodes from the training graph.
        return out + ((img,) if self.has_img else ()) + (feat.full(),)


class OfficialDragStep(DragStep):
    """The official DragGAN code's step (inputs :data:`OFFICIAL_STEP_INPUTS`, outputs as :class:`DragStep`'s):
    tracking and the mask term as dragnb's, the motion term ``core.official_motion_loss`` (``disk`` holds the
    box its disk is found in, ``radius`` its radius) and ``reg * mean |ws - ws0|``."""

    def __init__(self, G: Generator, feature_block: int, noise_mode: str = "const", marker: bool = True):
        super().__init__(G, feature_block, noise_mode, marker)
        # The official code's stretched pixel coordinates: graph constants with exactly its float32 values.
        self.coords = tuple(torch.linspace(0, n, n) for n in self.size)

    def forward(self, ws0, select, handles_rc, targets_rc, ref_feats, window, disk, fixed, f0_fixed,
                lambda_mask, tolerance, l1_tracking, radius, reg):
        keep = 1 - select.sum(dim=1)
        ws = ws0 * keep[None, :, None] + select @ self.latent
        x, img = self.synthesis.run_blocks(ws, 0, self.feature_block + 1, noise_mode=self.noise_mode,
                                           render_rgb=self.has_img)
        feat = core.ResizedFeatures(x, self.size)
        loss, motion, masked, tracked, dist, converged = core.drag_objective(
            feat, ref_feats, handles_rc, targets_rc, window, disk, fixed, f0_fixed, lambda_mask, tolerance,
            l1_tracking=l1_tracking, stop_gradient=self.sg, official=(self.coords, radius),
        )
        loss = loss + reg * (ws - ws0).abs().mean()
        out = (loss, motion, masked, tracked, dist, converged, x)
        return out + ((img,) if self.has_img else ()) + (feat.full(),)


class BlogDragStep(DragStep):
    """The blog sample's step (inputs :data:`BLOG_STEP_INPUTS`, outputs as :class:`DragStep`'s, ``mask`` 0):
    ``core.blog_objective`` on the features of the forward."""

    def forward(self, ws0, select, handles_rc, previous_rc, targets_rc, ref_feats, window, disk, tolerance):
        keep = 1 - select.sum(dim=1)
        ws = ws0 * keep[None, :, None] + select @ self.latent
        x, img = self.synthesis.run_blocks(ws, 0, self.feature_block + 1, noise_mode=self.noise_mode,
                                           render_rgb=self.has_img)
        feat = core.ResizedFeatures(x, self.size)
        out = core.blog_objective(feat, ref_feats, handles_rc, targets_rc, window, disk, tolerance, previous_rc,
                                  stop_gradient=self.sg) + (x,)
        return out + ((img,) if self.has_img else ()) + (feat.full(),)


STEP_MODULES = {"dragnb": DragStep, "official": OfficialDragStep, "blog": BlogDragStep}


def step_inputs(compat: str) -> tuple[str, ...]:
    """The step graph's inputs in order for a compat mode."""
    return {"official": OFFICIAL_STEP_INPUTS, "blog": BLOG_STEP_INPUTS}.get(compat, STEP_INPUTS)


class Tail(nn.Module):
    """Blocks after the feature block, for the display image: (ws, block_x[, block_img]) -> image [1, 3, H, W]."""

    def __init__(self, G: Generator, feature_block: int, noise_mode: str):
        super().__init__()
        self.synthesis, self.noise_mode = G.synthesis, noise_mode
        self.start, self.stop = feature_block + 1, G.num_blocks

    def forward(self, ws, block_x, block_img=None):
        return self.synthesis.run_blocks(ws, self.start, self.stop, block_x, block_img, self.noise_mode)[1]


def _has_partial_image(G: Generator, feature_block: int) -> bool:
    """Whether a partial RGB image exists after ``feature_block`` ("skip": always; "orig"/"resnet": last block)."""
    return G.cfg.architecture == "skip" or feature_block == G.num_blocks - 1


def _torch_export(module, args, path, input_names, output_names, dynamic_axes, training=False, custom=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(
            module, args, os.fspath(path), input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, export_params=True,
            # No constant folding while exporting for training: the parameters must keep their names.
            do_constant_folding=not training,
            training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
            custom_opsets={d: 1 for d in custom} or None,
        )


def example_step_inputs(G: Generator, feature_block: int, points: int = 2, compat: str = "dragnb") -> tuple:
    """Inputs in :func:`step_inputs` order for tracing (values irrelevant, shapes representative)."""
    c, _, _ = G.feature_shape(feature_block)
    h, w = G.img_resolution, G.img_width
    r1, r2, tol = core.default_radii(h)
    g = torch.Generator().manual_seed(0)
    handles = torch.stack([torch.randint(0, h, (points,), generator=g), torch.randint(0, w, (points,), generator=g)], 1)
    disk = {"official": core.geometry.official_disk_box, "blog": core.geometry.blog_disk_offsets}.get(
        compat, core.disk_offsets)(r1)
    args = (
        torch.zeros(1, G.num_ws, G.w_dim), torch.eye(G.num_ws), handles, handles.float() + 3.0,
        torch.randn(points, c, generator=g), torch.from_numpy(core.window_offsets(r2)),
        torch.from_numpy(disk), torch.zeros(h, w), torch.zeros(c, h, w),
        torch.tensor(10.0), torch.tensor(float(tol)), torch.tensor(False),
    )
    if compat == "blog":  # positional: the previous handles after the handles; no mask, lambda or l1 inputs
        return args[:3] + (handles,) + args[3:7] + (args[10],)
    return args + ((torch.tensor(float(r1)), torch.tensor(0.0)) if compat == "official" else ())


def export_step(G: Generator, feature_block: int, path, noise_mode: str = "const", marker: bool = True,
                conv_gradient: bool = True, fold: bool = True, compat: str = "dragnb") -> int:
    """Export the step module of ``compat`` (:data:`STEP_MODULES`) to ``path`` (with the marker function attached);
    returns the marker count.

    ``conv_gradient``: convolutions as ``dragnb.conv::Conv{k}Pad{p}`` and the up-sampling transposed convolutions
    as ``dragnb.conv::ConvT{k}S2`` (each with a convolution as gradient, see ``ort_graph.py``; False: ORT's
    ConvGrad and the polyphase form of ``ops.conv3x3_up2``); ``fold``: fold the weight-only subgraphs into
    constants (:func:`fold_constants`). Both are optimisations (False reproduces the plain graph, for
    measurements). Raises :class:`MarkerMismatch` if the graph does not
    hold one marker per traced ``stop_gradient``.
    """
    if noise_mode not in EXPORT_NOISE_MODES:
        raise ValueError(f"the ORT back-end supports noise_mode {EXPORT_NOISE_MODES}, got {noise_mode!r}")
    inputs = step_inputs(compat)
    step = STEP_MODULES[compat](G, feature_block, noise_mode, marker).eval()
    outputs = step_outputs(step.has_img) + [EVAL_ONLY_OUTPUT]
    with _EXPORT_LOCK:
        before = StopGradient.emitted
        ops.conv_export_hook = conv_export_hook if conv_gradient else None
        ops.conv_transpose_export_hook = conv_transpose_export_hook if conv_gradient else None
        try:
            _torch_export(step, example_step_inputs(G, feature_block, compat=compat), path, inputs, outputs,
                          {k: v for k, v in _DYNAMIC.items() if k in inputs or k in outputs}, training=True,
                          custom=[MARKER_DOMAIN] * marker + [CONV_DOMAIN] * conv_gradient)
        finally:
            ops.conv_export_hook = ops.conv_transpose_export_hook = None
        expected = StopGradient.emitted - before
    model = onnx.load(os.fspath(path))
    if fold:
        n = fold_constants(model)
        log.debug("folded %d weight-only nodes of the step graph", n)
    add_conv_functions(model)
    check_markers(model, expected, "exported step graph")
    if marker and expected == 0:
        raise MarkerMismatch("the step graph was traced without any stop-gradient marker")
    missing = [n for n in inputs if n not in {i.name for i in model.graph.input}]
    if missing:  # the exporter silently drops unused inputs; positional feeding would then be misaligned
        raise RuntimeError(f"exported step graph lost inputs {missing}")
    add_marker_function(model)
    onnx.save(model, os.fspath(path))
    return expected


def export_tail(G: Generator, feature_block: int, path, noise_mode: str = "const") -> list[str] | None:
    """Export :class:`Tail`; returns its input names, or None when the feature block is the last block."""
    if feature_block == G.num_blocks - 1:
        return None
    c, h, w = G.feature_shape(feature_block)
    args = [torch.zeros(1, G.num_ws, G.w_dim), torch.zeros(1, c, h, w)]
    names = ["ws", "block_x"]
    if _has_partial_image(G, feature_block):
        args.append(torch.zeros(1, G.img_channels, h, w))
        names.append("block_img")
    with _EXPORT_LOCK, torch.no_grad():
        ops.conv_transpose_export_hook = conv_transpose_inference_hook  # only run, never differentiated
        try:
            _torch_export(Tail(G, feature_block, noise_mode).eval(), tuple(args), path, names, ["image"], None)
        finally:
            ops.conv_transpose_export_hook = None
    return names


def generate_step_artifacts(G: Generator, step_path, out_dir, markers: int, eval_features: bool = True) -> None:
    """ORT's four training artifacts (+ ``adamw.onnx``) from an exported step graph (:func:`export_step`).

    ``training_model.onnx`` (forward + backward to ``latent``), ``eval_model.onnx`` (forward only),
    ``optimizer_model.onnx`` (AdamW) and ``checkpoint`` (``latent`` trainable, every generator weight
    frozen) go to the existing folder ``out_dir``; ``markers`` is what :func:`export_step` returned
    and is checked again in both generated graphs. ``eval_features``: keep the full feature map
    (:data:`EVAL_ONLY_OUTPUT`) as an output of the eval graph (the cached sets drop it: the runtime takes F0
    with ``geometry.resize_features`` after rendering, so that the map and the display tail are never in
    memory together).
    """
    import_onnxruntime()
    from onnxruntime.training import artifacts

    out = Path(out_dir)
    register_stop_gradient()
    model = onnx.load(os.fspath(step_path))
    register_conv_gradients(add_conv_functions(model))
    # Every generator weight in the graph and every large tensor folded from them is a frozen parameter (kept
    # in the checkpoint, shared by the training and eval graphs); buffers (noise, filters) stay constants.
    frozen = [i.name for i in model.graph.initializer if i.name != TRAINABLE
              and (i.name in _param_names(G) or i.name.startswith(FOLDED_PREFIX))]
    with native_stderr_to_log():
        artifacts.generate_artifacts(
            model, requires_grad=[TRAINABLE], frozen_params=frozen, loss=None, optimizer=adamw_block(),
            artifact_directory=os.fspath(out),
        )
    drop_output(out / "training_model.onnx", EVAL_ONLY_OUTPUT)
    if not eval_features:
        drop_output(out / "eval_model.onnx", EVAL_ONLY_OUTPUT)
    for name in ("training_model.onnx", "eval_model.onnx"):
        check_markers(onnx.load(os.fspath(out / name)), markers, name)
    explicit_optimizer(out / "optimizer_model.onnx", out / "adamw.onnx")


def generate_training_artifacts(G: Generator, feature_block: int, out_dir, noise_mode: str = "const",
                                marker: bool = True, progress=None, compat: str = "dragnb") -> dict:
    """Write every artifact of one (G, feature_block, noise_mode, compat) into the existing folder ``out_dir``.

    Files: ``step.onnx`` (the exported forward; ``ort_cache`` drops it, the training model contains it),
    ``training_model.onnx``,
    ``eval_model.onnx``, ``optimizer_model.onnx``, ``checkpoint`` (ORT's), ``adamw.onnx``
    (:func:`explicit_optimizer`), in official mode ``torch_adam.onnx`` (:func:`torch_adam_model`), ``tail.onnx``
    (unless the feature block is last) and ``mapping.onnx`` (with the label input ``c`` of a conditional model).
    ``progress`` is called with a stage name after each
    stage. Returns the config part of the manifest.
    """
    from .onnx_export import export_mapper

    tick = progress or (lambda stage: None)
    out = Path(out_dir)
    G = G.eval().requires_grad_(False)
    markers = export_step(G, feature_block, out / "step.onnx", noise_mode, marker, compat=compat)
    tick("export step graph")
    generate_step_artifacts(G, out / "step.onnx", out, markers, eval_features=False)
    optimizer = OPTIMIZERS[compat]
    if optimizer["file"] == TORCH_ADAM_FILE:
        torch_adam_model(out / TORCH_ADAM_FILE)
    tick("generate training artifacts")

    tail_inputs = export_tail(G, feature_block, out / "tail.onnx", noise_mode)
    tick("export display tail")
    export_mapper(G, out / "mapping.onnx")  # a conditional model's takes the label c as well
    tick("export mapping")

    c, h, w = G.feature_shape(feature_block)
    return {
        "generator": G.cfg.to_dict(),
        "feature_block": int(feature_block),
        "noise_mode": noise_mode,
        "opset": OPSET,
        "num_ws": G.num_ws,
        "num_blocks": G.num_blocks,  # StyleGAN2: 4 px .. image height; StyleGAN3: layers L0 .. ToRGB
        "w_dim": G.w_dim,
        "z_dim": G.z_dim,
        "image_shape": [G.img_channels, G.img_resolution, G.img_width],
        "block_shape": [c, h, w],
        "feature_shape": [c, G.img_resolution, G.img_width],
        # The drag defaults a session on this model uses (its tuned drag_defaults, else the resolution's rules):
        # ArtifactModel and ort_runtime.drag read them here.
        "drag_params": DragParams.for_artifacts(G, feature_block, noise_mode, compat),
        "compat": compat,
        "step_inputs": list(step_inputs(compat)),
        "step_outputs": step_outputs(_has_partial_image(G, feature_block)),
        "eval_outputs": step_outputs(_has_partial_image(G, feature_block)),  # F0: geometry.resize_features
        "tail_inputs": tail_inputs,
        "has_mapping": True,
        "mapping_inputs": ["z", "psi"] + (["c"] if G.c_dim else []),
        "trainable": TRAINABLE,
        "stop_gradient_markers": markers if marker else 0,
        "stop_gradient": "marker" if marker else "none (detach dropped: wrong gradient)",
        "adam": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        "optimizer": optimizer,  # which update rule the runtime runs, and from which file
    }


def _param_names(G: Generator) -> set[str]:
    return {f"synthesis.{k}" for k, _ in G.synthesis.named_parameters()}
