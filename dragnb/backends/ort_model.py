"""``ArtifactModel``: a generator known only by its exported ORT artifact folder (numpy only, no torch).

``DragSession`` and the ORT back-end need from a model its shapes, its tuned DragGAN defaults and a way to
map seeds; an artifact folder's ``manifest.json`` holds the first two (``ort_export.generate_training_artifacts``
writes its ``config``), and its ``mapping.onnx`` the third (mapped by the back-end's
:class:`~dragnb.backends.ort_runtime.DragRuntime`). So a drag runs from the folder alone::

    s = DragSession("artifacts/ort/<key>", seed=0)   # backend "ort"; or DragSession(ArtifactModel(folder, threads=1))

What the artifacts fix cannot change in such a session: the feature block, the noise mode and the compat mode
(dragnb's or the official code's step, a different graph) are the exported ones (``drag_defaults`` carries them,
so they are the session's defaults, and any other value is a ValueError), and there is no PyTorch back-end to
switch to (no generator weights in torch form).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .ort_files import ArtifactError, load_manifest


class ArtifactModel:
    """The model of an ORT artifact folder, with the attributes ``DragSession`` reads from a ``Generator``.

    Args:
        folder: an artifact folder (``manifest.json`` and the files it lists), e.g. one of ``<root>/ort/<key>/``
            that the ORT back-end's cache (``ort_cache.ensure_artifacts``) made.
        threads: intra-op threads of the ORT sessions of back-ends on this model (None: the ORT back-end's
            default, see ``OrtBackend``).
        device: None (CUDA if the onnxruntime build has it, else CPU), "cpu" or "cuda".
        check_hashes: verify every file's sha256 against the manifest now (back-ends then skip it).

    Attributes (as ``dragnb.Generator``'s): ``z_dim``, ``w_dim``, ``c_dim``, ``num_ws``, ``img_resolution``
    (height, px), ``img_width`` (px), ``num_blocks`` (synthesis blocks, 4 px up to the image height),
    ``drag_defaults`` (the model's tuned DragGAN parameters plus the exported ``feature_block``, ``noise_mode``
    and ``compat``); and ``folder`` (absolute), ``feature_block``, ``noise_mode``, ``compat``, ``manifest``.

    Raises:
        ArtifactError: the folder has no (valid) manifest, or a file is missing or does not match it.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None, device: str | None = None,
                 check_hashes: bool = True):
        folder = Path(folder).expanduser().resolve()
        try:
            manifest = load_manifest(folder, check_hashes)
        except ArtifactError as e:
            raise ArtifactError(f"not a usable dragnb ORT artifact folder: {e}") from None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
        cfg = manifest["config"]
        gen = cfg["generator"]
        self.folder, self.manifest, self.threads, self.device = folder, manifest, threads, device
        self.z_dim, self.w_dim, self.c_dim = int(cfg["z_dim"]), int(cfg["w_dim"]), int(gen["c_dim"])
        self.num_ws = int(cfg["num_ws"])
        _, self.img_resolution, self.img_width = (int(v) for v in cfg["image_shape"])  # [C, H, W]
        # Folders written before the manifest said it hold StyleGAN2 models: blocks 4, 8, ..., img_resolution px.
        self.num_blocks = int(cfg.get("num_blocks", int(math.log2(self.img_resolution)) - 1))
        self.feature_block, self.noise_mode = int(cfg["feature_block"]), str(cfg["noise_mode"])
        self.compat = str(cfg.get("compat", "dragnb"))
        # The exported model's resolved drag defaults (they include the exported feature block and noise mode).
        self.drag_defaults = dict(cfg["drag_params"])

    def check_params(self, feature_block: int, noise_mode: str, compat: str = "dragnb") -> None:
        """ValueError unless (feature_block, noise_mode, compat) are the exported ones (the graphs are built for
        them)."""
        if int(feature_block) != self.feature_block:
            raise ValueError(f"these ORT artifacts compute the features of block {self.feature_block}, not "
                             f"{feature_block}: export artifacts for that block (a session on the generator with "
                             f"backend='ort' does) or leave feature_block unset")
        if noise_mode != self.noise_mode:
            raise ValueError(f"these ORT artifacts were exported with noise_mode {self.noise_mode!r}, not "
                             f"{noise_mode!r}")
        if compat != self.compat:
            raise ValueError(f"these ORT artifacts run the {self.compat!r} step, not the {compat!r} one: export "
                             f"artifacts for compat={compat!r} (a session on the generator with backend='ort' "
                             f"does) or leave compat unset")

    def __repr__(self) -> str:
        return (f"ArtifactModel({str(self.folder)!r}, {self.img_width}x{self.img_resolution}, "
                f"feature_block={self.feature_block}, noise_mode={self.noise_mode!r}, compat={self.compat!r})")
