"""DragGAN optimisation back-ends: the shared contract (base.py), PyTorch (torch_backend.py), ONNX Runtime (ort_*.py).

Importing this package imports neither torch nor onnxruntime; back-ends are loaded with ``load_backend``.
"""

from .base import Backend, StepOutput, load_backend

__all__ = ["Backend", "StepOutput", "load_backend"]
