"""The ONNX Runtime DragGAN back-end: on-device training steps from cached artifacts.

Exports once per (weights, feature block, noise mode) through :mod:`.ort_cache` and then drives the
torch-free :class:`~dragnb.backends.ort_runtime.DragRuntime` (the same loop a device runs). Given an
:class:`~dragnb.backends.ort_model.ArtifactModel` instead of a generator it runs that artifact folder as it
is, and then neither this module nor the runtime imports torch. A new seed,
latent space, layer count, point set, mask, r1/r2/lambda or learning rate never re-exports: the latent is
written into the checkpoint state and the Adam state reset. See ``ort_export.py`` for the graph and
``base.py`` for the contract.

Device: the CUDA provider when the installed onnxruntime-training is a CUDA build (and a GPU works),
otherwise the CPU. Threads: see :func:`default_threads`.
"""

from __future__ import annotations

import sys

import numpy as np

from .base import LATENT_SPACES, Backend, StepOutput, check_backend_args, check_state, image_to_uint8
from .ort_files import EXPORT_NOISE_MODES, OPTIMIZERS
from .ort_model import ArtifactModel


def default_threads() -> int | None:
    """Intra-op threads when none are given: ``torch.get_num_threads()`` when torch is already imported (a
    session on a torch generator: both back-ends then use the same count and compare fairly), else None,
    i.e. onnxruntime's default (one per physical core), without importing torch for it."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


class OrtBackend(Backend):
    """DragGAN optimisation of a W / W+ latent of ``G`` as ONNX Runtime training steps.

    Args:
        G: the generator (exported on first use, then cached), or an :class:`ArtifactModel` (its folder is used
            as it is; ``feature_block`` and ``noise_mode`` must then be the exported ones).
        feature_block: synthesis block index (0 = 4x4) of the DragGAN features.
        noise_mode: "const" (default) or "none"; "random" raises ValueError.
        compat: "dragnb", "official" or "blog" (the official code's or the blog sample's step and Adam rule; each
            its own artifact set).
        artifacts_root: cache root (default ``ort_cache.default_root()``); unused with an ArtifactModel.
        threads: intra-op threads (default: the ArtifactModel's ``threads``, else :func:`default_threads`).
        device: None (the ArtifactModel's ``device``, else CUDA if available, else CPU), "cpu" or "cuda".
        progress: tqdm bar while artifacts are generated.
        options: overrides of the tuned session options (``ort_sessions.SESSION_OPTIONS``; for measurements).
    """

    name = "ort"

    def __init__(self, G, feature_block: int, noise_mode: str = "const", artifacts_root=None,
                 threads: int | None = None, device: str | None = None, progress: bool = True,
                 options: dict | None = None, compat: str = "dragnb"):
        from .ort_runtime import DragRuntime

        if not isinstance(G, ArtifactModel):
            from ..stylegan.networks import Generator  # a torch generator: torch is imported already

            if not isinstance(G, Generator):
                raise TypeError(f"G must be a dragnb Generator or an ArtifactModel, got {type(G).__name__}")
        check_backend_args(G, feature_block, noise_mode, EXPORT_NOISE_MODES)
        if compat not in OPTIMIZERS:
            raise ValueError(f"compat must be one of {tuple(OPTIMIZERS)}, got {compat!r}")
        self.G, self.feature_block, self.noise_mode, self.compat = G, int(feature_block), noise_mode, compat
        if isinstance(G, ArtifactModel):
            G.check_params(self.feature_block, noise_mode, compat)
            self.folder = G.folder  # ArtifactModel verified it when it was opened
            threads, device = threads or G.threads, device or G.device
        else:
            from .ort_cache import ensure_artifacts

            self.folder = ensure_artifacts(G, self.feature_block, noise_mode, artifacts_root, progress, compat)
            # ensure_artifacts has just verified every hash; no second pass here.
        self.runtime = DragRuntime(self.folder, threads=threads or default_threads(), device=device,
                                   check_hashes=False, options=options)
        self.device = self.runtime.device

    def start(self, ws0, latent_space, num_layers, lr):
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
        self.runtime.start(np.asarray(ws0, np.float32), latent_space, int(num_layers))

    def ws(self):
        return self.runtime.ws()

    def get_state(self):
        return self.runtime.get_state()

    def set_state(self, state):
        check_state(state, self.G.num_ws, self.G.w_dim)
        self.runtime.set_state(state)

    def features(self):
        img, feat = self.runtime.features()
        return image_to_uint8(img, self.compat), feat

    def step(self, handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance,
             l1_tracking, lr, render_image, return_features=False, reg=0.0, previous_rc=None):
        r = self.runtime.step(handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance,
                              l1_tracking, lr, render_image, return_features, reg, previous_rc)
        return StepOutput(
            loss=r["loss"], motion=r["motion"], mask=r["mask"], tracked_rc=r["tracked_rc"], distance=r["distance"],
            converged=r["converged"], image=image_to_uint8(r["image"], self.compat) if r["image"] is not None else None,
            features=r["features"],
        )
