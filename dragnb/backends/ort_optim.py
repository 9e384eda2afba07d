"""The optimizer graphs of the ORT back-end: ORT's AdamW node made explicit, and ``torch.optim.Adam``'s rule.

The runtime keeps the Adam state itself (a fresh drag per seed, undo, saved sessions), so each optimizer is a
graph run in an InferenceSession with the state as inputs and outputs: :func:`explicit_optimizer` rewrites the
AdamW graph ORT generates (dragnb mode), :func:`torch_adam_model` writes ``torch.optim.Adam``'s update as
elementwise ops (official and blog modes). ``base.py`` states both rules.
"""

from __future__ import annotations

import os

import onnx
from onnx import helper

from .onnx_export import OPSET
from .ort_sessions import import_onnxruntime


def explicit_optimizer(path_in, path_out) -> None:
    """Rewrite ORT's generated ``optimizer_model.onnx`` so its AdamW node RETURNS the new params and moments.

    ``onnxruntime.training.api.Optimizer`` keeps the Adam moments inside the CheckpointState with no way
    to read, write or reset them; DragGAN needs all three (a fresh drag per seed, undo, saved sessions).
    Running the same generated AdamWOptimizer node in an InferenceSession with the state as inputs and
    outputs gives ORT's update bit for bit (checked against ``Optimizer.step``) with the state in our hands.
    """
    model = onnx.load(os.fspath(path_in))
    nodes = [n for n in model.graph.node if n.op_type == "AdamWOptimizer"]
    if len(nodes) != 1 or len(model.graph.input) != 6:
        raise RuntimeError(f"{path_in}: expected one AdamWOptimizer node with 6 graph inputs")
    node = nodes[0]
    del node.output[1:]
    node.output.extend(["updated_params", "updated_exp_avg", "updated_exp_avg_sq"])
    for name in node.output[1:]:
        model.graph.output.append(helper.make_tensor_sequence_value_info(name, onnx.TensorProto.FLOAT, None))
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path_out))


def torch_adam_model(path=None) -> onnx.ModelProto:
    """``torch.optim.Adam``'s update (defaults of ``base.py``; eps inside the bias correction) as an ONNX graph of
    elementwise ops, for the ORT back-end's official mode; saved to ``path`` if given.

    Inputs ``params``, ``gradients``, ``exp_avg``, ``exp_avg_sq`` (float32 [1, num_ws, w_dim], the latent's shape),
    ``step_size`` (float32 [], lr / (1 - b1^t)) and ``bias_correction2_sqrt`` (float32 [], sqrt(1 - b2^t));
    outputs the updated three. The
    arithmetic follows PyTorch's single-tensor CPU path op for op, scalars rounded to float32 as it rounds them:
    ``m += (1 - b1) (g - m)`` and ``v = b2 v + ((1 - b2) g) g`` each with ONE rounding (its vectorised kernels
    fuse them into a multiply-add; here a float64 multiply-add rounded once to float32, the same value but for
    double-rounding ties), then ``p += (-step_size m) / (sqrt(v) / bias_correction2_sqrt + eps)``. The square root
    is ORT's, correctly rounded; PyTorch's vectorised one can be an ulp off, so the two agree to about an ulp.
    """
    import numpy as np
    from onnx import TensorProto

    from .base import ADAM_BETAS, ADAM_EPS

    b1, b2 = ADAM_BETAS
    f32 = lambda name, v: helper.make_tensor(name, TensorProto.FLOAT, [], [float(np.float32(v))])  # noqa: E731
    f64 = lambda name, v: helper.make_tensor(name, TensorProto.DOUBLE, [], [float(v)])  # noqa: E731
    consts = [f64("w1", np.float32(1 - b1)), f32("b2", b2), f32("w2", 1 - b2), f32("eps", ADAM_EPS)]
    to64 = lambda x, y: helper.make_node("Cast", [x], [y], to=TensorProto.DOUBLE)  # noqa: E731
    nodes = [
        helper.make_node("Sub", ["gradients", "exp_avg"], ["d"]),
        to64("d", "d64"), to64("exp_avg", "m64"),
        helper.make_node("Mul", ["d64", "w1"], ["wd64"]),
        helper.make_node("Add", ["wd64", "m64"], ["m_new64"]),
        helper.make_node("Cast", ["m_new64"], ["updated_exp_avg"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["exp_avg_sq", "b2"], ["v_decayed"]),
        helper.make_node("Mul", ["gradients", "w2"], ["wg"]),
        to64("wg", "wg64"), to64("gradients", "g64"), to64("v_decayed", "vd64"),
        helper.make_node("Mul", ["wg64", "g64"], ["wgg64"]),
        helper.make_node("Add", ["wgg64", "vd64"], ["v_new64"]),
        helper.make_node("Cast", ["v_new64"], ["updated_exp_avg_sq"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["updated_exp_avg_sq"], ["root"]),
        helper.make_node("Div", ["root", "bias_correction2_sqrt"], ["scaled"]),
        helper.make_node("Add", ["scaled", "eps"], ["denom"]),
        helper.make_node("Neg", ["step_size"], ["neg_step"]),
        helper.make_node("Mul", ["neg_step", "updated_exp_avg"], ["num"]),
        helper.make_node("Div", ["num", "denom"], ["delta"]),
        helper.make_node("Add", ["params", "delta"], ["updated_params"]),
    ]
    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", "rows", "dim"])  # noqa: E731
    scalar = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [])  # noqa: E731
    graph = helper.make_graph(
        nodes, "torch_adam",
        [tensor(n) for n in ("params", "gradients", "exp_avg", "exp_avg_sq")]
        + [scalar("step_size"), scalar("bias_correction2_sqrt")],
        [tensor(n) for n in ("updated_params", "updated_exp_avg", "updated_exp_avg_sq")], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what ORT 1.19 reads (the exporter's too)
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


def adamw_block():
    """The optimizer block: AdamW with the Adam settings of ``base.py`` (betas, eps 1e-8, no weight decay)."""
    import_onnxruntime()
    from onnxruntime.training import onnxblock

    from .base import ADAM_BETAS, ADAM_EPS

    return onnxblock.optim.AdamW(betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)
