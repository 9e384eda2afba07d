"""Builders of small hostile or broken checkpoint files for the loader's tests (all made here, none downloaded).

Each builder returns bytes; write them anywhere and hand the path to the loader (through
``hostile_runner.load_in_child`` when the file could exhaust memory or crash a loader without the defences).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib

import torch

from dragnb.checkpoints.native import FORMAT_NAME, FORMAT_VERSION

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_bytes(entries: dict, metadata: dict | None = None, data: bytes | None = None) -> bytes:
    """A safetensors file with exactly this header: ``entries`` {name: {"dtype", "shape", "data_offsets"}}
    (no consistency checks, so overlapping or lying entries can be written) and ``data`` after it."""
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    if data is None:
        end = max((e["data_offsets"][1] for e in entries.values()), default=0)
        data = bytes(end)
    return struct.pack("<Q", len(raw)) + raw + data


def tensors_safetensors(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """A consistent safetensors file of float32 ``tensors`` (written here, not by the safetensors package)."""
    entries, chunks, pos = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        entries[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    return safetensors_bytes(entries, metadata, b"".join(chunks))


def native_meta(config: dict) -> dict:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": json.dumps(config)}


def native_bytes(G, **config_changes) -> bytes:
    """``G`` in dragnb's format, with ``config_changes`` written into its config (weights unchanged)."""
    return tensors_safetensors(G.state_dict(), native_meta({**G.cfg.to_dict(), **config_changes}))


def native_config_only(**config) -> bytes:
    """A dragnb file whose config is ``config`` (over the defaults of a 16 px net) and which holds no tensors."""
    base = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16)
    return safetensors_bytes({}, native_meta({**base, **config}))


def torch_save_bytes(obj, zipfile_format: bool = True) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zipfile_format)
    return buf.getvalue()


def huge_generator_state_dict(top: int, channels: int = 1) -> dict[str, torch.Tensor]:
    """NVIDIA-named tensors of a ``top`` px generator with ``channels`` channels and nothing else: a few KB
    that, believed, describe a generator whose noise buffers alone are top * top floats per layer."""
    sd = {"mapping.fc0.weight": torch.zeros(4, 4), "mapping.fc0.bias": torch.zeros(4), "mapping.w_avg": torch.zeros(4),
          "synthesis.b4.const": torch.zeros(channels, 4, 4)}
    r = 4
    while r <= top:
        sd[f"synthesis.b{r}.conv1.weight"] = torch.zeros(channels, channels, 3, 3)
        r *= 2
    sd[f"synthesis.b{top}.torgb.weight"] = torch.zeros(3, channels, 1, 1)
    return sd


def nvidia_pickle_of(sd: dict[str, torch.Tensor]) -> bytes:
    """An NVIDIA-style network pickle whose ``G_ema`` holds exactly the tensors ``sd`` (dotted names become
    nested module records)."""
    from nvidia_fakes import Rec, dump, module_state

    def build(tree: dict, class_name: str) -> Rec:
        tensors = {k: v for k, v in tree.items() if isinstance(v, torch.Tensor)}
        buffers = {k: v for k, v in tensors.items() if k in ("w_avg", "noise_const")}
        params = {k: v for k, v in tensors.items() if k not in buffers}
        kids = {k: build(v, k) for k, v in tree.items() if isinstance(v, dict)}
        return Rec(class_name, module_state(params, buffers, kids, {}))

    root: dict = {}
    for name, t in sd.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = t
    return dump({"G_ema": build(root, "Generator")}, 4)


