"""ONNX graph surgery for the DragGAN training export: the stop-gradient marker, convolutions whose gradient is a
convolution, constant folding of weight-only subgraphs, and output pruning.

Stop-gradient: the TorchScript exporter drops ``detach()``. :class:`StopGradient` exports as a node
``dragnb::StopGradient`` (a domain nothing else uses), carried as a model-local ONNX function whose body
is ``Identity`` (so every ORT session can run it); ORT's process-global gradient registry gets a ZERO
gradient for exactly that key (:func:`register_stop_gradient`). Nothing depends on generated node or
tensor names, and the markers are counted at every stage (:func:`count_markers`): a mismatch raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
from onnx import helper

from .ort_sessions import import_onnxruntime

MARKER_DOMAIN = "dragnb"        # custom ONNX domain of the stop-gradient marker; used by nothing else
MARKER_OP = "StopGradient"
TRAINABLE = "latent"            # name of the only trainable initializer
log = logging.getLogger("dragnb.backends.ort_export")


# ----------------------------------------------------------------------------
# Stop-gradient marker


class StopGradient(torch.autograd.Function):
    """``detach`` that survives the ONNX export as a ``dragnb::StopGradient`` node (see module docstring).

    Every export is traced once, so the number of ``symbolic`` calls is the number of markers the graph
    must contain; :data:`StopGradient.emitted` counts them.
    """

    emitted = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)

    @staticmethod
    def symbolic(g, x):
        StopGradient.emitted += 1
        y = g.op(f"{MARKER_DOMAIN}::{MARKER_OP}", x)
        y.setType(x.type())  # same type and shape as x: keeps the exporter's shape inference intact
        return y


def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    return StopGradient.apply(x)


def count_markers(model: onnx.ModelProto) -> int:
    """Number of ``dragnb::StopGradient`` nodes in the main graph."""
    return sum(1 for n in model.graph.node if n.domain == MARKER_DOMAIN and n.op_type == MARKER_OP)


def _marker_function(opset: int) -> onnx.FunctionProto:
    # A model-local function gives the custom op a schema (the gradient builder needs one) and a body
    # (Identity) that every ORT session inlines; no custom-op library is needed anywhere.
    body = [helper.make_node("Identity", ["x"], ["y"])]
    return helper.make_function(MARKER_DOMAIN, MARKER_OP, ["x"], ["y"], body, [helper.make_opsetid("", opset)])


def add_marker_function(model: onnx.ModelProto) -> None:
    """Attach the marker's function definition to ``model`` (idempotent)."""
    if any(f.domain == MARKER_DOMAIN and f.name == MARKER_OP for f in model.functions):
        return
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    model.functions.append(_marker_function(opset))


_REGISTERED = False


