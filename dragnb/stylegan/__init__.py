"""The StyleGAN2 and StyleGAN3 generators (PyTorch) and the ORT-differentiable ops they are built from.

The names below are imported on first use, so that ``dragnb.stylegan.conventions`` (numpy only) loads without
torch.
"""

__all__ = ["Generator", "GeneratorConfig", "StyleGAN3Config", "StyleGAN3Generator", "z_from_seed"]


def __getattr__(name):
    if name.startswith("StyleGAN3") and name in __all__:
        from . import sg3

        return getattr(sg3, name)
    if name in __all__:
        from . import networks

        return getattr(networks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
