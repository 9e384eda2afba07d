"""The DragGAN parameters of a drag: one dataclass with their defaults, validation and model-derived values.

:class:`DragParams` is the only place the drag defaults are written. ``DragSession`` holds one (as the user
set it, with ``None`` for "derived from the model"), the ORT artifact writer records the model's resolved
values in the manifest, and the torch-free runtime reads them from there.

Three modes (``compat``): "dragnb" (ours, the default); "official", which reproduces the per-step arithmetic of
the official DragGAN code; "blog", which reproduces the PyTorch loop of the sample published with the blog post
"Exploring DragGAN implementation using ONNX Runtime" (docs/compat.md lists every difference). A parameter left
``None`` takes, in this order:

* "dragnb": the model's tuned value (``G.drag_defaults``, from the ``drag_defaults`` metadata of a dragnb
  safetensors file; the bundled toyfaces has some), else our rule for the model's resolution
  (:func:`dragnb.drag.geometry.default_radii`, feature block ``min(5, blocks - 2)``, the first ``min(6, num_ws)``
  ws, lr 2e-3, lambda_mask 10);
* "official": the official code's value (:func:`dragnb.drag.geometry.official_radii` without floors, feature
  block 5, the first 6 ws, lr 1e-3, lambda_mask 20 as its app passes, reg 0). A model's tuned values are ignored:
  they were tuned for our mode. (An ORT artifact folder exported in official mode records the official values
  as its ``drag_defaults``, with ``compat`` "official": those apply.)
* "blog": the sample's fixed values (r1 3 px, r2 12 px, tolerance 2 px whatever the resolution, feature block 6,
  the first 6 ws, lr 2e-3, L1 tracking, no mask term: lambda_mask 0). A model's tuned values are ignored.

Official mode refuses what the official code cannot compute: an r1 below 1 px (the official radius
``round(3 h / 512)`` is 0 below 86 px; the disk is then empty and the official loss NaN), a model without
feature block 5 unless one is given, a non-square model (the official code takes the width from the height),
and L1 tracking (the official code tracks by L2). Blog mode refuses a model without feature block 6 unless one is
given, a mask weight (the sample's loss has no mask term), and L2 tracking (the sample tracks by L1).

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
COMPAT_MODES = ("dragnb", "official", "blog")
OFFICIAL_FEATURE_BLOCK = 5  # the official app's feature_idx: the 128 px block
BLOG_FEATURE_BLOCK = 6  # the blog sample's StyleGenerator returns block_list[6]: the 256 px block


@dataclass(frozen=True)
class DragParams:
    """DragGAN parameters; ``None`` = derived from the model and the mode (see the module docstring).
    Units: pixels of the image. Defaults in brackets: (dragnb mode; official mode; blog mode)."""

    lr: float | None = None            # Adam learning rate (2e-3; 1e-3; 2e-3)
    lambda_mask: float | None = None   # weight of the fixed-region term (10; 20; 0, no mask term)
    r1: float | None = None            # motion-supervision radius, pixels (disk: distance < r1; blog: <= r1)
    r2: int | None = None              # tracking window half-size, pixels (blog: 12)
    tolerance: float | None = None     # arrival distance, pixels (blog: 2, per coordinate as torch.allclose)
    max_steps: int | None = None       # steps of one run() (200; 200; 100 as the sample)
    feature_block: int | None = None   # synthesis block of the features, 0 = 4x4 (min(5, blocks - 2); 5; 6)
    num_layers: int | None = None      # leading ws optimised (min(6, num_ws))
    l1_tracking: bool | None = None    # tracking distance L1 (paper) instead of L2 (False; False; True)
    render_every: int | None = None    # in run(), render the full image every k-th step, always the last (1)
    noise_mode: str | None = None      # generator noise: "const", "random" or "none" ("const")
    reg: float | None = None           # weight of mean |ws - ws0| (official mode only; 0 as its app)
    compat: str | None = None          # "dragnb" (ours), "official" or "blog" (their arithmetic)

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
        """``params`` as given (the rest ``None``), validated for ``model``; the model's tuned ``drag_defaults``
        are validated too (unknown names ignored with a warning: a file from a newer dragnb)."""
        cls.check_names(params)
        cls.model_defaults(model)
        return cls(**params).validated(model)

    @classmethod
    def model_defaults(cls, model) -> DragParams:
        """The model's tuned ``drag_defaults`` (known names; the others ignored with a warning) as a validated
        DragParams (TypeError / ValueError for a bad value): what ``resolved`` fills in for unset parameters in
        the tuned values' mode."""
        unknown = sorted(set(model.drag_defaults) - set(cls.names()))
        if unknown:
            warnings.warn(f"ignoring unknown drag_defaults {unknown} of the model", stacklevel=3)
        return _tuned(model)

    @classmethod
    def for_artifacts(cls, model, feature_block: int, noise_mode: str, compat: str = "dragnb") -> dict:
        """The resolved defaults of a drag on ORT artifacts exported from ``model`` for this feature block, noise
        mode and compat mode: what the artifact manifest records and the torch-free runtime reads (a dict).

        Not checked for the official mode's limits: where the official r1 rounds to 0 (below 86 px) it is recorded
        as None, and a drag on the artifacts must be given one."""
        p = cls(feature_block=feature_block, noise_mode=noise_mode, compat=compat).validated(model, check=False)
        p = p.resolved(model, check=False)
        return (p if p.r1 >= 1 else dataclasses.replace(p, r1=None)).to_dict()

    def replace(self, model, **changes) -> DragParams:
        """A validated copy with ``changes`` (unknown names -> ValueError, wrong types -> TypeError, values out
        of range for ``model`` or undefined in the mode -> ValueError); ``self`` is unchanged either way."""
        self.check_names(changes)
        return dataclasses.replace(self, **changes).validated(model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ validation and resolution

    def mode(self, model) -> str:
        """The compat mode in force: this one's, else the model's tuned one, else "dragnb"."""
        if self.compat is not None:
            return self.compat
        return model.drag_defaults.get("compat") or "dragnb"

    def validated(self, model, check: bool = True) -> DragParams:
        """A copy with every value checked and normalised (ints as int, reals as float) for ``model``.

        ``check``: also resolve it (:meth:`resolved`), so that values the mode cannot use raise here."""
        size = max(int(model.img_resolution), int(model.img_width))
        if self.compat is not None and self.compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        mode = self.mode(model)
        official = mode == "official"
        # The disk and the window are dense pixel sets whose features are gathered per point ([P, K, C]): bound
        # them by the image (an eighth of its side, at least 8 px) so that memory stays bounded whatever is asked;
        # the official radii are 1/170 and 1/43 of the side.
        r_max = max(size / 8, 8)
        v = {
            "lr": check_real("lr", self.lr, low=0, low_inclusive=False, high=1.0, allow_none=True),
            "lambda_mask": check_real("lambda_mask", self.lambda_mask, low=0, high=1e6, allow_none=True),
            "r1": check_real("r1", self.r1, low=0, low_inclusive=False, high=r_max, allow_none=True),
            # The official window can be the handle's pixel alone (r2 0 below 22 px).
            "r2": check_int("r2", self.r2, low=0 if official else 1, high=int(r_max), allow_none=True),
            "tolerance": check_real("tolerance", self.tolerance, low=0, low_inclusive=False, high=2 * size,
                                    allow_none=True),
            "max_steps": check_int("max_steps", self.max_steps, low=1, high=MAX_STEPS, allow_none=True),
            "feature_block": check_int("feature_block", self.feature_block, low=0, high=model.num_blocks - 1,
                                       allow_none=True),
            "num_layers": check_int("num_layers", self.num_layers, low=1, high=model.num_ws, allow_none=True),
            "l1_tracking": check_bool("l1_tracking", self.l1_tracking, allow_none=True),
            "render_every": check_int("render_every", self.render_every, low=1, allow_none=True),
            "noise_mode": self.noise_mode,
            "reg": check_real("reg", self.reg, low=0, high=1e6, allow_none=True),
            "compat": self.compat,
        }
        if v["noise_mode"] is not None and v["noise_mode"] not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {v['noise_mode']!r}")
        if not official and v["reg"]:
            raise ValueError("reg (the official code's latent regulariser) is an official-mode parameter: "
                             "set compat='official' with it, or leave it 0")
        if mode == "blog" and v["lambda_mask"]:
            raise ValueError("compat='blog' has no mask term (the blog sample's loss leaves its lambda_ unused): "
                             "leave lambda_mask unset or 0, or use another mode for a masked drag")
        out = DragParams(**v)
        if check:
            out.resolved(model)
        return out

    def resolved(self, model, check: bool = True) -> DragParams:
        """A copy with every ``None`` filled in (see the module docstring).

        ``check``: ValueError for what official mode cannot compute (the module docstring lists it)."""
        mode = self.mode(model)
        tuned = {k: v for k, v in _tuned(model).to_dict().items() if v is not None}
        if tuned.get("compat", "dragnb") != mode:
            tuned = {}  # tuned for the other mode
        rules = _rules(model, mode)
        fill = {k: (rule if tuned.get(k) is None else tuned[k]) for k, rule in rules.items()
                if getattr(self, k) is None}
        out = dataclasses.replace(self, **fill)
        if check and mode == "official":
            out._check_official(model)
        if check and mode == "blog":
            out._check_blog(model)
        return out

    def _check_blog(self, model) -> None:
        """ValueError for a resolved parameter set that blog mode cannot compute as the blog sample does."""
        if self.feature_block >= model.num_blocks:
            raise ValueError(f"compat='blog' takes feature block {BLOG_FEATURE_BLOCK} (the 256 px block the blog "
                             f"sample's generator returns), but this model has blocks 0-{model.num_blocks - 1}: give "
                             f"feature_block explicitly")
        if not self.l1_tracking:
            raise ValueError("compat='blog' tracks by L1 distance, as the blog sample: l1_tracking must be True")

    def _check_official(self, model) -> None:
        """ValueError for a resolved parameter set that the official code cannot compute (module docstring)."""
        h, w = int(model.img_resolution), int(model.img_width)
        if h != w:
            raise ValueError(f"compat='official' needs a square model (the official code takes the width from the "
                             f"height); this one is {w}x{h}")
        if self.feature_block >= model.num_blocks:
            raise ValueError(f"compat='official' takes feature block {OFFICIAL_FEATURE_BLOCK} (the official app's "
                             f"feature_idx), but this {h} px model has blocks 0-{model.num_blocks - 1}: give "
                             f"feature_block explicitly")
        if self.r1 < 1:
            raise ValueError(f"compat='official': r1 = {self.r1:g} px leaves the motion disk empty at some points and "
                             f"the official loss undefined (NaN); the official radius round(3 / 512 * {h}) is "
                             f"{geometry.official_radii(h)[0]} px at this resolution: give r1 >= 1")
        if self.l1_tracking:
            raise ValueError("compat='official' tracks by L2 distance, as the official code: l1_tracking must be False")


def _tuned(model) -> DragParams:
    """The model's tuned ``drag_defaults`` (known names) validated and normalised, without a warning."""
    names = DragParams.names()
    return DragParams(**{k: v for k, v in model.drag_defaults.items() if k in names}).validated(model, check=False)


def _rules(model, mode: str) -> dict:
    """Each parameter's value when neither the user nor (in its mode) the model gives one."""
    h = int(model.img_resolution)
    steps, l1 = 200, False
    if mode == "official":
        r1, r2, tol = geometry.official_radii(h)
        fb, lr, lam = OFFICIAL_FEATURE_BLOCK, 1e-3, 20.0
    elif mode == "blog":  # draggan_demo.py: fixed pixel radii and tolerance, 100 iterations, Adam lr 0.002
        r1, r2, tol = 3, 12, 2.0
        fb, lr, lam, steps, l1 = BLOG_FEATURE_BLOCK, 2e-3, 0.0, 100, True
    else:
        r1, r2, tol = geometry.default_radii(h)
        fb, lr, lam = max(0, min(5, model.num_blocks - 2)), 2e-3, 10.0
    return {"lr": lr, "lambda_mask": lam, "r1": r1, "r2": r2, "tolerance": tol, "max_steps": steps,
            "feature_block": fb, "num_layers": min(6, model.num_ws), "l1_tracking": l1, "render_every": 1,
            "noise_mode": "const", "reg": 0.0, "compat": mode}


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


def check_bool(name: str, v, allow_none=False) -> bool | None:
    if v is None and allow_none:
        return None
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return bool(v)

