"""The StyleGAN2 and StyleGAN3 generators (PyTorch) and the ORT-differentiable ops they are built from.

The names below are imported on first use, so that ``dragnb.stylegan.conventions`` (numpy only) loads without
torch.
"""

from ..lazy import lazy_attributes

__all__ = ["Generator", "GeneratorConfig", "StyleGAN3Config", "StyleGAN3Generator", "z_from_seed"]

_LAZY = {"Generator": ".networks", "GeneratorConfig": ".networks", "z_from_seed": ".networks",
         "StyleGAN3Config": ".sg3", "StyleGAN3Generator": ".sg3"}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
