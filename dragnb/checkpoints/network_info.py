"""What the NVIDIA-pickle readers (``nvidia.py`` for PyTorch-era pickles, ``nvidia_tf.py`` for TF-era ones)
hand back: a generator's tensors under our names, its inferred config and where it came from.

It lives in its own module so that both readers import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..stylegan.networks import GeneratorConfig
from ..stylegan.sg3 import StyleGAN3Config


@dataclass
class NvidiaNetwork:
    """G_ema read from a pickle: tensors under our names, the inferred config, the NVIDIA class name."""

    state_dict: dict[str, torch.Tensor]
    config: GeneratorConfig | StyleGAN3Config
    class_name: str
