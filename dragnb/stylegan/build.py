"""One way from a saved config to a generator, whichever the architecture (StyleGAN2 or StyleGAN3)."""

from __future__ import annotations

from .networks import Generator, GeneratorConfig
from .sg3 import ARCHITECTURE as STYLEGAN3
from .sg3 import StyleGAN3Config, StyleGAN3Generator


def config_from_dict(d: dict) -> GeneratorConfig | StyleGAN3Config:
    """The config a ``cfg.to_dict()`` came from: its ``architecture`` field tells StyleGAN3 from StyleGAN2."""
    if not isinstance(d, dict):
        raise TypeError(f"a generator config is a dict, got {type(d).__name__}")
    if d.get("architecture") == STYLEGAN3:
        return StyleGAN3Config.from_dict(d)
    return GeneratorConfig.from_dict(d)


def build_generator(cfg: GeneratorConfig | StyleGAN3Config) -> Generator:
    """A freshly initialised generator of ``cfg`` (a StyleGAN3 one is a ``Generator`` subclass)."""
    if isinstance(cfg, StyleGAN3Config):
        return StyleGAN3Generator(cfg)
    return Generator(cfg)
