"""What a session drags: a generator given by name, path or object, or an ORT artifact folder; and its seeds.

Only a torch model imports torch: a session on an ORT artifact folder (:class:`ArtifactModel`) maps seeds with
the artifacts' own mapping graph.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

from ..backends.ort_model import ArtifactModel
from ..devices import check_device_spec, resolve_device
from ..stylegan.conventions import z_from_seed

BACKENDS = ("torch", "ort")
ARTIFACT_BACKEND = "ort"  # the only back-end of a session on ORT artifacts


def _is_artifacts(model) -> bool:
    return isinstance(model, ArtifactModel) or (isinstance(model, (str, os.PathLike))
                                                and Path(model).expanduser().is_dir())


def check_model_device(model, device) -> str:
    """The device a torch model will run on (canonical, :func:`dragnb.devices.resolve_device`), checked before the
    model is opened; ORT artifacts take "auto" only (ONNX Runtime picks its own provider) and never import torch.
    ValueError for an unknown or unavailable device."""
    if _is_artifacts(model):
        if check_device_spec(device) != "auto":
            raise ValueError(f"a session on ORT artifacts runs on ONNX Runtime's own provider (ArtifactModel(..., "
                             f"device=)): its device setting must be 'auto', got {device!r}")
        return "auto"
    return resolve_device(device)


def open_model(model, device="auto") -> tuple:
    """(model, reference to save: a bundled name or an absolute path (a checkpoint file or an ORT artifact
    folder); None for an in-memory generator). A torch generator is put on ``device`` (an in-memory one is moved,
    as ``nn.Module.to`` does); ValueError for an unknown or unavailable device, before anything is opened."""
    name = check_model_device(model, device)
    if isinstance(model, ArtifactModel):
        return model, str(model.folder)
    if _is_artifacts(model):
        G = ArtifactModel(model)  # a checkpoint is a file: a directory can only be an artifact folder
        return G, str(G.folder)
    if model is None or isinstance(model, (str, os.PathLike)):
        from ..checkpoints import BUNDLED, DEFAULT_MODEL, load_generator, resolve_model

        model = DEFAULT_MODEL if model is None else model
        G = load_generator(model, device=name)
        return G, (str(model) if str(model) in BUNDLED else str(resolve_model(model).resolve()))
    from ..stylegan.networks import Generator  # any other object: a torch generator, so torch is loaded

    if isinstance(model, Generator):
        return model.to(name), None
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


def check_label(c, c_dim: int) -> np.ndarray:
    """A generator label -> float32 [c_dim]: None (all zeros: the label the official DragGAN code passes to every
    conditional generator), a class index in [0, c_dim), or a one-hot vector of length c_dim (all zeros allowed).
    An unconditional generator (c_dim 0) takes None only. ValueError / TypeError otherwise."""
    c_dim = int(c_dim)
    if c_dim == 0:
        if c is not None:
            raise ValueError("this generator is unconditional (c_dim 0): it takes no class label c")
        return np.zeros(0, np.float32)
    label = np.zeros(c_dim, np.float32)
    if c is None:
        return label
    if isinstance(c, (numbers.Integral, np.integer)) and not isinstance(c, (bool, np.bool_)):
        if not 0 <= int(c) < c_dim:
            raise ValueError(f"class index c must be in [0, {c_dim - 1}], got {c}")
        label[int(c)] = 1
        return label
    if isinstance(c, (str, bytes, bool, np.bool_, numbers.Real)):
        raise TypeError(f"c must be None, a class index or a one-hot vector, got {type(c).__name__}")
    try:
        arr = np.asarray(c, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"c must be None, a class index or a one-hot vector, got {type(c).__name__}") from None
    if arr.shape not in ((c_dim,), (1, c_dim)):
        raise ValueError(f"a one-hot label c must have {c_dim} entries, got shape {list(arr.shape)}")
    arr = arr.reshape(c_dim)
    if not np.all((arr == 0) | (arr == 1)) or arr.sum() > 1:
        raise ValueError("a label vector c must be one-hot (one 1, the rest 0) or all zeros")
    return arr.astype(np.float32)


def seed_ws(G, backend, seed: int, psi: float, c: np.ndarray | None = None) -> np.ndarray:
    """float32 [1, num_ws, w_dim]: the ws of ``z_from_seed(seed)`` (and label ``c`` float32 [c_dim] of a
    conditional generator, :func:`check_label`) at truncation ``psi``.

    ``backend`` maps the seed of an :class:`ArtifactModel` (it holds the artifacts' mapping graph)."""
    z = z_from_seed(seed, G.z_dim)
    label = None if not G.c_dim else np.asarray(c if c is not None else check_label(None, G.c_dim), np.float32)
    if isinstance(G, ArtifactModel):
        return np.asarray(backend.runtime.mapping(z, psi, None if label is None else label[None]), np.float32)
    import contextlib

    import torch

    from ..stylegan import ops

    device = next(G.parameters()).device
    # Official mode truncates as NVIDIA's code does (lerp): the official w0 bit for bit.
    form = ops.nvidia_form() if backend.compat == "official" else contextlib.nullcontext()
    with torch.no_grad(), form:
        c_t = None if label is None else torch.from_numpy(label[None]).to(device)
        ws = G.mapping(torch.from_numpy(z).float().to(device), c_t, truncation_psi=psi)
    return ws.cpu().numpy().astype(np.float32)
