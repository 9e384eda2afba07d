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

Formats read here:
* torch's legacy (non-zip) serialization of one storage, which NVIDIA pickles embed through
  ``torch.storage._load_from_bytes(blob)``: pickles of the magic number, protocol version and
  sys-info dict; a pickle whose persistent id is ``('storage', torch.<T>Storage, key, location,
  numel, view_metadata)``; the sorted key list; then per key an int64 element count and raw bytes;
* torch's zip serialization (``torch.save`` default): ``<prefix>/data.pkl`` with persistent ids
  ``('storage', torch.<T>Storage, key, location, numel)`` and the raw bytes in ``<prefix>/data/<key>``.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np
import torch

from .errors import (
    CheckpointError,
    LimitExceededError,
    TruncatedFileError,
    UnsafePickleError,
    brief,
    describe_exception,
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


def _check(cond: bool, what: str):
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
        _check(count <= 16 * max(self.storage.numel, 1), f"tensor of shape {list(self.size)} dwarfs its storage")
        if count > 0:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            _check(last < self.storage.numel, f"tensor of shape {list(self.size)} reaches past its storage")

    def materialize(self) -> torch.Tensor:
        """A fresh contiguous ``torch.Tensor`` of shape ``size``; raises if the view leaves its storage."""
        self.check_bounds()
        base = self.storage.tensor()
        return base.as_strided(self.size, self.stride, self.offset).clone()

    def __setstate__(self, state):
        raise UnsafePickleError("refused to load: unexpected BUILD on a tensor")


MAX_INDEX = 2**48  # sizes, strides and offsets of a tensor; real ones are below 2**31


def _ints(x, n=None) -> bool:
    return isinstance(x, tuple) and (n is None or len(x) == n) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_INDEX for v in x
    )


def _hooks_empty(hooks) -> bool:
    return hooks is None or (isinstance(hooks, dict) and not hooks)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                      metadata=None) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validates and records, builds nothing."""
    _check(isinstance(storage, StorageRef), "tensor without a storage")
    _check(isinstance(storage_offset, int) and not isinstance(storage_offset, bool)
           and 0 <= storage_offset < MAX_INDEX, "bad tensor offset")
    _check(_ints(size) and len(size) <= MAX_NDIM and _ints(stride, len(size)), "bad tensor size/stride")
    _check(_hooks_empty(backward_hooks) and not metadata, "tensor with hooks or metadata")
    ref = TensorRef(storage, storage_offset, size, stride)
    ref.check_bounds()  # the storage's size is known here: refuse a bad view before anything uses it
    return ref


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``: a parameter is just its data here."""
    _check(isinstance(data, TensorRef), "parameter without tensor data")
    _check(_hooks_empty(backward_hooks), "parameter with hooks")
    return data


class StorageType:
    """Stand-in for a ``torch.<T>Storage`` class named by a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    def __call__(self, *args):
        raise UnsafePickleError(f"refused to load: a pickle calls torch.{self.name}")


STORAGE_TYPES = {("torch", n): StorageType(n) for n in STORAGE_DTYPES}


def _storage_pid(pid) -> tuple[StorageType, str, int]:
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
# torch legacy serialization of one storage (inside NVIDIA pickles)


class _LegacyUnpickler(AllowlistUnpickler):
    """Main pickle of a legacy torch file: storages are persistent ids, filled in after the pickle."""

    def __init__(self, f, allow, source):
        super().__init__(f, source)
        self.allow = {**allow, **STORAGE_TYPES}
        self.storages: dict[str, StorageRef] = {}
        self.views: list[tuple[StorageRef, str, int]] = []

    def persistent_load(self, pid):
        stype, key, numel = _storage_pid(pid)
        view = pid[5] if len(pid) == 6 else None
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = StorageRef(stype.dtype, numel, None)
        _check(st.dtype == stype.dtype and st.numel == numel, "storage key used twice")
        if view is None:
            return st
        # (view key, element offset, element count) into the root storage `key`
        ok = isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str) and _ints(view[1:])
        _check(ok and view[1] + view[2] <= numel, "bad storage view")
        v = StorageRef(stype.dtype, view[2], None)
        self.views.append((v, key, view[1]))
        return v


class _PlainUnpickler(AllowlistUnpickler):
    """For pickles that may hold plain data only (numbers, strings, lists, dicts)."""

    allow = {}


LEGACY_HEAD = pickle.dumps(LEGACY_MAGIC, protocol=2)  # how every legacy torch file starts


def load_legacy_torch(blob: bytes, allow: dict, source="torch data") -> Any:
    """Parse a legacy (non-zip) ``torch.save`` file held in ``blob``; globals limited to ``allow``.

    Layout: pickles of the magic number, the protocol version and a sys-info dict; the main pickle
    (storages as persistent ids); the sorted storage-key list; per key an int64 element count and
    the raw little-endian bytes. Tensors come back as :class:`TensorRef`.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise CheckpointError("malformed checkpoint: storage blob is not bytes")
    mv = memoryview(blob)
    f = io.BytesIO(blob)
    try:
        magic = _PlainUnpickler(f, source).load()
        proto = _PlainUnpickler(f, source).load()
        sys_info = _PlainUnpickler(f, source).load()
        _check(magic == LEGACY_MAGIC and proto == LEGACY_PROTOCOL, "not a torch legacy save")
        _check(isinstance(sys_info, dict), "torch legacy save without sys-info")
        if sys_info.get("little_endian", True) is not True:
            raise CheckpointError("big-endian tensors are not supported")
        up = _LegacyUnpickler(f, allow, source)
        root = up.load()
        keys = _PlainUnpickler(f, source).load()
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        raise TruncatedFileError(f"corrupt or truncated torch data ({describe_exception(e)})") from None
    except Exception as e:  # noqa: BLE001 - a stand-in called with wrong arguments, bad text encodings, ...
        raise CheckpointError(f"malformed torch data ({describe_exception(e)})") from None
    _check(isinstance(keys, list) and all(isinstance(k, str) for k in keys), "bad storage key list")
    _check(set(keys) == set(up.storages), "storage key list does not match the pickle")
    pos = f.tell()
    for key in keys:
        st = up.storages[key]
        if pos + 8 > len(blob):
            raise TruncatedFileError("torch data ends early")
        (n,) = struct.unpack_from("<q", blob, pos)
        _check(n == st.numel, "storage size does not match its record")
        nbytes = n * st.dtype.itemsize
        pos += 8
        if pos + nbytes > len(blob):
            raise TruncatedFileError("torch data ends early")
        st.data = mv[pos : pos + nbytes]
        pos += nbytes
    for v, key, off in up.views:
        isz = v.dtype.itemsize
        v.data = up.storages[key].data[off * isz : (off + v.numel) * isz]
    return root


