"""The contract every DragGAN optimisation back-end implements (PyTorch here, ONNX Runtime training next door).

A back-end owns the trainable latent and its Adam state; :class:`~dragnb.session.DragSession` owns
everything else (points, mask, reference features, history) and talks to a back-end only through
:class:`Backend`. This module imports numpy only, so the torch-free ORT runtime can import it.

Coordinates are arrays' (row, col) throughout: the session converts the public (x, y) points once.

One :meth:`Backend.step` is ONE generator forward at the current latent, then, on its features:
point tracking, the motion and mask losses (``dragnb.drag.core.drag_objective``) and, unless every
point has arrived, one Adam update of the latent. Everything the step reports (image, features,
tracked points, losses) belongs to the latent *before* that update. (Blog mode, ``core.blog_objective``:
the losses at the given handles, then tracking on the same features; the tracked points are the next step's. Its
stop test looks at the handles the previous step used, ``previous_rc``, as the sample's loop does.)

Adam (both back-ends, so they agree to float rounding): betas (0.9, 0.999), eps 1e-8, no weight decay, and
one of two rules for the bias correction. In dragnb mode, eps OUTSIDE it, as ONNX Runtime's AdamW kernel
computes it (so that the ORT back-end can run ORT's own optimizer kernel)::

    m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   t += 1
    p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

In official and blog modes (``compat="official"`` / ``"blog"``) ``torch.optim.Adam``'s, which both run, eps
INSIDE it: ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. Where gradients are tiny (as for
a latent) the two differ by about 1 % after one step. The PyTorch back-end writes both out (``torch.optim``
keeps its state where the back-end cannot hand it over); the ORT back-end runs a small graph of elementwise
ops for the second (``ort_optim.torch_adam_model``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LATENT_SPACES = ("w", "w+")

# Keys of Backend.get_state() / set_state(); identical for every back-end so that a session saved with
# one back-end continues with another.
STATE_KEYS = (
    "ws0",          # float32 [1, num_ws, w_dim]: the ws of start(); untrained layers keep these values
    "latent",       # float32 [1, L, w_dim]: the trainable tensor (L = num_layers for "w+", 1 for "w")
    "exp_avg",      # float32 like latent: Adam first moment m
    "exp_avg_sq",   # float32 like latent: Adam second moment v
    "step",         # int64 []: Adam step count t (updates done since start())
    "num_layers",   # int64 []: how many leading ws the latent drives
    "latent_space",  # str []: "w" (one vector broadcast to num_layers ws) or "w+" (one per layer)
)


@dataclass
class StepOutput:
    """What one :meth:`Backend.step` reports (all at the latent before its update)."""

    loss: float                    # motion + lambda_mask * mask
    motion: float                  # motion-supervision term (sum over points not yet within 1 px)
    mask: float                    # mask term before lambda (0.0 without a mask)
    tracked_rc: np.ndarray         # int64 [P, 2]: tracked handle points (row, col), inside the image
    distance: np.ndarray           # float32 [P]: pixels from each tracked handle to its target
    converged: bool                # every distance <= tolerance; then the latent was NOT updated
    image: np.ndarray | None       # uint8 [H, W, 3] when render_image, else None
    features: np.ndarray | None    # float32 [C, H, W] resized features when return_features, else None


class Backend(ABC):
    """One DragGAN optimiser over a generator ``G`` whose features are the output of ``feature_block``.

    Life cycle: ``start(ws0, ...)`` -> ``features()`` (F0 and the reference features, taken by the
    session) -> ``step(...)`` repeatedly; ``get_state``/``set_state`` snapshot and restore the latent
    and the Adam state (undo, save/load). ``start`` may be called again at any time (a fresh drag
    from a new seed, or a reset).

    Args:
        G: the generator (a ``dragnb.Generator``; back-ends that export it do so here or lazily).
        feature_block: synthesis block index (0 = 4x4) whose output are the DragGAN features.
        noise_mode: "const" (default, as DragGAN), "random" or "none"; a back-end may support only "const"
            and must then raise ValueError for the others.
        compat: "dragnb" (ours), "official" (the official DragGAN code's motion disk, Adam rule and latent
            regulariser) or "blog" (the blog sample's loop: its motion term, L1 tracking one step behind, its stop
            test, ``torch.optim.Adam``); ``dragnb.drag.params`` and docs/compat.md.
    """

    name: str = "base"

    @abstractmethod
    def __init__(self, G, feature_block: int, noise_mode: str = "const", compat: str = "dragnb"): ...

    @abstractmethod
    def start(self, ws0: np.ndarray, latent_space: str, num_layers: int, lr: float) -> None:
        """Make the latent trainable from ``ws0`` float32 [1, num_ws, w_dim], with a fresh Adam state.

        ``latent_space`` "w+": ws0[:, :num_layers] are trained, one vector per layer; "w": one vector
        (initialised to ws0[:, 0]) is broadcast to the first ``num_layers`` ws. Later ws stay at ws0.
        ``lr`` is the initial learning rate (each step passes its own).
        """

    @abstractmethod
    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], features float32 [C, H, W] resized to image size) at the current latent."""

    @abstractmethod
    def step(
        self,
        handles_rc: np.ndarray,        # int64 [P, 2]: handles (row, col) tracked so far
        targets_rc: np.ndarray,        # float32 [P, 2]: targets (row, col)
        ref_feats: np.ndarray,         # float32 [P, C]: features of the initial handles in F0
        fixed: np.ndarray | None,      # float32 [H, W]: 1 = keep fixed; None = no mask term
        f0_fixed: np.ndarray | None,   # float32 [C, H, W]: F0 * fixed (None with fixed None)
        lambda_mask: float,            # weight of the mask term
        r1: float,                     # motion-supervision disk radius (pixels, disk is dist < r1)
        r2: int,                       # tracking window half-size (pixels)
        tolerance: float,              # arrival distance (pixels)
        l1_tracking: bool,             # L1 (paper) instead of L2 (official code) nearest neighbour
        lr: float,                     # Adam learning rate for this update
        render_image: bool,            # also render the full image of this forward
        return_features: bool = False,  # also return the resized features (can be large)
        reg: float = 0.0,              # official mode: weight of mean |ws - ws0| (must be 0 in dragnb mode)
        previous_rc: np.ndarray | None = None,  # blog mode: int64 [P, 2] handles of the previous step (None: these)
    ) -> StepOutput:
        """One forward: track, losses, and one Adam update unless converged. See the module docstring."""

    @abstractmethod
    def ws(self) -> np.ndarray:
        """float32 [1, num_ws, w_dim]: the current full ws (the latent applied over ws0)."""

    @abstractmethod
    def get_state(self) -> dict[str, np.ndarray]:
        """A deep copy of the optimisation state, keyed by :data:`STATE_KEYS` (numpy only, no pickle needed)."""

    @abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a :meth:`get_state` dict exactly (the next step is then identical to the one after it)."""


# ----------------------------------------------------------------------------
# Helpers both back-ends use (numpy only)


def image_to_uint8(img: np.ndarray, compat: str = "dragnb") -> np.ndarray:
    """Generator output float [3, H, W] in about [-1, 1] -> uint8 [H, W, 3]: x * 127.5 + 128 in float32, clipped
    to [0, 255] and truncated toward zero, as the official DragGAN code converts (dragnb and official modes);
    x * 127.5 + 127.5 in blog mode, as the blog sample's ``save_image`` converts."""
    img = np.asarray(img, dtype=np.float32)
    offset = 127.5 if compat == "blog" else 128.0
    return np.clip(img * 127.5 + offset, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def check_state(state: dict[str, np.ndarray], num_ws: int, w_dim: int) -> None:
    """Raise ValueError unless ``state`` is a complete, consistent :meth:`Backend.get_state` dict."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"optimizer state is missing {missing}")
    space = str(np.asarray(state["latent_space"]))
    n = int(state["num_layers"])
    if space not in LATENT_SPACES:
        raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {space!r}")
    if not 1 <= n <= num_ws:
        raise ValueError(f"num_layers must be in [1, {num_ws}], got {n}")
    if np.shape(state["ws0"]) != (1, num_ws, w_dim):
        raise ValueError(f"ws0 must have shape [1, {num_ws}, {w_dim}], got {list(np.shape(state['ws0']))}")
    shape = (1, n if space == "w+" else 1, w_dim)
    for k in ("latent", "exp_avg", "exp_avg_sq"):
        if np.shape(state[k]) != shape:
            raise ValueError(f"{k} must have shape {list(shape)}, got {list(np.shape(state[k]))}")
    if int(state["step"]) < 0:
        raise ValueError("step must be >= 0")


def check_backend_args(G, feature_block, noise_mode: str, noise_modes) -> None:
    """ValueError unless ``feature_block`` is a block of ``G`` and ``noise_mode`` one of ``noise_modes``."""
    if not isinstance(feature_block, (int, np.integer)) or not 0 <= feature_block < G.num_blocks:
        raise ValueError(f"feature_block must be an int in [0, {G.num_blocks}), got {feature_block!r}")
    if noise_mode not in noise_modes:
        raise ValueError(f"this back-end supports noise_mode {tuple(noise_modes)}, got {noise_mode!r}")
