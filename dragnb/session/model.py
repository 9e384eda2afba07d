"""What a session drags: a generator given by name, path or object, or an ORT artifact folder; and its seeds.

Only a torch model imports torch: a session on an ORT artifact folder (:class:`ArtifactModel`) maps seeds with
the artifacts' own mapping graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..backends.ort_model import ArtifactModel
from ..stylegan.conventions import z_from_seed

BACKENDS = ("torch", "ort")
ARTIFACT_BACKEND = "ort"  # the only back-end of a session on ORT artifacts


def open_model(model) -> tuple:
    """(model, reference to save: a bundled name or an absolute path (a checkpoint file or an ORT artifact
    folder); None for an in-memory generator)."""
    if isinstance(model, ArtifactModel):
        return model, str(model.folder)
    if isinstance(model, (str, os.PathLike)) and Path(model).expanduser().is_dir():
        G = ArtifactModel(model)  # a checkpoint is a file: a directory can only be an artifact folder
        return G, str(G.folder)
    if model is None or isinstance(model, (str, os.PathLike)):
        from ..checkpoints import BUNDLED, DEFAULT_MODEL, load_generator, resolve_model

        model = DEFAULT_MODEL if model is None else model
        G = load_generator(model)
        return G, (str(model) if str(model) in BUNDLED else str(resolve_model(model).resolve()))
    from ..stylegan.networks import Generator  # any other object: a torch generator, so torch is loaded

    if isinstance(model, Generator):
        return model, None
    raise TypeError(f"model must be None, a name, a path, an ORT artifact folder, an ArtifactModel or a "
                    f"dragnb.Generator, got {type(model).__name__}")


def default_backend(G) -> str:
    return ARTIFACT_BACKEND if isinstance(G, ArtifactModel) else "torch"


def check_backend(G, backend) -> None:
    """ValueError unless ``backend`` is known and can run ``G`` (ORT artifacts have no PyTorch weights)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
    if isinstance(G, ArtifactModel) and backend != ARTIFACT_BACKEND:
        raise ValueError(f"a session on ORT artifacts ({G.folder}) runs backend {ARTIFACT_BACKEND!r} only, not "
                         f"{backend!r}: open the session on the generator's checkpoint for the PyTorch back-end")


def seed_ws(G, backend, seed: int, psi: float) -> np.ndarray:
    """float32 [1, num_ws, w_dim]: the ws of ``z_from_seed(seed)`` at truncation ``psi``.

    ``backend`` maps the seed of an :class:`ArtifactModel` (it holds the artifacts' mapping graph)."""
    z = z_from_seed(seed, G.z_dim)
    if isinstance(G, ArtifactModel):
        return np.asarray(backend.runtime.mapping(z, psi), np.float32)
    import torch

    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(z).float().to(next(G.parameters()).device), truncation_psi=psi)
    return ws.cpu().numpy().astype(np.float32)
