"""ONNX inference export of the mapping and synthesis networks (the "mapper" and "generator" of the blog).

``export_mapper(G, path)``: z [N, z_dim], truncation psi (and the label c [N, c_dim] of a conditional model)
-> ws [N, num_ws, w_dim].
``export_synthesis(G, path)``: ws [N, num_ws, w_dim] -> image [N, C, H, W] (noise mode "const").
Both use the TorchScript exporter (``dynamo=False``) at opset 17 so that onnxruntime 1.19 loads them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..stylegan.networks import Generator

OPSET = 17


class _Mapper(nn.Module):
    def __init__(self, G: Generator):
        super().__init__()
        self.mapping = G.mapping

    def forward(self, z, psi, c=None):
        # Truncation written with a tensor psi so one export serves every psi.
        ws = self.mapping(z, c, truncation_psi=1.0)
        return self.mapping.w_avg + psi * (ws - self.mapping.w_avg)


class _Synthesis(nn.Module):
    def __init__(self, G: Generator, noise_mode: str):
        super().__init__()
        self.synthesis, self.noise_mode = G.synthesis, noise_mode

    def forward(self, ws):
        return self.synthesis(ws, noise_mode=self.noise_mode)


def _export(module, args, path, input_names, output_names, dynamic_axes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but still the one ORT 1.19 fits
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
        )
    return path


def export_mapper(G: Generator, path: str | os.PathLike) -> Path:
    """Export (z, psi) -> ws; a conditional model's mapper takes its label as a third input ``c`` [N, c_dim]."""
    args, names, axes = (torch.zeros(1, G.z_dim), torch.tensor(1.0)), ["z", "psi"], {"z": {0: "n"}, "ws": {0: "n"}}
    if G.c_dim:
        args, names, axes = args + (torch.zeros(1, G.c_dim),), names + ["c"], {**axes, "c": {0: "n"}}
    with torch.no_grad():
        return _export(_Mapper(G).eval(), args, path, names, ["ws"], axes)


def export_synthesis(G: Generator, path: str | os.PathLike, noise_mode: str = "const") -> Path:
    """Export ws -> image [N, C, H, W] for the given noise mode ("const" or "none")."""
    if noise_mode not in ("const", "none"):
        raise ValueError("only deterministic noise modes ('const', 'none') can be exported")
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    with torch.no_grad():
        return _export(
            _Synthesis(G, noise_mode).eval(), (ws,), path, ["ws"], ["image"], {"ws": {0: "n"}, "image": {0: "n"}}
        )


class OnnxGenerator:
    """Runs exported mapper + synthesis models in onnxruntime (CPU): ``generate(seed, psi) -> uint8 [H, W, 3]``."""

    def __init__(self, mapper_path, synthesis_path, threads: int | None = None):
        from .ort_sessions import import_onnxruntime

        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.mapper = ort.InferenceSession(str(mapper_path), opts, providers=["CPUExecutionProvider"])
        self.synthesis = ort.InferenceSession(str(synthesis_path), opts, providers=["CPUExecutionProvider"])
        self.z_dim = self.mapper.get_inputs()[0].shape[1]
        label = [i for i in self.mapper.get_inputs() if i.name == "c"]
        self.c_dim = label[0].shape[1] if label else 0

    def mapping(self, z: np.ndarray, psi: float = 1.0, c: np.ndarray | None = None) -> np.ndarray:
        """z [N, z_dim] -> ws; ``c`` [N, c_dim]: a conditional model's labels (None: zeros)."""
        feeds = {"z": z.astype(np.float32), "psi": np.array(psi, np.float32)}
        if self.c_dim:
            feeds["c"] = np.zeros((len(z), self.c_dim), np.float32) if c is None else np.asarray(c, np.float32)
        return self.mapper.run(None, feeds)[0]

    def render(self, ws: np.ndarray) -> np.ndarray:
        """ws [N, num_ws, w_dim] -> float image [N, C, H, W]."""
        return self.synthesis.run(None, {"ws": ws.astype(np.float32)})[0]

    def generate(self, seed: int, psi: float = 0.7) -> np.ndarray:
        z = np.random.RandomState(seed).randn(1, self.z_dim)
        return to_uint8(self.render(self.mapping(z, psi)))[0]


def to_uint8(img) -> np.ndarray:
    """[N, C, H, W] float in [-1, 1] (tensor or array) -> uint8 [N, H, W, C]."""
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.clip((np.asarray(img) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return img.transpose(0, 2, 3, 1)
