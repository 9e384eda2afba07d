"""``ort_inspect``: summaries of ONNX files (inputs, outputs, op counts, backward nodes) and of a checkpoint state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper

from dragnb.backends.ort_inspect import checkpoint_parameters, format_summary, onnx_summary


def _model(path):
    """x [n, 3] * w [3] -> Relu -> y, plus a node named like a gradient node and a sequence input."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["m"], name="/Mul"),
        helper.make_node("Relu", ["m"], ["y"], name="/Relu"),
        helper.make_node("Identity", ["y"], ["y_grad"], name="/Relu_Grad/Identity_0"),
        helper.make_node("Custom", ["y"], ["z"], name="/Custom", domain="my.domain"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_sequence_value_info("s", TensorProto.INT64, None),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y_grad", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("z", TensorProto.BOOL, [])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_summary(tmp_path):
    s = onnx_summary(_model(tmp_path / "m.onnx"))
    assert s["file"] == "m.onnx" and s["bytes"] == (tmp_path / "m.onnx").stat().st_size
    assert s["inputs"] == [("x", "float32[n,3]"), ("s", "seq(int64[?])"), ("w", "float32[3]")]
    assert s["outputs"] == [("y_grad", "float32[n,3]"), ("z", "bool[]")]
    assert s["nodes"] == 4 and s["gradient_nodes"] == 1
    assert s["op_counts"] == {"Mul": 1, "Relu": 1, "Identity": 1, "my.domain::Custom": 1}
    assert s["initializers"] == 1 and s["initializer_values"] == 3


def test_format_summary_counts_parameter_inputs(tmp_path):
    text = format_summary(onnx_summary(_model(tmp_path / "m.onnx")), top=2, parameters={"w"})
    assert "4 nodes (1 of the backward pass)" in text
    assert "x float32[n,3], s seq(int64[?]) + 1 parameters from the checkpoint" in text
    assert "w float32[3]" not in text
    assert "(2 more types)" in text


def test_checkpoint_parameters():
    p = lambda shape, grad: SimpleNamespace(data=np.zeros(shape, np.float32), requires_grad=grad)  # noqa: E731
    state = SimpleNamespace(parameters=[("latent", p((1, 4, 8), True)), ("a", p((2, 3), False)), ("b", p((5,), False))])
    c = checkpoint_parameters(state)
    assert c == {"trainable": [("latent", (1, 4, 8))], "frozen": [("a", (2, 3)), ("b", (5,))], "frozen_values": 11}
