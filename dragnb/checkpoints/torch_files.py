"""torch's file formats, read with the allowlist unpickler of ``safe_pickle.py`` (nothing from the file runs).

Formats read here:
* torch's legacy (non-zip) serialization of one storage, which NVIDIA pickles embed through
  ``torch.storage._load_from_bytes(blob)``: pickles of the magic number, protocol version and
  sys-info dict; a pickle whose persistent id is ``('storage', torch.<T>Storage, key, location,
  numel, view_metadata)``; the sorted key list; then per key an int64 element count and raw bytes;
* torch's zip serialization (``torch.save`` default): ``<prefix>/data.pkl`` with persistent ids
  ``('storage', torch.<T>Storage, key, location, numel)`` and the raw bytes in ``<prefix>/data/<key>``.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from typing import Any

from .errors import (
    CheckpointError,
    LimitExceededError,
    TruncatedFileError,
    brief,
    describe_exception,
)
from .safe_pickle import (
    CONTAINER_ALLOW,
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    NUMPY_ALLOW,
    STORAGE_TYPES,
    TENSOR_ALLOW,
    AllowlistUnpickler,
    Namespace,
    StorageRef,
    check,
    ints,
    storage_pid,
)

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
        stype, key, numel = storage_pid(pid)
        view = pid[5] if len(pid) == 6 else None
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = StorageRef(stype.dtype, numel, None)
        check(st.dtype == stype.dtype and st.numel == numel, "storage key used twice")
        if view is None:
            return st
        # (view key, element offset, element count) into the root storage `key`
        ok = isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str) and ints(view[1:])
        check(ok and view[1] + view[2] <= numel, "bad storage view")
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
        check(magic == LEGACY_MAGIC and proto == LEGACY_PROTOCOL, "not a torch legacy save")
        check(isinstance(sys_info, dict), "torch legacy save without sys-info")
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
    check(isinstance(keys, list) and all(isinstance(k, str) for k in keys), "bad storage key list")
    check(set(keys) == set(up.storages), "storage key list does not match the pickle")
    pos = f.tell()
    for key in keys:
        st = up.storages[key]
        if pos + 8 > len(blob):
            raise TruncatedFileError("torch data ends early")
        (n,) = struct.unpack_from("<q", blob, pos)
        check(n == st.numel, "storage size does not match its record")
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
    check(isinstance(st, StorageRef), "storage blob does not hold a storage")
    return st



# ----------------------------------------------------------------------------
# torch zip files


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
        stype, key, numel = storage_pid(pid)
        if key not in self.cache:
            raw = self.reader.read(f"{self.prefix}data/{key}", size=numel * stype.dtype.itemsize)
            self.cache[key] = StorageRef(stype.dtype, numel, raw)
        cached = self.cache[key]
        check(cached.dtype == stype.dtype and cached.numel == numel, f"storage {brief(key)} used with two types")
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


