"""ONNX inference export of the mapper and the generator, and ``OnnxGenerator`` to run them in ONNX Runtime.

The public name of :mod:`dragnb.backends.onnx_export` (where the code lives, beside the training export).
"""

from .backends.onnx_export import OPSET, OnnxGenerator, export_mapper, export_synthesis  # noqa: F401
