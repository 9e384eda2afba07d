"""dragnb: a JupyterLab workbench for StyleGAN2 / StyleGAN3 and DragGAN, with PyTorch and ONNX Runtime back-ends.

Public API::

    G = dragnb.load_generator("toyfaces")          # or a path to a .safetensors / NVIDIA .pkl / rosinality .pt
    ws = G.mapping(z, truncation_psi=0.7)          # [N, num_ws, w_dim]
    img = G.synthesis(ws, noise_mode="const")      # [N, 3, H, W] in about [-1, 1]
    s = dragnb.DragSession(seed=0); s.add_point(handle=(x, y), target=(x, y)); s.run()
    proj = dragnb.project(G, "photo.png")          # a picture's latent (W+), see dragnb.projection
    dragnb.Workbench()                              # the ipycanvas widget
"""

from .lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DragSession", "Generator", "GeneratorConfig", "StyleGAN3Config", "StyleGAN3Generator",
    "Workbench", "load_generator", "save_generator", "z_from_seed", "__version__", "project",
    "load_image",
]


_LAZY = {
    # name -> module; imported on first use so that `import dragnb.backends.ort_runtime` stays torch-free
    # and `import dragnb` does not load ipywidgets or onnxruntime.
    "CheckpointError": ".checkpoints",
    "load_generator": ".checkpoints",
    "save_generator": ".checkpoints",
    "Generator": ".stylegan",
    "GeneratorConfig": ".stylegan",
    "StyleGAN3Config": ".stylegan",
    "StyleGAN3Generator": ".stylegan",
    "z_from_seed": ".stylegan",
    "DragSession": ".session",
    "project": ".projection",
    "load_image": ".projection",
    "Workbench": ".widgets.workbench",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
