"""The StyleGAN2 generator (PyTorch) and the ORT-differentiable ops it is built from."""

from .networks import Generator, GeneratorConfig, z_from_seed

__all__ = ["Generator", "GeneratorConfig", "z_from_seed"]
