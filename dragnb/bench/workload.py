"""The models and the drag that every measurement runs, and the back-ends that run it."""

from __future__ import annotations

import numpy as np

from .config import BUNDLED_NAME, FFHQ512, FFHQ512_CONFIG, SG3T512, SG3T512_CONFIG


def load_model(spec: str, device: str = "cpu"):
    """(generator, description) for ``spec``: "toyfaces" (the bundled model, or a random stand-in with its
    architecture where its weights file is missing), "ffhq512", "sg3t512" (random weights) or a checkpoint path;
    on ``device`` (the weights are made on the CPU first, so a random model is the same on every device)."""
    G, desc = _load_model(spec)
    return G.to(device), desc


def _load_model(spec: str):
    import torch

    from ..checkpoints import BUNDLED, load_generator
    from ..stylegan.networks import Generator, GeneratorConfig

    if spec == BUNDLED_NAME:
        if BUNDLED[BUNDLED_NAME].exists():
            return load_generator(BUNDLED_NAME, device="cpu"), "bundled toyfaces weights"
        from ..toy.train import TrainConfig

        torch.manual_seed(0)
        G = Generator(TrainConfig().generator_config())
        return G.eval().requires_grad_(False), "toyfaces architecture, random weights (weights file missing)"
    if spec == FFHQ512:
        torch.manual_seed(0)
        G = Generator(GeneratorConfig(**FFHQ512_CONFIG))
        return G.eval().requires_grad_(False), "FFHQ-512 architecture (StyleGAN2-ADA), random weights"
    if spec == SG3T512:
        from ..stylegan.sg3 import StyleGAN3Config, StyleGAN3Generator

        torch.manual_seed(0)
        G = StyleGAN3Generator(StyleGAN3Config(**SG3T512_CONFIG))
        return G.eval().requires_grad_(False), "StyleGAN3-T 512 architecture, random weights"
    return load_generator(spec, device="cpu").eval().requires_grad_(False), f"checkpoint {spec}"


def drag_params(G) -> dict:
    """Feature block, layers, r1, r2 and lr of a DragSession on ``G`` (its resolved defaults, ``DragParams``)."""
    from ..drag.params import DragParams

    p = DragParams.for_model(G).resolved(G)
    return {"feature_block": p.feature_block, "num_layers": p.num_layers, "r1": p.r1, "r2": p.r2, "lr": p.lr}


def default_feature_block(G) -> int:
    return int(drag_params(G)["feature_block"])


class Drag:
    """The drag every measurement runs: seed 0 (psi 0.7), W+ with the session's layer count, r1, r2 and lr
    (:func:`drag_params`), two points moving 1/8 of the image, optionally a mask (bottom quarter fixed)."""

    def __init__(self, G, seed: int = 0, mask: bool = False):
        import torch

        p = drag_params(G)
        self.h, self.w = G.img_resolution, G.img_width
        with torch.no_grad():
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
            self.ws0 = G.mapping(z, truncation_psi=0.7).numpy().astype(np.float32)
        self.num_layers, self.r1, self.r2, self.lr = int(p["num_layers"]), float(p["r1"]), int(p["r2"]), p["lr"]
        self.handles = np.array([[self.h // 3, self.w // 3], [2 * self.h // 3, self.w // 2]], np.int64)
        self.targets = (self.handles + [[self.h // 8, 0], [0, self.w // 8]]).astype(np.float32)
        self.fixed = None
        if mask:
            self.fixed = np.zeros((self.h, self.w), np.float32)
            self.fixed[3 * self.h // 4:] = 1

    def begin(self, backend) -> dict:
        """start + F0 + reference features; returns the per-drag step arguments."""
        backend.start(self.ws0, "w+", self.num_layers, self.lr)
        _, f0 = backend.features()
        ref = np.ascontiguousarray(f0[:, self.handles[:, 0], self.handles[:, 1]].T)
        f0_fixed = None if self.fixed is None else (f0 * self.fixed).astype(np.float32)
        return {"ref": ref, "f0_fixed": f0_fixed, "handles": self.handles}

    def step(self, backend, state: dict, render: bool = False):
        # tolerance -1: never converged, so every step does its update
        out = backend.step(state["handles"], self.targets, state["ref"], self.fixed, state["f0_fixed"], 10.0,
                           self.r1, self.r2, -1.0, False, self.lr, render)
        state["handles"] = out.tracked_rc
        return out

    def job(self) -> dict:
        """The drag's points and parameters as JSON, for a child process that has no generator."""
        return {"handles": self.handles.tolist(), "targets": self.targets.tolist(), "num_layers": self.num_layers,
                "r1": self.r1, "r2": self.r2, "lr": self.lr}


def make_backend(name: str, G, feature_block: int, threads: int, artifacts_root, **ort_kw):
    from ..backends import load_backend

    cls = load_backend(name)
    if name == "ort":
        return cls(G, feature_block, artifacts_root=artifacts_root, threads=threads, progress=False, **ort_kw)
    return cls(G, feature_block)