def deflate_zeros(n_mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``n_mib`` MiB of zeros (about 1000x smaller) and its length, built in a blink:
    after a full flush the compressor's output for the same input repeats byte for byte."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * n_mib + c.flush(), n_mib << 20


def zip_bytes(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip file from ``(name, stored_bytes, method, uncompressed_size, crc32)`` members, written by hand so
    that sizes, CRCs and methods can lie."""
    out, central = io.BytesIO(), []
    for name, data, method, usize, crc in members:
        fn = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), usize, len(fn), 0))
        out.write(fn + data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                                   usize, len(fn), 0, 0, 0, 0, 0, offset) + fn)
    start = out.tell()
    for c in central:
        out.write(c)
    size = out.tell() - start
    count = len(central)
    if count > 0xFFFF:  # zip64 end records carry the real count
        end64 = out.tell()
        out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, start))
        out.write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
        count = 0xFFFF
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, start, 0))
    return out.getvalue()


def zip_members(data: bytes) -> list[tuple[str, bytes, int, int, int]]:
    """The members of a (torch.save) zip as ``zip_bytes`` takes them, all stored uncompressed."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i), zipfile.ZIP_STORED, i.file_size, zlib.crc32(zf.read(i)))
                for i in zf.infolist()]


def zip_bomb_torch_file(torch_zip: bytes, n_mib: int) -> bytes:
    """``torch_zip`` with its first storage replaced by a deflated member that inflates to ``n_mib`` MiB."""
    members = zip_members(torch_zip)
    for k, (name, *_rest) in enumerate(members):
        if "/data/" in name:
            stream, usize = deflate_zeros(n_mib)
            members[k] = (name, stream, zipfile.ZIP_DEFLATED, usize, 0)
            break
    return zip_bytes(members)


def torch_zip_declaring_storage(n_mib: int) -> bytes:
    """A torch zip whose one tensor's storage record and zip member both declare ``n_mib`` MiB, the member a
    deflate stream of zeros about 1000x smaller: consistent sizes, absurd compression ratio."""
    from collections import OrderedDict

    from nvidia_fakes import Call, FakePickler, fake_global

    n = (n_mib << 20) // 4
    storage_type = fake_global("torch", "FloatStorage")
    rebuild = fake_global("torch._utils", "_rebuild_tensor_v2")

    class Storage:
        pid = ("storage", storage_type, "0", "cpu", n)

    class Pickler(FakePickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, Storage) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"g_ema": {"style.1.weight": Call(rebuild, Storage(), 0, (n,), (1,), False,
                                                                     OrderedDict())}})
    stream, usize = deflate_zeros(n_mib)
    pkl = buf.getvalue()
    return zip_bytes([("archive/data.pkl", pkl, zipfile.ZIP_STORED, len(pkl), zlib.crc32(pkl)),
                      ("archive/byteorder", b"little", zipfile.ZIP_STORED, 6, zlib.crc32(b"little")),
                      ("archive/data/0", stream, zipfile.ZIP_DEFLATED, usize, 0)])


def colliding_keys_pickle(n: int, via_constructor: bool = False) -> bytes:
    """A dict of ``n`` integer keys that all hash to 0 (multiples of 2**61 - 1): inserting them is quadratic.
    ``via_constructor``: built by ``collections.OrderedDict([(key, None), ...])`` instead of SETITEMS."""
    def long1(v):
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw

    keys = b"".join(long1(i * (2**61 - 1)) + b"N" for i in range(1, n + 1))
    if via_constructor:
        pairs = b"".join(long1(i * (2**61 - 1)) + b"N\x86" for i in range(1, n + 1))
        return b"\x80\x02ccollections\nOrderedDict\n](" + pairs + b"e\x85R."
    return b"\x80\x04}(" + keys + b"u."


def many_objects_pickle(n: int) -> bytes:
    """A list of ``n`` empty dicts: 2 bytes of pickle per dict, 64 bytes of memory each once unpickled."""
    return b"\x80\x04]" + b"}a" * n + b"."


def many_containers_header(n_bytes: int) -> bytes:
    """A safetensors file whose JSON header is ``{"x": [{},{},...]}`` of about ``n_bytes``."""
    raw = b'{"x": [' + b"{}," * (n_bytes // 3) + b"{}]}"
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def many_members_zip(n: int) -> bytes:
    """A zip of ``n`` empty members (about 80 bytes each in the file, ten times that once parsed)."""
    return zip_bytes([(f"archive/{i}", b"", zipfile.ZIP_STORED, 0, 0) for i in range(n)])


def shared_tuple_pickle(depth: int, width: int = 2, wrap=None) -> bytes:
    """A pickle of ``depth`` nested tuples, each holding the previous one ``width`` times (memo-shared):
    a few hundred bytes whose repr, str or hash visits width ** depth tuples. ``wrap(t)`` places it."""
    t = ()
    for _ in range(depth):
        t = (t,) * width
    return pickle.dumps(wrap(t) if wrap else t, protocol=4)


def deep_tuple_key_pickle(depth: int) -> bytes:
    """``{((...(),),): None}`` nested ``depth`` deep: hashing the key recurses ``depth`` times in C."""
    return b"\x80\x04}" + b")" + b"\x85" * depth + b"Ns."


def memo_index_pickle(index: int) -> bytes:
    """``None`` stored at memo slot ``index`` (LONG_BINPUT): the C unpickler sizes its memo table to the index."""
    return b"\x80\x04N" + b"r" + struct.pack("<I", index) + b"."


def big_declared_bytes_pickle(n: int) -> bytes:
    """BINBYTES8 declaring ``n`` bytes that are not there."""
    return b"\x80\x04" + b"\x8e" + struct.pack("<Q", n) + b"abc."
