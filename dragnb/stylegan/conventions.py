"""The generator conventions that need no torch: noise modes and the seed -> z rule.

``dragnb.stylegan.networks`` re-exports both; they live here so that the torch-free path (``DragSession`` on
ORT artifacts) can validate parameters and map seeds without importing torch.
"""

from __future__ import annotations

import numpy as np

NOISE_MODES = ("const", "random", "none")  # per-layer noise: the stored constant, fresh random, or none


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """The common seed convention: ``np.random.RandomState(seed).randn(1, z_dim)`` (float64 [1, z_dim])."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return np.random.RandomState(int(seed)).randn(1, z_dim)
