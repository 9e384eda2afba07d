"""Fuzzing the checkpoint loaders: byte- and structure-mutated variants of every supported format must each
end in a generator or a ``CheckpointError`` naming the file, within a memory cap and a time cap.

Formats: dragnb's safetensors, a bare NVIDIA-named safetensors, NVIDIA network pickles (protocols 2 and 4),
a TF-era pickle, rosinality files (zip and legacy torch serialization) and a plain state-dict zip, all built
here from a tiny random generator. Mutations are deterministic (fixed seeds): random bit flips, overwrites
with large or extreme integers, truncations, deletions, duplications and insertions of byte ranges; and
structural ones that keep the file well-formed: hostile values (NaN, huge or negative numbers, wrong types,
shared nested tuples, deep lists, tensors of the wrong shape or dtype) placed anywhere in the pickled object
tree, edited safetensors headers and configs, and zip members with lying sizes or methods.

All cases run in one child process (``hostile_runner``): address space capped at its size after importing
torch + 2 GiB, 10 s per case, the peak RSS of each case recorded.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import pickle
import pickletools
import random
import re
import struct
import time
import zipfile

import numpy as np
import pytest
import torch
from hostile_files import (
    native_bytes,
    safetensors_bytes,
    tensors_safetensors,
    torch_save_bytes,
    zip_bytes,
    zip_members,
)
from hostile_runner import load_in_child, problems
from nvidia_fakes import Rec, TFNetwork, dump, module_state, network_dict, random_generator, tf_pickle_tuple
from test_checkpoints_rosinality import to_rosinality

from dragnb.checkpoints.safe_pickle import STORAGE_DTYPES

torch.set_num_threads(1)

SEED = 17
BYTE_MUTATIONS = 24    # per format
STRUCT_MUTATIONS = 16  # per format
TOTAL_SECONDS = 60


def _generator():
    return random_generator(seed=3, architecture="resnet", conv_clamp=256.0, mapping_layers=3)


# ----------------------------------------------------------------------------
# Byte-level mutations


def _big_int(rng: random.Random) -> bytes:
    value = rng.choice([2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, 2**40, 2**28, 0, 1, 255])
    return struct.pack("<Q", value)[: rng.choice([1, 2, 4, 8])]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(7)
    pos = rng.randrange(len(b))
    if kind == 0:  # flip a few bits
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # an extreme integer somewhere (often a length field in the first bytes)
        if rng.random() < 0.5:
            pos = rng.randrange(min(len(b), 256))
        v = _big_int(rng)
        b[pos : pos + len(v)] = v
    elif kind == 2:  # truncate
        del b[pos:]
    elif kind == 3:  # delete a range
        del b[pos : pos + rng.randint(1, 64)]
    elif kind == 4:  # duplicate a range
        n = rng.randint(1, 64)
        b[pos:pos] = b[pos : pos + n]
    elif kind == 5:  # insert random bytes
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:  # overwrite a range with 0xff
        b[pos : pos + rng.randint(1, 32)] = b"\xff" * len(b[pos : pos + 32])
    return bytes(b)


# ----------------------------------------------------------------------------
# Structure-level mutations


def _shared_tuple(depth, width):
    t = ()
    for _ in range(depth):
        t = (t,) * width
    return t


def _deep_list(depth):
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


def hostile_value(rng: random.Random, for_torch_save: bool = False):
    pool = [
        float("nan"), float("inf"), -float("inf"), -1, 0, 2**70, 1e30, True, None, "", "x" * 5000, "lrelu",
        [], {}, (), [1, 2, 3], {"a": 1}, {5: "int key"}, torch.full((4,), float("nan")), torch.zeros(0),
        torch.zeros(2, 2, 2, 2, 2, 2), torch.zeros(3, dtype=torch.int64), torch.zeros(16, dtype=torch.float16),
        np.float64("nan"), np.zeros(3, np.int32), np.zeros((2, 2), np.float32), _shared_tuple(12, 3),
        _deep_list(100), bytes(100), collections.OrderedDict(weight=torch.ones(2)),
    ]
    if not for_torch_save:
        pool.append(Rec("Weird", module_state({}, {}, {}, {})))
    return rng.choice(pool)


def _slots(obj, out: list, depth: int = 0):
    """(container, key) of every position in a pickled object tree that a value can be written to."""
    if depth > 14:
        return
    if isinstance(obj, Rec):
        obj = obj.meta
    elif isinstance(obj, TFNetwork):
        obj = obj.__dict__
    if isinstance(obj, dict):
        for k in list(obj):
            out.append((obj, k))
            _slots(obj[k], out, depth + 1)
    elif isinstance(obj, list):
        for i in range(len(obj)):
            out.append((obj, i))
            _slots(obj[i], out, depth + 1)


def mutate_tree(tree, rng: random.Random, for_torch_save: bool = False):
    """Place 1-3 hostile values at random positions of ``tree`` (in place), sometimes as a dict key."""
    slots: list = []
    _slots(tree, slots)
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(slots)
        value = hostile_value(rng, for_torch_save)
        if isinstance(container, dict) and rng.random() < 0.15:
            try:
                container[value] = container.pop(key)  # a hostile key (only hashable values are possible)
                continue
            except TypeError:
                pass
        container[key] = value
    return tree


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    payload = data[8 + n :]
    meta = header.pop("__metadata__", None)
    names = list(header)
    kind = rng.randrange(6)
    entry = header[rng.choice(names)]
    if kind == 0:
        shape = entry["shape"]
        if shape:
            shape[rng.randrange(len(shape))] = rng.choice([0, -1, 2**31, 2**62, 3, "4", 1.5])
        else:
            entry["shape"] = [rng.choice([2**20, 0])]
    elif kind == 1:
        a, b = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[b, a], [a, b + 4], [0, b - a], [a, 2**62], [a - 4, b - 4], [a]])
    elif kind == 2:
        entry["dtype"] = rng.choice(["F16", "I64", "BOOL", "U8", "F8_E4M3", "X", 5])
    elif kind == 3:
        del header[rng.choice(names)]
    elif kind == 4:
        header["extra.weight"] = {"dtype": "F32", "shape": [2**20], "data_offsets": [0, 2**22]}
    elif meta is not None and "config" in meta:
        cfg = json.loads(meta["config"])
        cfg[rng.choice(list(cfg))] = rng.choice([-1, 0, 2**40, 1e300, 0.5, "x", None, [], {}, True, float("nan")])
        meta["config"] = json.dumps(cfg)
        if rng.random() < 0.3:
            meta["drag_defaults"] = rng.choice(["[1]", "{", json.dumps({"x": [1] * 100}), "null"])
    else:
        meta = rng.choice([{"format": 5}, {"format": "dragnb-generator"}, {"config": "{}"}])
    return safetensors_bytes(header, meta, payload)


def mutate_zip(data: bytes, rng: random.Random) -> bytes:
    members = zip_members(data)
    k = rng.randrange(len(members))
    name, raw, method, usize, crc = members[k]
    kind = rng.randrange(5)
    if kind == 0:
        members[k] = (name, raw, method, rng.choice([0, usize * 1000, 2**31, usize + 1]), crc)
    elif kind == 1:
        members[k] = (name, raw, rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, 99]), usize, crc)
    elif kind == 2:
        del members[k]
    elif kind == 3:
        members.append(members[k])  # a duplicate name
    else:
        members[k] = (name.replace("data.pkl", "data.pk1"), raw, method, usize, crc)
    return zip_bytes(members)


def mutate_pickle_stream(data: bytes, rng: random.Random) -> bytes:
    """Insert a short opcode sequence somewhere in a pickle (memo gets, marks, big lengths...)."""
    snippets = [b"h\x00", b"(", b"0", b"2", b"t", b"\x85", b"}", b"]", b"a", b"s", b"u", b"e", b"R", b"b",
                b"r" + struct.pack("<I", 2**30), b"j" + struct.pack("<I", 7), b"\x8e" + struct.pack("<Q", 2**40),
                b"K\xff", b"N", b"\x94"]
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(2, len(b))
        b[pos:pos] = rng.choice(snippets)
    return bytes(b)


# ----------------------------------------------------------------------------
# The formats


def canonical(data: bytes) -> bytes:
    """``data`` with torch's legacy storage keys (memory addresses, so different at every run) replaced by
    same-length counters in order of appearance: the files, and so their mutations, are identical from run
    to run. (Right for pickles embedding one-storage blobs; see :func:`canonical_legacy` for whole files.)"""
    keys = dict.fromkeys(re.findall(rb"(?<![0-9])[0-9]{10,20}(?![0-9])", data))
    for i, key in enumerate(keys):
        data = data.replace(key, str(i).zfill(len(key)).encode())
    return data


class _StorageSizes(pickle.Unpickler):
    """Reads a legacy main pickle of our own making only to learn each storage key's element size."""

    class Anything(dict):
        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

    def __init__(self, f):
        super().__init__(f)
        self.itemsize: dict[str, int] = {}

    def find_class(self, module, name):
        return name if module == "torch" and name.endswith("Storage") else self.Anything

    def persistent_load(self, pid):
        self.itemsize[pid[2]] = STORAGE_DTYPES[pid[1]].itemsize
        return self.Anything()


