"""What a bench run measures: the model names, the goals and :class:`BenchConfig`, one model's options."""

from __future__ import annotations

import os
from dataclasses import dataclass

BUNDLED_NAME = "toyfaces"
FFHQ512 = "ffhq512"
# The FFHQ-512 generator of StyleGAN2-ADA (config "paper512"/"stylegan2"), random weights: timing and memory
# depend on the architecture only.
FFHQ512_CONFIG = dict(z_dim=512, w_dim=512, img_resolution=512, channel_base=32768, channel_max=512,
                      mapping_layers=8, conv_clamp=256)
# NVIDIA's StyleGAN3-T at 512 px (AFHQv2-512: cbase 32768, cmax 512, 2 mapping layers), random weights.
SG3T512 = "sg3t512"
SG3T512_CONFIG = dict(z_dim=512, w_dim=512, img_resolution=512, channel_base=32768, channel_max=512)
SOAK_MAX_STEP_S = 1.0  # the soak is skipped for models whose step takes longer (FFHQ-512: an hour per back-end)
BACKENDS = ("torch", "ort")
GOALS = {  # name -> (ratio key, upper limit, models it applies to or None = every model)
    "ort step <= 0.8 x torch step": ("ort_step_over_torch_step", 0.8, None),
    "torch step <= 1.5 x torch forward": ("torch_step_over_torch_forward", 1.5, (FFHQ512, SG3T512)),
    "ort step <= 1.5 x ort forward": ("ort_step_over_ort_forward", 1.5, (FFHQ512, SG3T512)),
    # The ORT drag through the public session API on the artifact folder (torch never imported); the in-process
    # ratio with torch loaded (ort_rss_over_torch_rss) is reported beside it.
    "peak RSS ort <= torch": ("ort_session_artifacts_rss_over_torch_rss", 1.0, None),
    "cached start <= 10% of first drag": ("cached_start_over_first_drag", 0.10, None),
    "soak RSS growth <= 5% (torch)": ("soak_torch_rss_growth", 0.05, None),
    "soak RSS growth <= 5% (ort)": ("soak_ort_rss_growth", 0.05, None),
    "soak open-file growth = 0 (torch)": ("soak_torch_fd_growth", 0, None),
    "soak open-file growth = 0 (ort)": ("soak_ort_fd_growth", 0, None),
}


def check_at_least(name: str, value: int | None, least: int = 1) -> None:
    """ValueError "``name`` must be >= ``least``" unless ``value`` is None or at least ``least``."""
    if value is not None and value < least:
        raise ValueError(f"{name} must be >= {least}")


@dataclass(frozen=True)
class BenchConfig:
    """The options of one model's measurement (:func:`dragnb.bench.bench`).

    Attributes:
        feature_block: None = as DragSession (the model's drag defaults, else min(5, blocks - 2)).
        steps, warmup: timed steps (and untimed warm-up steps) per back-end, interleaved.
        threads: intra-op threads of both back-ends (``torch.set_num_threads`` and the ORT sessions).
        backends: the back-ends measured, of "torch" and "ort".
        seed: the drag's image seed.
        artifacts_root: ORT artifact cache; None = a temporary folder (so "first drag" really exports).
        model: names the generator for the child processes ("toyfaces", "ffhq512" or a path); memory and soak need
            it, since a fresh process must rebuild the same generator.
        memory: peak RSS of the drag in fresh processes; soak: steps of the soak per back-end (0 = none).
        forward: time the full inference forward (exports the ORT inference graph once).
        flops: count FLOPs and measure the convolution peak.
        latency: first-drag (cold) vs cached start; mask_step: also time a step with a mask.
    """

    feature_block: int | None = None
    steps: int = 20
    warmup: int = 3
    threads: int = 1
    backends: tuple[str, ...] = BACKENDS
    seed: int = 0
    artifacts_root: str | os.PathLike | None = None
    model: str | None = None
    memory: bool = False
    soak: int = 0
    forward: bool = True
    flops: bool = False
    latency: bool = True
    mask_step: bool = True

    def __post_init__(self):
        object.__setattr__(self, "backends", tuple(self.backends))
        check_at_least("steps", self.steps)
        check_at_least("warmup", self.warmup, 0)
        check_at_least("threads", self.threads)
        check_at_least("soak", self.soak, 0)
        unknown = set(self.backends) - set(BACKENDS)
        if unknown:
            raise ValueError(f"unknown back-end(s) {sorted(unknown)}: expected some of {BACKENDS}")
