"""Reading pickles (and torch files) without executing anything from them.

A pickle is a small program: ``GLOBAL`` names a callable, ``REDUCE``/``NEWOBJ``/``BUILD`` call it.
Every callable a pickle can reach goes through ``Unpickler.find_class``, so :class:`AllowlistUnpickler`
maps an explicit allowlist of ``(module, name)`` pairs to harmless stand-ins defined here and raises
:class:`UnsafePickleError` for anything else; ``persistent_load`` raises unless a subclass defines it.
No stand-in imports, evaluates or opens anything; each only records its arguments.

Tensors are kept as :class:`TensorRef` records (storage, offset, size, stride) and only turned into
``torch.Tensor`` by :meth:`TensorRef.materialize`, with bounds checked, so the tensors of parts we do
not use (an NVIDIA pickle's ``D``) are never built.

Before any of these unpicklers runs, ``pickle_scan.scan_pickle`` checks the opcodes for what could exhaust
memory or the C stack inside the unpickler itself (huge memo indices, deep nesting, exponential hashing).
The torch file formats built on it are read in ``torch_files.py``.
"""

from __future__ import annotations

import collections
import math
import pickle
from typing import Any

import numpy as np
import torch

from .errors import (
    CheckpointError,
    UnsafePickleError,
    brief,
)
from .limits import MAX_NDIM, check_state_dict
from .pickle_scan import scan_pickle

# torch storage class name -> dtype; `UntypedStorage` holds raw bytes.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def refuse(module: str, name: str) -> UnsafePickleError:
    where = f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else brief((module, name))
    return UnsafePickleError(
        f"refused to load: the file asks for {where[:200]}, which is not on the allowlist of harmless "
        "names this loader accepts (such a reference can run arbitrary code when loaded the usual way)"
    )


class AllowlistUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from ``self.allow`` ({(module, name): stand-in}).

    ``load()`` first scans the pickle's opcodes (``pickle_scan``), so ``file`` must be seekable."""

    allow: dict[tuple[str, str], Any] = {}

    def __init__(self, file, source="the pickle"):
        super().__init__(file)
        self._file, self._source = file, source

    def load(self):
        scan_pickle(self._file, self._source)
        return super().load()

    def find_class(self, module, name):
        if module == "__builtin__":  # protocol-2 pickles use the Python 2 name
            module = "builtins"
        try:
            return self.allow[(module, name)]
        except (KeyError, TypeError):
            raise refuse(module, name) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused to load: unexpected persistent id {brief(pid)} in the pickle")


def check(cond: bool, what: str):
    if not cond:
        raise CheckpointError(f"malformed checkpoint: {what}")


# ----------------------------------------------------------------------------
# Tensors


class StorageRef:
    """A typed storage read from a file: ``numel`` elements of ``dtype`` in ``data`` (little-endian)."""

    __slots__ = ("dtype", "numel", "data", "_tensor")

    def __init__(self, dtype: torch.dtype, numel: int, data):
        self.dtype, self.numel, self.data, self._tensor = dtype, numel, data, None

    def tensor(self) -> torch.Tensor:
        """The storage as a 1-D tensor [numel] (copied once out of the file's bytes)."""
        if self._tensor is None:
            buf = bytearray(self.data)
            self._tensor = torch.frombuffer(buf, dtype=self.dtype) if buf else torch.empty(0, dtype=self.dtype)
        return self._tensor

    def __setstate__(self, state):
        raise UnsafePickleError("refused to load: unexpected BUILD on a storage")


class TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` stands for: a strided view of a storage, built on demand."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: StorageRef, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    @property
    def shape(self) -> tuple:
        return self.size

    def check_bounds(self) -> None:
        """Raise if the view leaves its storage, or is a broadcast far bigger than it."""
        count = math.prod(self.size)
        # Checkpoint tensors are never broadcast views; a huge zero-stride view would only exhaust memory.
        check(count <= 16 * max(self.storage.numel, 1), f"tensor of shape {list(self.size)} dwarfs its storage")
        if count > 0:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            check(last < self.storage.numel, f"tensor of shape {list(self.size)} reaches past its storage")

    def materialize(self) -> torch.Tensor:
        """A fresh contiguous ``torch.Tensor`` of shape ``size``; raises if the view leaves its storage."""
        self.check_bounds()
        base = self.storage.tensor()
        return base.as_strided(self.size, self.stride, self.offset).clone()

    def __setstate__(self, state):
        raise UnsafePickleError("refused to load: unexpected BUILD on a tensor")


MAX_INDEX = 2**48  # sizes, strides and offsets of a tensor; real ones are below 2**31


def ints(x, n=None) -> bool:
    return isinstance(x, tuple) and (n is None or len(x) == n) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_INDEX for v in x
    )


def _hooks_empty(hooks) -> bool:
    return hooks is None or (isinstance(hooks, dict) and not hooks)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                      metadata=None) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validates and records, builds nothing."""
    check(isinstance(storage, StorageRef), "tensor without a storage")
    check(isinstance(storage_offset, int) and not isinstance(storage_offset, bool)
           and 0 <= storage_offset < MAX_INDEX, "bad tensor offset")
    check(ints(size) and len(size) <= MAX_NDIM and ints(stride, len(size)), "bad tensor size/stride")
    check(_hooks_empty(backward_hooks) and not metadata, "tensor with hooks or metadata")
    ref = TensorRef(storage, storage_offset, size, stride)
    ref.check_bounds()  # the storage's size is known here: refuse a bad view before anything uses it
    return ref


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``: a parameter is just its data here."""
    check(isinstance(data, TensorRef), "parameter without tensor data")
    check(_hooks_empty(backward_hooks), "parameter with hooks")
    return data


class StorageType:
    """Stand-in for a ``torch.<T>Storage`` class named by a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    def __call__(self, *args):
        raise UnsafePickleError(f"refused to load: a pickle calls torch.{self.name}")


STORAGE_TYPES = {("torch", n): StorageType(n) for n in STORAGE_DTYPES}


def storage_pid(pid) -> tuple[StorageType, str, int]:
    """Validate a storage persistent id -> (storage type, key, numel)."""
    ok = (
        isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        and isinstance(pid[1], StorageType) and isinstance(pid[2], str) and len(pid[2]) <= 100
        and isinstance(pid[3], str) and isinstance(pid[4], int) and not isinstance(pid[4], bool)
        and 0 <= pid[4] < MAX_INDEX
    )
    if not ok:
        raise UnsafePickleError(f"refused to load: unexpected persistent id {brief(pid)}")
    return pid[1], pid[2], pid[4]


# ----------------------------------------------------------------------------
# numpy scalars, dtypes and arrays (NVIDIA stores some gains as np.float64)


class NumpyDType:
    """Stand-in for ``numpy.dtype(name, align, copy)`` + BUILD state; numeric kinds only."""

    __slots__ = ("dtype",)

    def __init__(self, name, align=False, copy=False):
        ok = isinstance(name, str) and len(name) <= 8
        try:
            dt = np.dtype(name) if ok else None
        except Exception:  # noqa: BLE001 - numpy's various refusals of a type string
            dt = None
        if dt is None or dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
            raise UnsafePickleError(f"refused to load: numpy dtype {brief(name, chars=20)} is not a plain number type")
        self.dtype = dt

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        ok = isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")
        ok = ok and all(v is None for v in state[2:5])
        check(ok, "unexpected numpy dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _as_bytes(data) -> bytes:
    if isinstance(data, str):  # Python-2-era pickles carry bytes as latin-1 text
        data = data.encode("latin-1")
    check(isinstance(data, (bytes, bytearray)), "numpy data is not bytes")
    return bytes(data)


def numpy_scalar(dtype, data=None):
    """Stand-in for ``numpy.core.multiarray.scalar``: a Python number."""
    check(isinstance(dtype, NumpyDType), "numpy scalar without a numeric dtype")
    raw = _as_bytes(data)
    check(len(raw) == dtype.dtype.itemsize, "numpy scalar of the wrong size")
    return np.frombuffer(raw, dtype=dtype.dtype)[0].item()


class NumpyArrayType:
    """Stand-in for the ``numpy.ndarray`` class (only used as ``_reconstruct``'s first argument)."""

    def __call__(self, *args):
        raise UnsafePickleError("refused to load: a pickle calls numpy.ndarray")


NDARRAY = NumpyArrayType()


class NumpyArray:
    """What ``numpy.core.multiarray._reconstruct`` + BUILD stand for; ``.array`` is a numeric ndarray."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        ok = isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], NumpyDType)
        check(ok and ints(state[0]) and len(state[0]) <= MAX_NDIM, "bad numpy array")
        shape, dt, fortran, raw = state
        raw = _as_bytes(raw)
        check(len(raw) == math.prod(shape) * dt.dtype.itemsize, "numpy array of the wrong size")
        a = np.frombuffer(raw, dtype=dt.dtype)
        self.array = a.reshape(shape, order="F" if fortran else "C").astype(dt.dtype.newbyteorder("="))


def numpy_reconstruct(subtype, shape, dtype_code):
    check(subtype is NDARRAY, "numpy array of an unknown subtype")
    return NumpyArray()


def numpy_frombuffer(buf, dtype, shape, order):
    """Stand-in for ``numpy.core.numeric._frombuffer`` (protocol-5 arrays)."""
    check(isinstance(dtype, NumpyDType) and isinstance(shape, (tuple, list)) and len(shape) <= MAX_NDIM
           and ints(tuple(shape)) and order in ("C", "F"), "bad numpy array")
    a = NumpyArray()
    a.__setstate__((tuple(shape), dtype, order == "F", _as_bytes(buf)))
    return a


def codecs_encode(text, encoding="utf-8"):
    """Stand-in for ``_codecs.encode``: protocol-2 pickles write bytes as ``encode(str, 'latin1')``."""
    check(isinstance(text, str) and encoding in ("latin1", "latin-1"), "unexpected _codecs.encode call")
    return text.encode("latin-1")


NUMPY_ALLOW = {}
for _np_mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    NUMPY_ALLOW[(_np_mod, "scalar")] = numpy_scalar
    NUMPY_ALLOW[(_np_mod, "_reconstruct")] = numpy_reconstruct
for _np_mod in ("numpy.core.numeric", "numpy._core.numeric"):
    NUMPY_ALLOW[(_np_mod, "_frombuffer")] = numpy_frombuffer
NUMPY_ALLOW[("numpy", "dtype")] = NumpyDType
NUMPY_ALLOW[("numpy", "ndarray")] = NDARRAY
NUMPY_ALLOW[("_codecs", "encode")] = codecs_encode

# Plain containers: constructing them runs nothing from the file (their items are already stand-ins).
CONTAINER_ALLOW = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
TENSOR_ALLOW = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
}


# ----------------------------------------------------------------------------
# torch zip files


class Namespace:
    """Stand-in for ``argparse.Namespace`` (rosinality training checkpoints store their ``args``)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def tensor_records(obj, source, what: str = "state dict") -> dict:
    """``obj`` as a flat {name: TensorRef or tensor} dict (nothing materialised); anything else is refused."""
    check_state_dict(obj, source, what)
    for k, v in obj.items():
        if not isinstance(v, (TensorRef, torch.Tensor)):
            raise CheckpointError(f"{source}: {what} entry {brief(k)} is a {type(v).__name__}, not a tensor")
    return dict(obj)