def canonical_legacy(data: bytes) -> bytes:
    """A legacy ``torch.save`` file with canonical keys (:func:`canonical`), its sorted key list and its
    storage records reordered to match."""
    f = io.BytesIO(data)
    for _ in range(3):  # magic, protocol, sys info
        for _op in pickletools.genops(f):
            pass
    reader = _StorageSizes(f)
    reader.load()
    head = canonical(data[: f.tell()])
    keys = pickle.Unpickler(f).load()
    pos, blocks = f.tell(), {}
    for key in keys:
        (n,) = struct.unpack_from("<q", data, pos)
        size = 8 + n * reader.itemsize[key]
        blocks[key], pos = data[pos : pos + size], pos + size
    digits = rb"(?<![0-9])[0-9]{10,20}(?![0-9])"
    names = dict(zip(dict.fromkeys(re.findall(digits, data[: len(head)])), dict.fromkeys(re.findall(digits, head))))
    renamed = {names[k.encode()].decode(): blocks[k] for k in keys}
    order = sorted(renamed)
    return head + pickle.dumps(order, protocol=2) + b"".join(renamed[k] for k in order)


@functools.cache
def cases() -> tuple[dict[str, bytes], dict[str, bytes]]:
    return build_cases()


def build_cases() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(base files, mutated files), by name; deterministic."""
    G = _generator()
    G_ros = random_generator(seed=4, mapping_layers=3)  # rosinality files are always "skip", unclamped
    ros = {"g_ema": to_rosinality(G_ros), "latent_avg": G_ros.mapping.w_avg.clone()}
    bases = {
        "native.safetensors": native_bytes(G),
        "bare.safetensors": tensors_safetensors(G.state_dict()),
        "nvidia-p4.pkl": canonical(dump(network_dict(G), 4)),
        "nvidia-p2.pkl": canonical(dump(network_dict(G), 2)),
        "tf.pkl": dump(tf_pickle_tuple(G), 4),
        "rosinality.pt": torch_save_bytes(ros),
        "rosinality-legacy.pt": canonical_legacy(torch_save_bytes(ros, zipfile_format=False)),
        "state-dict.pt": torch_save_bytes(G.state_dict()),
    }
    structure = {
        "native.safetensors": lambda rng: mutate_safetensors(bases["native.safetensors"], rng),
        "bare.safetensors": lambda rng: mutate_safetensors(bases["bare.safetensors"], rng),
        "nvidia-p4.pkl": lambda rng: (canonical(dump(mutate_tree(network_dict(G), rng), 4)) if rng.random() < 0.7
                                      else mutate_pickle_stream(bases["nvidia-p4.pkl"], rng)),
        "nvidia-p2.pkl": lambda rng: (canonical(dump(mutate_tree(network_dict(G), rng), 2)) if rng.random() < 0.7
                                      else mutate_pickle_stream(bases["nvidia-p2.pkl"], rng)),
        "tf.pkl": lambda rng: canonical(dump(mutate_tree(list(tf_pickle_tuple(G)), rng), 4)),
        "rosinality.pt": lambda rng: (torch_save_bytes(mutate_tree(_ros_copy(ros), rng, True)) if rng.random() < 0.6
                                      else mutate_zip(bases["rosinality.pt"], rng)),
        "rosinality-legacy.pt": lambda rng: canonical_legacy(
            torch_save_bytes(mutate_tree(_ros_copy(ros), rng, True), False)),
        "state-dict.pt": lambda rng: (torch_save_bytes(mutate_tree(dict(G.state_dict()), rng, True))
                                      if rng.random() < 0.6 else mutate_zip(bases["state-dict.pt"], rng)),
    }
    mutated = {}
    for k, (name, data) in enumerate(bases.items()):
        rng = random.Random(SEED * 1000 + k)
        stem, ext = name.rsplit(".", 1)
        for i in range(BYTE_MUTATIONS):
            mutated[f"{stem}-bytes-{i:02d}.{ext}"] = mutate_bytes(data, rng)
        for i in range(STRUCT_MUTATIONS):
            mutated[f"{stem}-struct-{i:02d}.{ext}"] = structure[name](rng)
    return bases, mutated


def _ros_copy(ros):
    return {"g_ema": dict(ros["g_ema"]), "latent_avg": ros["latent_avg"]}


@pytest.mark.slow
def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(tmp_path):
    t0 = time.perf_counter()
    bases, mutated = cases()
    files = {**bases, **mutated}
    paths = []
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(p)
    results = load_in_child(paths, mem_cap=2 << 30, time_cap=10.0)
    elapsed = time.perf_counter() - t0

    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in results}
    assert all(by_name[n]["status"] == "ok" for n in bases), [by_name[n] for n in bases if by_name[n]["status"] != "ok"]
    bad = problems(results, max_growth_mb=200)
    summary = collections.Counter((r["status"], r["type"]) for r in results)
    slowest = max(results, key=lambda r: r["seconds"])
    print(f"\n{len(results)} cases in {elapsed:.1f} s; {dict(summary)}; slowest {slowest['seconds']:.2f} s "
          f"({slowest['path'].rsplit('/', 1)[-1]}); peak growth max "
          f"{max(r['peak_growth_mb'] for r in results):.0f} MB")
    assert not bad, "\n".join(bad)
    assert len(results) >= 300
    assert elapsed < TOTAL_SECONDS, f"the fuzz run took {elapsed:.0f} s"


def test_mutations_are_deterministic():
    a, b = cases()[1], build_cases()[1]
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_structural_mutations_keep_most_pickles_well_formed():
    """So that they get past the opcode level and reach the loaders' later checks."""
    _, mutated = cases()
    names = [n for n in mutated if "-struct-" in n and n.startswith(("nvidia", "tf"))]
    ok = 0
    for name in names:
        try:
            for _ in pickletools.genops(io.BytesIO(mutated[name])):
                pass
            ok += 1
        except ValueError:
            pass
    assert ok >= len(names) // 2
