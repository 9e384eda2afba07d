"""One contract for every loader: any file gives a generator or a ``CheckpointError`` naming the file.

Each case is a malformed file; where a case id starts with an exception type, that is what escaped from the
loaders before they checked this kind of damage.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hostile_files import native_bytes, safetensors_bytes, tensors_safetensors, torch_save_bytes, zip_bytes, zip_members
from nvidia_fakes import dump, network_dict, random_generator, tf_pickle_tuple
from test_checkpoints_rosinality import to_rosinality

from dragnb.checkpoints import load_generator
from dragnb.checkpoints.convert import convert
from dragnb.checkpoints.errors import CheckpointError
from dragnb.checkpoints.foreign import load_any
from dragnb.checkpoints.native import load_native
from dragnb.checkpoints.nvidia import load_nvidia_pickle, read_nvidia_pickle
from dragnb.checkpoints.rosinality import load_rosinality, read_torch_file
from dragnb.checkpoints.safe_pickle import LEGACY_MAGIC

torch.set_num_threads(1)


def _nvidia(edit) -> bytes:
    d = network_dict(random_generator())
    edit(d["G_ema"])
    return dump(d, 4)


def _sub(rec, *path):
    for name in path:
        rec = rec.state["_modules"][name]
    return rec


def _tf(edit) -> bytes:
    nets = tf_pickle_tuple(random_generator())
    edit(nets[2])
    return dump(nets, 4)


def _drop_tf_variable(Gs, name):
    syn = Gs.components["synthesis"]
    syn.variables = [(k, v) for k, v in syn.variables if k != name]


def _set_tf_variable(Gs, name, value):
    syn = Gs.components["synthesis"]
    syn.variables = [(k, value if k == name else v) for k, v in syn.variables]


def _sd_safetensors(edit) -> bytes:
    """A bare safetensors file of NVIDIA names whose header ``edit`` changes (data left as it is)."""
    data = tensors_safetensors(random_generator().state_dict())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    return safetensors_bytes({k: v for k, v in header.items() if k != "__metadata__"}, header.get("__metadata__"),
                             data[8 + n :])


def _overlap(h):
    names = sorted(h, key=lambda k: h[k]["data_offsets"][0])
    a, b = h[names[1]], h[names[2]]
    size = b["data_offsets"][1] - b["data_offsets"][0]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size]


def _native_config(text) -> bytes:
    meta = {"format": "dragnb-generator", "format_version": "1", "config": text}
    return safetensors_bytes({}, meta)


def _zip_edit(data: bytes, name_part: str, *, payload=None, method=None, crc=None) -> bytes:
    members = zip_members(data)
    for k, (name, raw, m, usize, _crc) in enumerate(members):
        if name.endswith(name_part):
            raw = raw if payload is None else payload
            members[k] = (name, raw, m if method is None else method, len(raw) if payload is not None else usize,
                          zlib.crc32(raw) if crc is None else crc)
    return zip_bytes(members)


def _legacy_with_sys_info(sys_info_pickle: bytes) -> bytes:
    return pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2) + sys_info_pickle + b"\x80\x02N."


def _deep_list_g_ema(n: int = 5000) -> bytes:
    """``{"g_ema": {"style.1.weight": [[[...]]]}}`` nested ``n`` deep, as raw opcodes (pickle.dumps recurses)."""
    def text(s):
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    deep = b"]" * n + b"a" * (n - 1)
    pkl = b"\x80\x02}" + text("g_ema") + b"}" + text("style.1.weight") + deep + b"ss."
    return _zip_edit(torch_save_bytes({"g_ema": {}}), "data.pkl", payload=pkl)


def _deep_header(n: int = 100_000) -> bytes:
    raw = b'{"x": ' + b"[" * n + b"]" * n + b"}"
    return struct.pack("<Q", len(raw)) + raw


def _ros(edit) -> bytes:
    G = random_generator()
    sd = to_rosinality(G)
    edit(sd)
    return torch_save_bytes({"g_ema": sd, "latent_avg": G.mapping.w_avg.clone()})


CASES = {
    "AttributeError-init-kwargs-list": lambda: _nvidia(lambda G: G.state.__setitem__("_init_kwargs", [1, 2])),
    "TypeError-non-persistent-set-int": lambda: _nvidia(
        lambda G: _sub(G, "mapping").state.__setitem__("_non_persistent_buffers_set", 5)),
    "module-name-int": lambda: _nvidia(
        lambda G: _sub(G, "mapping").state["_modules"].__setitem__(7, _sub(G, "mapping", "fc0"))),
    "ValueError-conv-clamp-text": lambda: _nvidia(
        lambda G: [m.state.__setitem__("conv_clamp", "big") for b in _sub(G, "synthesis").state["_modules"].values()
                   for m in b.state["_modules"].values()]),
    "TypeError-unhashable-architecture": lambda: _nvidia(
        lambda G: _sub(G, "synthesis", "b8").state.__setitem__("architecture", ["skip"])),
    "RecursionError-module-cycle": lambda: _nvidia(
        lambda G: _sub(G, "mapping").state["_modules"].__setitem__("loop", _sub(G, "mapping"))),
    "SafetensorError-overlapping-offsets": lambda: _sd_safetensors(_overlap),
    "SafetensorError-bad-dtype": lambda: _sd_safetensors(lambda h: h["mapping.w_avg"].__setitem__("dtype", "Q8")),
    "KeyError-no-data-offsets": lambda: _sd_safetensors(lambda h: h["mapping.w_avg"].pop("data_offsets")),
    "TypeError-offsets-strings": lambda: _sd_safetensors(
        lambda h: h["mapping.w_avg"].__setitem__("data_offsets", ["0", "64"])),
    "RecursionError-deep-header": _deep_header,
    "RecursionError-deep-config": lambda: _native_config("[" * 100000 + "]" * 100000),
    "config-list": lambda: _native_config("[1, 2]"),
    "TypeError-config-null-values": lambda: native_bytes(random_generator(), z_dim=None),
    "BadZipFile-byteorder-crc": lambda: _zip_edit(torch_save_bytes({"g_ema": {}}), "byteorder", crc=1),
    "zip-method-99": lambda: _zip_edit(torch_save_bytes({"g_ema": {}}), "data.pkl", method=99),
    "zip-data-crc": lambda: _zip_edit(torch_save_bytes(to_rosinality(random_generator())), "data/0", crc=7),
    "RecursionError-deep-list-in-g-ema": _deep_list_g_ema,
    "UnicodeDecodeError-legacy-sys-info": lambda: _legacy_with_sys_info(b"\x80\x02U\x02\xff\xfe."),
    "legacy-cut": lambda: torch_save_bytes(to_rosinality(random_generator()), zipfile_format=False)[:300],
    "KeyError-tf-missing-mod-bias": lambda: _tf(lambda Gs: _drop_tf_variable(Gs, "8x8/Conv1/mod_bias")),
    "IndexError-tf-const-rank": lambda: _tf(
        lambda Gs: _set_tf_variable(Gs, "4x4/Const/const", np.zeros((), np.float32))),
    "ValueError-tf-weight-rank": lambda: _tf(
        lambda Gs: _set_tf_variable(Gs, "8x8/Conv1/weight", np.zeros((3, 3), np.float32))),
    "AttributeError-tf-variables-int": lambda: _tf(lambda Gs: setattr(Gs.components["synthesis"], "variables", 5)),
    "RuntimeError-ros-noise-shape": lambda: _ros(lambda sd: sd.__setitem__("noises.noise_1", torch.zeros(2, 8, 8))),
    "IndexError-ros-weight-rank": lambda: _ros(lambda sd: sd.__setitem__("conv1.conv.weight", torch.zeros(()))),
    "RuntimeError-ros-noise-strength": lambda: _ros(lambda sd: sd.__setitem__("conv1.noise.weight", torch.zeros(3))),
    "TypeError-ros-latent-avg-list": lambda: torch_save_bytes({"g_ema": to_rosinality(random_generator()),
                                                               "latent_avg": [1.0, 2.0]}),
    "TypeError-state-dict-int-key": lambda: torch_save_bytes({**random_generator().state_dict(), 5: torch.zeros(1)}),
    "OverflowError-huge-tensor-size": lambda: _nvidia(
        lambda G: _sub(G, "mapping").state["_buffers"].__setitem__("w_avg", _BigView())),
    "numpy-frombuffer-int": lambda: dump({"G_ema": _Frombuffer()}, 5),
}


class _BigView:
    def __reduce__(self):
        storage = torch.storage.TypedStorage(4, dtype=torch.float32, _internal=True)
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (2**70,), (0,), False, OrderedDict()))


class _Frombuffer:
    def __reduce__(self):
        from nvidia_fakes import fake_global

        return (fake_global("numpy.core.numeric", "_frombuffer"), (10**12, np.dtype("f4"), (1,), "C"))


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_file_raises_checkpoint_error_naming_it(tmp_path, case):
    p = tmp_path / f"{case}.bin"
    p.write_bytes(CASES[case]())
    with pytest.raises(CheckpointError) as e:
        load_generator(p)
    message = str(e.value)
    assert str(p) in message and len(message) < 1000 and "\n" not in message, message


@pytest.mark.parametrize("loader", [load_any, load_native, load_nvidia_pickle, read_nvidia_pickle, load_rosinality,
                                    read_torch_file, lambda p: convert(p, p.with_suffix(".out.safetensors"))])
def test_every_public_loader_keeps_the_contract(tmp_path, loader):
    files = {"garbage.bin": b"\x80\x04garbage", "zip.pt": b"PK\x03\x04" + bytes(100),
             "st.safetensors": CASES["SafetensorError-overlapping-offsets"](), "empty.pkl": b""}
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(CheckpointError, match=str(p)):
            loader(p)
    with pytest.raises(CheckpointError, match="not a regular file|cannot read"):
        loader(tmp_path)
    with pytest.raises(FileNotFoundError):
        loader(tmp_path / "missing.pkl")


def test_a_valid_file_still_loads_through_every_entry(tmp_path):
    G = random_generator()
    p = tmp_path / "net.pkl"
    p.write_bytes(dump(network_dict(G), 4))
    z = torch.randn(1, G.z_dim)
    for loader in (load_generator, load_any, load_nvidia_pickle):
        assert torch.equal(loader(p)(z), G(z))
    assert zipfile.is_zipfile(io.BytesIO(torch_save_bytes({})))
