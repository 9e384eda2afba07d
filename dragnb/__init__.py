"""dragnb: a JupyterLab workbench for StyleGAN2 and DragGAN, with PyTorch and ONNX Runtime back-ends.

Public API::

    G = dragnb.load_generator("toyfaces")          # or a path to a .safetensors / NVIDIA .pkl / rosinality .pt
    ws = G.mapping(z, truncation_psi=0.7)          # [N, num_ws, w_dim]
    img = G.synthesis(ws, noise_mode="const")      # [N, 3, H, W] in about [-1, 1]
    s = dragnb.DragSession(seed=0); s.add_point(handle=(x, y), target=(x, y)); s.run()
    dragnb.Workbench()                              # the ipycanvas widget
"""

from .checkpoints import CheckpointError, load_generator, save_generator
from .stylegan import Generator, GeneratorConfig, z_from_seed

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DragSession", "Generator", "GeneratorConfig", "Workbench", "load_generator",
    "save_generator", "z_from_seed", "__version__",
]


def __getattr__(name):
    # Lazy imports keep `import dragnb` light (no ipywidgets / onnxruntime unless used).
    if name == "DragSession":
        from .drag.session import DragSession

        return DragSession
    if name == "Workbench":
        from .widgets.workbench import Workbench

        return Workbench
    raise AttributeError(f"module 'dragnb' has no attribute {name!r}")