def load_legacy_storage(blob: bytes) -> StorageRef:
    """Stand-in for ``torch.storage._load_from_bytes``: a legacy ``torch.save(storage)`` blob -> StorageRef.

    Runs nothing: the inner pickles go through the allowlist too (only ``torch.<T>Storage`` names).
    """
    try:
        st = load_legacy_torch(blob, {})
    except TruncatedFileError as e:
        raise CheckpointError(f"corrupt tensor storage inside the checkpoint: {e}") from None
    _check(isinstance(st, StorageRef), "storage blob does not hold a storage")
    return st


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
        _check(ok, "unexpected numpy dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _as_bytes(data) -> bytes:
    if isinstance(data, str):  # Python-2-era pickles carry bytes as latin-1 text
        data = data.encode("latin-1")
    _check(isinstance(data, (bytes, bytearray)), "numpy data is not bytes")
    return bytes(data)


def numpy_scalar(dtype, data=None):
    """Stand-in for ``numpy.core.multiarray.scalar``: a Python number."""
    _check(isinstance(dtype, NumpyDType), "numpy scalar without a numeric dtype")
    raw = _as_bytes(data)
    _check(len(raw) == dtype.dtype.itemsize, "numpy scalar of the wrong size")
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
        _check(ok and _ints(state[0]) and len(state[0]) <= MAX_NDIM, "bad numpy array")
        shape, dt, fortran, raw = state
        raw = _as_bytes(raw)
        _check(len(raw) == math.prod(shape) * dt.dtype.itemsize, "numpy array of the wrong size")
        a = np.frombuffer(raw, dtype=dt.dtype)
        self.array = a.reshape(shape, order="F" if fortran else "C").astype(dt.dtype.newbyteorder("="))


def numpy_reconstruct(subtype, shape, dtype_code):
    _check(subtype is NDARRAY, "numpy array of an unknown subtype")
    return NumpyArray()


def numpy_frombuffer(buf, dtype, shape, order):
    """Stand-in for ``numpy.core.numeric._frombuffer`` (protocol-5 arrays)."""
    _check(isinstance(dtype, NumpyDType) and isinstance(shape, (tuple, list)) and len(shape) <= MAX_NDIM
           and _ints(tuple(shape)) and order in ("C", "F"), "bad numpy array")
    a = NumpyArray()
    a.__setstate__((tuple(shape), dtype, order == "F", _as_bytes(buf)))
    return a


def codecs_encode(text, encoding="utf-8"):
    """Stand-in for ``_codecs.encode``: protocol-2 pickles write bytes as ``encode(str, 'latin1')``."""
    _check(isinstance(text, str) and encoding in ("latin1", "latin-1"), "unexpected _codecs.encode call")
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


# Bounds of what a torch zip may make us inflate (torch.save stores members uncompressed, so genuine files
# have ratio 1 and inflate to their own size).
MAX_ZIP_MEMBERS = 100_000
MAX_PICKLE_BYTES = 64 << 20  # data.pkl; a rosinality training checkpoint's is about 100 KB
MAX_ZIP_RATIO = 50           # uncompressed / compressed size of any member above 1 MiB
ZIP_INFLATION_SLACK = 64 << 20  # all members read together: at most 4x the file size plus this


class _ZipReader:
    """Reads members of a zip whose declared sizes and compression ratios were checked first, within a
    total budget, and never more bytes than a member declares."""

    def __init__(self, zf: zipfile.ZipFile, path, file_size: int):
        self.zf, self.path = zf, path
        self.budget = 4 * file_size + ZIP_INFLATION_SLACK

    def read(self, name: str, size: int | None = None, limit: int | None = None) -> bytes:
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: malformed torch file: missing {brief(name)}") from None
        usize = info.file_size
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
            raise CheckpointError(f"{self.path}: {brief(name)} is encrypted or uses an unsupported compression")
        if size is not None and usize != size:
            raise CheckpointError(f"{self.path}: {brief(name)} holds {usize} bytes, its record says {size}")
        if limit is not None and usize > limit:
            raise LimitExceededError(f"{self.path}: {brief(name)} would inflate to {usize} bytes (at most {limit})")
        if usize > (1 << 20) and usize > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise LimitExceededError(f"{self.path}: {brief(name)} would inflate {info.compress_size} bytes to {usize}; "
                                     "refused (a decompression bomb?)")
        if usize > self.budget:
            raise LimitExceededError(f"{self.path}: its members would inflate to more than 4x the file's size")
        self.budget -= usize
        with self.zf.open(info) as f:
            data = f.read(usize + 1)
        if len(data) != usize:
            raise TruncatedFileError(f"{self.path}: {brief(name)} is shorter than declared (truncated zip?)")
        return data


class _ZipUnpickler(AllowlistUnpickler):
    allow = {**CONTAINER_ALLOW, **TENSOR_ALLOW, **NUMPY_ALLOW, **STORAGE_TYPES,
             ("argparse", "Namespace"): Namespace}

    def __init__(self, f, reader: _ZipReader, prefix: str):
        super().__init__(f, reader.path)
        self.reader, self.prefix, self.cache = reader, prefix, {}

    def persistent_load(self, pid):
        stype, key, numel = _storage_pid(pid)
        if key not in self.cache:
            raw = self.reader.read(f"{self.prefix}data/{key}", size=numel * stype.dtype.itemsize)
            self.cache[key] = StorageRef(stype.dtype, numel, raw)
        cached = self.cache[key]
        _check(cached.dtype == stype.dtype and cached.numel == numel, f"storage {brief(key)} used with two types")
        return cached


def _declared_zip_members(path) -> int | None:
    """The member count the zip's end record declares, read before ``zipfile`` builds an object per member
    (about ten times the central directory's size in memory); None when the record cannot be found."""
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # the stdlib's own reader of the end records (zip64 included)
    except Exception:  # noqa: BLE001 - a damaged end record: zipfile.ZipFile reports it below
        return None
    return None if not end else end[zipfile._ECD_ENTRIES_TOTAL]


def load_torch_zip(path) -> Any:
    """Read a ``torch.save`` zip file safely; tensors come back as :class:`TensorRef`.

    Members are read only after their declared size and compression ratio are checked (``_ZipReader``)."""
    declared = _declared_zip_members(path)
    if declared is not None and declared > MAX_ZIP_MEMBERS:
        raise LimitExceededError(f"{path}: a zip of {declared} members (at most {MAX_ZIP_MEMBERS} accepted)")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise TruncatedFileError(f"{path}: truncated or corrupt zip file ({describe_exception(e)})") from None
    except (OSError, EOFError):
        raise
    except Exception as e:  # noqa: BLE001 - zipfile reports a damaged directory in many ways
        raise CheckpointError(f"{path}: corrupt zip file ({describe_exception(e)})") from None
    with zf:
        names = zf.namelist()
        if len(names) > MAX_ZIP_MEMBERS:
            raise LimitExceededError(f"{path}: a zip of {len(names)} members (at most {MAX_ZIP_MEMBERS} accepted)")
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: a zip file, but not one written by torch.save")
        prefix = pkl[0][: -len("data.pkl")]
        reader = _ZipReader(zf, path, os.path.getsize(path))
        try:
            if prefix + "byteorder" in names and reader.read(prefix + "byteorder", limit=16) != b"little":
                raise CheckpointError(f"{path}: big-endian tensors are not supported")
            data = reader.read(pkl[0], limit=MAX_PICKLE_BYTES)
            return _ZipUnpickler(io.BytesIO(data), reader, prefix).load()
        except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise TruncatedFileError(f"{path}: truncated or corrupt torch file ({describe_exception(e)})") from None
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed pickle calling a stand-in with wrong arguments, etc.
            raise CheckpointError(f"{path}: malformed torch file ({describe_exception(e)})") from None


def tensor_records(obj, source, what: str = "state dict") -> dict:
    """``obj`` as a flat {name: TensorRef or tensor} dict (nothing materialised); anything else is refused."""
    check_state_dict(obj, source, what)
    for k, v in obj.items():
        if not isinstance(v, (TensorRef, torch.Tensor)):
            raise CheckpointError(f"{source}: {what} entry {brief(k)} is a {type(v).__name__}, not a tensor")
    return dict(obj)
