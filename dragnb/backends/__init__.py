"""DragGAN optimisation back-ends: the shared contract (base.py), PyTorch (torch_backend.py), ONNX Runtime (ort_*.py).

Importing this package imports neither torch nor onnxruntime; back-ends are loaded with :func:`load_backend`.
"""

from .base import Backend, StepOutput

__all__ = ["Backend", "StepOutput", "load_backend"]


def load_backend(name: str):
    """The Backend class called ``name`` ("torch" or "ort"), imported lazily."""
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend
    if name == "ort":
        try:
            from .ort_backend import OrtBackend
        except ImportError as e:  # not installed, or onnxruntime-training missing
            raise ImportError(f"backend 'ort' is not available ({e}); use backend='torch'") from e
        return OrtBackend
    raise ValueError(f"unknown backend {name!r}: choose 'torch' or 'ort'")