def register_stop_gradient() -> None:
    """Give ``dragnb::StopGradient`` a zero gradient in ORT's (process-global) gradient registry.

    The key names our own domain, so no other op in the process is affected. The zero is
    ``ConstantOfShape(Shape(x))`` (default value float 0): exact zeros even where the incoming
    gradient is inf/nan, and the backward pass of the detached branch disappears.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    import_onnxruntime()
    from onnxruntime.capi import _pybind_state as C

    def node(op, inputs, outputs):
        d = C.GradientNodeDefinition()
        d.op_type, d.domain, d.inputs, d.outputs, d.attributes = op, "", inputs, outputs, []
        return d

    C.register_gradient_definition(
        f"{MARKER_DOMAIN}::{MARKER_OP}",
        [node("Shape", ["I(0)"], ["sg_shape"]), node("ConstantOfShape", ["sg_shape"], ["GI(0)"])],
    )
    _REGISTERED = True


class MarkerMismatch(RuntimeError):
    """The number of stop-gradient markers changed between export stages: the gradient cannot be trusted."""


def check_markers(model: onnx.ModelProto, expected: int, where: str) -> None:
    found = count_markers(model)
    if found != expected:
        raise MarkerMismatch(
            f"{where}: {found} {MARKER_DOMAIN}::{MARKER_OP} nodes, expected {expected}; the detached branch "
            "of the motion loss would receive gradient (or lose it elsewhere). Refusing to continue."
        )


# ----------------------------------------------------------------------------
# Convolutions whose gradient is a convolution
#
# ORT's CPU ConvGrad (im2col + GEMM + col2im) takes about twice as long as its forward Conv (MLAS, NCHWc) on
# the same problem, and the backward pass is half of a DragGAN step. While a training graph is exported, every
# convolution of the generator (``stylegan.ops.conv2d``: stride 1, one group, square kernel k, padding p on
# each side) becomes ``dragnb.conv::Conv{k}Pad{p}(x, weight, weight_t)``: a model-local function whose body is
# the ``Conv`` (so every session runs it, as the stop-gradient marker) and whose gradient, registered below, is
# again a ``Conv``: dx = Conv(dy, weight_t, padding k - 1 - p), with ``weight_t`` the weight with in/out
# channels swapped and rotated by 180 degrees: a function of the weights only, folded into the checkpoint at
# export (:func:`fold_constants`; deriving it at every step cost 5 % of an FFHQ-512 step in transposes). Only
# the input gets a gradient (the weights are frozen). The numbers equal ConvGrad's up to the order of the
# float sums (the gradient tests compare with PyTorch's).

CONV_DOMAIN = "dragnb.conv"  # not the marker's domain: that one stays exclusive to the stop-gradient
CONV_OP = "Conv{k}Pad{p}"
_CONV_REGISTERED: set[str] = set()  # op types


class _GradConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, weight_t, padding, k, out_shape):
        return torch.nn.functional.conv2d(x, weight, padding=padding)

    @staticmethod
    def symbolic(g, x, weight, weight_t, padding, k, out_shape):
        y = g.op(f"{CONV_DOMAIN}::{CONV_OP.format(k=k, p=padding)}", x, weight, weight_t)
        y.setType(x.type().with_sizes(out_shape))
        return y


def conv_export_hook(x, weight, padding: int):
    """``ops.conv_export_hook`` while :func:`export_step` traces: the convolution as ``dragnb.conv::Conv{k}Pad{p}``."""
    k = int(weight.shape[-1])
    if int(weight.shape[-2]) != k:
        raise ValueError("only square kernels are exported with a convolution gradient")
    flip = torch.arange(k - 1, -1, -1)
    weight_t = weight.transpose(0, 1).index_select(2, flip).index_select(3, flip)  # folded at export
    n, _, h, w = (int(v) for v in x.shape)
    out_shape = [n, int(weight.shape[0]), h + 2 * padding - k + 1, w + 2 * padding - k + 1]
    return _GradConv.apply(x, weight, weight_t, int(padding), k, out_shape)


# Stride-2 transposed convolutions (the up-sampling convolutions, ``stylegan.ops.conv3x3_up2``): ORT 1.19 runs
# ConvTranspose but cannot differentiate it. While a training graph is exported, each becomes
# ``dragnb.conv::ConvT{k}S2(x, weight_t)``: a model-local function whose body is the ``ConvTranspose`` and whose
# gradient, registered below, is dx = Conv(dy, weight_t, strides 2): the adjoint of a transposed convolution is
# the strided convolution with the same weight tensor ([Cin, Cout, k, k] read as Conv's [M, C, k, k]). That is
# 9 products per input sample and channel pair for k = 3, forward and backward, against the 16 of the polyphase
# form, and no pixel shuffle.

CONVT_OP = "ConvT{k}S2"


class _GradConvT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_t, k, out_shape):
        return torch.nn.functional.conv_transpose2d(x, weight_t, stride=2)

    @staticmethod
    def symbolic(g, x, weight_t, k, out_shape):
        y = g.op(f"{CONV_DOMAIN}::{CONVT_OP.format(k=k)}", x, weight_t)
        y.setType(x.type().with_sizes(out_shape))
        return y


def conv_transpose_export_hook(x, weight_t):
    """``ops.conv_transpose_export_hook`` while :func:`export_step` traces: ``dragnb.conv::ConvT{k}S2``."""
    k = int(weight_t.shape[-1])
    if int(weight_t.shape[-2]) != k:
        raise ValueError("only square kernels are exported with a transposed-convolution gradient")
    n, _, h, w = (int(v) for v in x.shape)
    out_shape = [n, int(weight_t.shape[1]), 2 * h + k - 2, 2 * w + k - 2]
    return _GradConvT.apply(x, weight_t, k, out_shape)


def conv_transpose_inference_hook(x, weight_t):
    """``ops.conv_transpose_export_hook`` for graphs that are only run (the display tail): plain ConvTranspose."""
    return torch.nn.functional.conv_transpose2d(x, weight_t, stride=2)


def _conv_function(op_type: str, opset: int) -> onnx.FunctionProto:
    if op_type.startswith("ConvT"):
        k = _convt_k(op_type)
        body = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], kernel_shape=[k, k])]
        inputs = ["x", "w"]
    else:
        k, p = _conv_kp(op_type)
        body = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[p] * 4, kernel_shape=[k, k])]
        inputs = ["x", "w", "wt"]
    return helper.make_function(CONV_DOMAIN, op_type, inputs, ["y"], body, [helper.make_opsetid("", opset)])


def add_conv_functions(model: onnx.ModelProto) -> list[str]:
    """Attach the function of every ``dragnb.conv`` op the model uses; returns their op types."""
    used = sorted({n.op_type for n in model.graph.node if n.domain == CONV_DOMAIN})
    have = {f.name for f in model.functions if f.domain == CONV_DOMAIN}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for op_type in used:
        if op_type not in have:
            model.functions.append(_conv_function(op_type, opset))
    return used


def _conv_kp(op_type: str) -> tuple[int, int]:
    k, p = op_type[len("Conv"):].split("Pad")
    return int(k), int(p)


def _convt_k(op_type: str) -> int:
    return int(op_type[len("ConvT"):].split("S")[0])


def register_conv_gradients(op_types) -> None:
    """Register the gradient of each ``dragnb.conv`` op (process-global; our domain only):
    ``Conv{k}Pad{p}``: dx = Conv(dy, weight_t, pads k - 1 - p); ``ConvT{k}S2``: dx = Conv(dy, weight_t, strides 2)."""
    import_onnxruntime()
    from onnxruntime.capi import _pybind_state as C

    def attribute(name, value):
        a = C.GradientNodeAttributeDefinition()
        a.name, a.value_json, a.dtype, a.is_tensor = name, json.dumps(value), "int", False
        return a

    for op_type in op_types:
        if op_type in _CONV_REGISTERED:
            continue
        d = C.GradientNodeDefinition()
        if op_type.startswith("ConvT"):
            inputs, attrs = ["GO(0)", "I(1)"], [attribute("strides", [2, 2])]
        else:
            k, p = _conv_kp(op_type)
            inputs, attrs = ["GO(0)", "I(2)"], [attribute("pads", [k - 1 - p] * 4)]
        d.op_type, d.domain, d.inputs, d.outputs, d.attributes = "Conv", "", inputs, ["GI(0)"], attrs
        C.register_gradient_definition(f"{CONV_DOMAIN}::{op_type}", [d])
        _CONV_REGISTERED.add(op_type)


# ----------------------------------------------------------------------------
# Constant folding of the weight-only subgraphs

FOLDED_PREFIX = "folded/"  # initializers computed from the weights at export; large ones go to the checkpoint
_FOLD_MIN_FROZEN = 1024   # folded tensors with at least this many values become frozen parameters


def fold_constants(model: onnx.ModelProto, keep=(TRAINABLE,)) -> int:
    """Evaluate (numpy, ``onnx.reference``) every standard-domain node whose inputs are all initializers other
    than ``keep``, and store its outputs as initializers; returns the number of nodes folded.

    The TorchScript exporter cannot fold constants in a training export (the parameters must keep their
    names), so the weight flips, transposes, gains and demodulation sums would otherwise run at every step.
    Outputs with at least ``_FOLD_MIN_FROZEN`` values are named ``folded/<name>`` (frozen parameters in the
    checkpoint, shared by the training and eval graphs); nodes whose output is more than 4 times their largest
    input (broadcasts) are left alone.
    """
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    values = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name not in set(keep)}
    folded, kept_nodes, renamed = 0, [], {}
    for node in g.node:
        ins = [i for i in node.input if i]
        subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        if (node.domain not in ("", "ai.onnx") or subgraph or not all(i in values for i in ins)
                or node.op_type.startswith("Random")):
            kept_nodes.append(node)
            continue
        ins = list(dict.fromkeys(ins))
        graph_in = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(values[i].dtype),
                                                  values[i].shape) for i in ins]
        graph_out = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
        one = helper.make_model(helper.make_graph([node], "fold", graph_in, graph_out),
                                opset_imports=[helper.make_opsetid("", opset)])
        outs = ReferenceEvaluator(one).run(None, {i: values[i] for i in ins})
        biggest = max([values[i].size for i in ins], default=0)
        if any(np.asarray(v).size > max(4 * biggest, _FOLD_MIN_FROZEN) for v in outs):
            kept_nodes.append(node)
            continue
        for name, v in zip([o for o in node.output if o], outs):
            values[name] = np.asarray(v)
            if values[name].size >= _FOLD_MIN_FROZEN:
                renamed[name] = FOLDED_PREFIX + name
        folded += 1
    # Rewire the remaining nodes and the outputs to the folded tensors, then keep the initializers they use.
    for node in kept_nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for o in g.output:
        if o.name in values and o.name not in {t.name for t in g.initializer}:
            raise RuntimeError(f"graph output {o.name} would be folded into a constant")
    del g.node[:]
    g.node.extend(kept_nodes)
    used = {i for n in kept_nodes for i in n.input} | {o.name for o in g.output}
    trainable = [t for t in g.initializer if t.name in set(keep)]
    inits = []
    for name, v in values.items():
        out_name = renamed.get(name, name)
        if out_name in used:
            inits.append(numpy_helper.from_array(np.array(v, copy=True, order="C"), out_name))  # keeps 0-d
    del g.initializer[:]
    g.initializer.extend(trainable + inits)
    names = {t.name for t in g.initializer}
    keep_inputs = [i for i in g.input if i.name not in values or i.name in names]
    del g.input[:]
    g.input.extend(keep_inputs)
    return folded


@contextlib.contextmanager
def native_stderr_to_log():
    """Send the C++ stderr (file descriptor 2) to a temporary file while ORT builds the gradient graph.

    ORT's graph builder logs every optimisation pass at INFO level through its own loggers, which
    ``set_default_logger_severity`` does not reach: hundreds of lines per export. They go to the
    ``dragnb.backends.ort_export`` logger at DEBUG instead, and into the exception if the build fails.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        failed = False
        try:
            yield
        except Exception:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            if text:
                log.debug("onnxruntime output:\n%s", text)
            if failed and text:
                sys.stderr.write("onnxruntime output before the failure (last 40 lines):\n")
                sys.stderr.write("\n".join(text.splitlines()[-40:]) + "\n")


def drop_output(path, name: str) -> None:
    """Remove graph output ``name`` (ours, by the name we exported it with) from the model at ``path``."""
    model = onnx.load(os.fspath(path))
    keep = [o for o in model.graph.output if o.name != name]
    if len(keep) != len(model.graph.output) - 1:
        raise RuntimeError(f"{path}: no single output {name!r} to drop")
    del model.graph.output[:]
    model.graph.output.extend(keep)
    prune(model)
    onnx.save(model, os.fspath(path))


def prune(model: onnx.ModelProto) -> int:
    """Remove the nodes (and then unused initializers) that no graph output depends on; returns how many nodes.

    ORT runs every node of a graph; after :func:`drop_output` the nodes that computed the dropped output
    (the eval graph's full-resolution features) would still run at every training step.
    """
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer-scope names
                for sub in list(attr.g.node if attr.HasField("g") else []) + [n for gg in attr.graphs for n in gg.node]:
                    needed.update(i for i in sub.input if i)
    removed = len(g.node) - len(keep)
    del g.node[:]
    g.node.extend(reversed(keep))
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    return removed
