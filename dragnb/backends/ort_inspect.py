"""A look inside ONNX models and ORT training artifacts: sizes, inputs, outputs, op counts, parameters.

For the ORT notebook and for debugging an export; reads files only (onnx + numpy), runs nothing::

    s = onnx_summary("artifacts/.../training_model.onnx")
    print(format_summary(s))                      # inputs/outputs with shapes, node count, top op types
    checkpoint_parameters(CheckpointState.load_checkpoint(".../checkpoint"))

Gradient nodes: ORT's gradient builder names the nodes of the backward pass ``<forward node>_Grad/...``
(see docs), so :func:`onnx_summary` counts them separately from the forward nodes.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx


def _type_text(t: onnx.TypeProto) -> str:
    """``float32[1,10,128]`` / ``int64[points,2]`` / ``seq(float32)``: a value's element type and shape."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type).name
        if not t.tensor_type.HasField("shape"):
            return f"{dtype}[?]"
        dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.tensor_type.shape.dim]
        return f"{dtype}[{','.join(dims)}]"
    if kind == "sequence_type":
        return f"seq({_type_text(t.sequence_type.elem_type)})"
    return kind or "?"


def onnx_summary(path: str | os.PathLike) -> dict:
    """What one ONNX file holds.

    Returns a dict: ``file`` (name), ``bytes``, ``inputs`` / ``outputs`` (lists of (name, type text)),
    ``nodes`` (main-graph node count), ``gradient_nodes`` (nodes named ``..._Grad/...``), ``op_counts``
    (``collections.Counter`` of ``domain::op_type``, domain omitted for the default one), ``initializers``
    (count) and ``initializer_values`` (number of stored values).
    """
    path = Path(path)
    model = onnx.load(os.fspath(path))
    g = model.graph
    ops = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in g.node)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "inputs": [(v.name, _type_text(v.type)) for v in g.input],
        "outputs": [(v.name, _type_text(v.type)) for v in g.output],
        "nodes": len(g.node),
        "gradient_nodes": sum(1 for n in g.node if "_Grad/" in n.name),
        "op_counts": ops,
        "initializers": len(g.initializer),
        "initializer_values": int(sum(np.prod(i.dims, dtype=np.int64) for i in g.initializer)),
    }


def format_summary(s: dict, top: int = 8, parameters=()) -> str:
    """A few readable lines from :func:`onnx_summary` (the ``top`` most frequent op types).

    Inputs named in ``parameters`` (the checkpoint's parameters, which ORT feeds to the training and eval
    graphs as inputs) are counted instead of listed.
    """
    ops = ", ".join(f"{op} {n}" for op, n in s["op_counts"].most_common(top))
    more = len(s["op_counts"]) - min(top, len(s["op_counts"]))
    params = set(parameters)
    listed = [(n, t) for n, t in s["inputs"] if n not in params]
    fed = len(s["inputs"]) - len(listed)
    lines = [
        f"{s['file']}: {s['bytes'] / 1024:.1f} KiB, {s['nodes']} nodes ({s['gradient_nodes']} of the backward pass), "
        f"{s['initializers']} initializers ({s['initializer_values']:,} values)",
        "  inputs : " + ", ".join(f"{n} {t}" for n, t in listed)
        + (f" + {fed} parameters from the checkpoint" if fed else ""),
        "  outputs: " + ", ".join(f"{n} {t}" for n, t in s["outputs"]),
        f"  ops    : {ops}" + (f", ... ({more} more types)" if more > 0 else ""),
    ]
    return "\n".join(lines)


def checkpoint_parameters(state) -> dict:
    """The parameters of an ORT ``CheckpointState`` (``onnxruntime.training.api``).

    Returns ``trainable`` and ``frozen``: lists of (name, shape), and ``frozen_values`` (their value count).
    """
    trainable, frozen = [], []
    for name, p in state.parameters:
        (trainable if p.requires_grad else frozen).append((name, tuple(p.data.shape)))
    return {"trainable": trainable, "frozen": frozen,
            "frozen_values": int(sum(np.prod(s, dtype=np.int64) for _, s in frozen))}
