"""Real pictures in: input handling, projection into W / W+, pivotal tuning, losses, tuned-weight deltas.

Sits between the session and the back-ends: it uses the generator (``stylegan``) and, for ONNX Runtime tuning,
``backends/ort_tune.py``; ``DragSession.from_image`` uses it. ``images.py`` needs numpy and Pillow only;
importing this package imports neither torch nor onnxruntime (the names below load on first use)::

    from dragnb.projection import load_image, Projector, PivotalTuner
    proj = dragnb.project(G, "photo.png", latent_space="w+")       # Projection: ws, image, PSNR
"""

from ..lazy import lazy_attributes
from .images import MAX_PIXELS, ImageError, load_image

__all__ = ["MAX_PIXELS", "ImageError", "PivotalTuner", "Projection", "Projector", "ReconstructionLoss",
           "TuningSettings", "load_image", "project", "tune"]

_LAZY = {"PivotalTuner": ".tuning", "TuningSettings": ".tuning", "tune": ".tuning", "Projection": ".projector",
         "Projector": ".projector", "project": ".projector", "ReconstructionLoss": ".losses"}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
