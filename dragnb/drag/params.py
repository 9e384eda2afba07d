"""The DragGAN parameters of a drag: one dataclass with their defaults, validation and model-derived values.

:class:`DragParams` is the only place the drag defaults are written. ``DragSession`` holds one (as the user
set it, with ``None`` for "derived from the model"), the ORT artifact writer records the model's resolved
values in the manifest, and the torch-free runtime reads them from there.

A parameter left ``None`` takes, in this order: the model's tuned value (``G.drag_defaults``, from the
``drag_defaults`` metadata of a dragnb safetensors file; the bundled toyfaces has some), else the rule for the
model's resolution (:func:`dragnb.drag.geometry.default_radii`, feature block ``min(5, blocks - 2)``, the first
``min(6, num_ws)`` ws).

The model is anything with ``img_resolution``, ``img_width`` (pixels), ``num_blocks``, ``num_ws`` and
``drag_defaults``: a ``dragnb.Generator`` or an ORT ``ArtifactModel``. This module imports numpy only.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from ..stylegan.conventions import NOISE_MODES
from . import geometry

MAX_STEPS = 100_000  # one run(); a bound, so that a typo cannot queue days of work


@dataclass(frozen=True)
class DragParams:
    """DragGAN parameters; ``None`` = derived from the model (see the module docstring). Units: pixels of the image."""

    lr: float = 2e-3                  # Adam learning rate (official DragGAN 1e-3; 2e-3 suits small models)
    lambda_mask: float = 10.0         # weight of the fixed-region term
    r1: float | None = None           # motion-supervision radius, pixels (the disk is distance < r1)
    r2: int | None = None             # tracking window half-size, pixels
    tolerance: float | None = None    # arrival distance, pixels
    max_steps: int = 200              # steps of one run()
    feature_block: int | None = None  # synthesis block of the features (0 = 4x4; official: 5)
    num_layers: int | None = None     # leading ws optimised (official: 6)
    l1_tracking: bool = False         # tracking distance L1 (paper) instead of L2 (official code)
    render_every: int = 1             # in run(), render the full image every k-th step (always the last)
    noise_mode: str = "const"         # generator noise: "const", "random" or "none"

    # ------------------------------------------------------------------ construction

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check_names(cls, names) -> None:
        """ValueError naming every unknown parameter."""
        unknown = sorted(set(names) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(cls.names())}")

    @classmethod
    def for_model(cls, model, **params) -> DragParams:
        """The model's defaults (its tuned ``drag_defaults`` over ours) with ``params`` applied, validated."""
        cls.check_names(params)
        return cls.model_defaults(model).replace(model, **params)

    @classmethod
    def model_defaults(cls, model) -> DragParams:
        """Our defaults updated with the model's tuned ``drag_defaults`` (unknown names ignored with a warning:
        a file from a newer dragnb); not yet validated (``replace`` and ``for_model`` validate)."""
        tuned = dict(model.drag_defaults)
        unknown = sorted(set(tuned) - set(cls.names()))
        if unknown:
            warnings.warn(f"ignoring unknown drag_defaults {unknown} of the model", stacklevel=3)
        return dataclasses.replace(cls(), **{k: v for k, v in tuned.items() if k in cls.names()})

    @classmethod
    def for_artifacts(cls, model, feature_block: int, noise_mode: str) -> dict:
        """The resolved defaults of a drag on ORT artifacts exported from ``model`` for this feature block and
        noise mode: what the artifact manifest records and the torch-free runtime reads (a dict)."""
        return cls.for_model(model, feature_block=feature_block, noise_mode=noise_mode).resolved(model).to_dict()

    def replace(self, model, **changes) -> DragParams:
        """A validated copy with ``changes`` (unknown names -> ValueError, wrong types -> TypeError, values out
        of range for ``model`` -> ValueError); ``self`` is unchanged either way."""
        self.check_names(changes)
        return dataclasses.replace(self, **changes).validated(model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ validation and resolution

    def validated(self, model) -> DragParams:
        """A copy with every value checked and normalised (ints as int, reals as float) for ``model``."""
        size = max(int(model.img_resolution), int(model.img_width))
        # The disk and the window are dense pixel sets whose features are gathered per point ([P, K, C]): bound
        # them by the image (an eighth of its side, at least 8 px) so that memory stays bounded whatever is asked;
        # the official radii are 1/170 and 1/43 of the side.
        r_max = max(size / 8, 8)
        v = {
            "lr": check_real("lr", self.lr, low=0, low_inclusive=False, high=1.0),
            "lambda_mask": check_real("lambda_mask", self.lambda_mask, low=0, high=1e6),
                "r1": check_real("r1", self.r1, low=0, low_inclusive=False, high=r_max, allow_none=True),
            "r2": check_int("r2", self.r2, low=1, high=int(r_max), allow_none=True),
            "tolerance": check_real("tolerance", self.tolerance, low=0, low_inclusive=False, high=2 * size,
                               allow_none=True),
            "max_steps": check_int("max_steps", self.max_steps, low=1, high=MAX_STEPS),
            "feature_block": check_int("feature_block", self.feature_block, low=0, high=model.num_blocks - 1,
                                  allow_none=True),
            "num_layers": check_int("num_layers", self.num_layers, low=1, high=model.num_ws, allow_none=True),
            "l1_tracking": check_bool("l1_tracking", self.l1_tracking),
            "render_every": check_int("render_every", self.render_every, low=1),
            "noise_mode": self.noise_mode,
        }
        if v["noise_mode"] not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {v['noise_mode']!r}")
        return DragParams(**v)

    def resolved(self, model) -> DragParams:
        """A copy with every ``None`` replaced by the model's tuned value, else the rule for its resolution."""
        tuned = model.drag_defaults
        r1, r2, tol = geometry.default_radii(model.img_resolution)
        rules = {"r1": r1, "r2": r2, "tolerance": tol, "feature_block": max(0, min(5, model.num_blocks - 2)),
                 "num_layers": min(6, model.num_ws)}
        fill = {k: (rule if tuned.get(k) is None else tuned[k]) for k, rule in rules.items()
                if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)


# ----------------------------------------------------------------------------
# Scalar checks (raise TypeError / ValueError naming the value, before anything changes)


def check_real(name: str, v, *, low=None, low_inclusive=True, high=None, allow_none=False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_int(name: str, v, *, low=None, high=None, allow_none=False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    v = int(v)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be in [{low}, {high if high is not None else 'inf'}], got {v}")
    return v


def check_bool(name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return bool(v)

