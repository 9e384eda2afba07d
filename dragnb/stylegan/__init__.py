"""The StyleGAN2 generator (PyTorch) and the ORT-differentiable ops it is built from.

The names below are imported on first use, so that ``dragnb.stylegan.conventions`` (numpy only) loads without
torch.
"""

__all__ = ["Generator", "GeneratorConfig", "z_from_seed"]


def __getattr__(name):
    if name in __all__:
        from . import networks

        return getattr(networks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
