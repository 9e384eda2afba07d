"""NVIDIA network pickles: structure-faithful fakes load into the same generator; hostile ones are refused."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from nvidia_fakes import MODULE_SRC, Call, Rec, dump, fake_global, module_state, network_dict, random_generator

import dragnb
from dragnb.checkpoints.errors import (
    CheckpointError,
    MissingNetworkError,
    TruncatedFileError,
    UnknownFormatError,
    UnsafePickleError,
    UnsupportedArchitectureError,
)
from dragnb.checkpoints.foreign import load_any
from dragnb.checkpoints.nvidia import load_nvidia_pickle
from dragnb.checkpoints.safe_pickle import LEGACY_MAGIC

torch.set_num_threads(1)

CONFIGS = {
    "skip-clamp": dict(conv_clamp=256),
    "orig": dict(architecture="orig"),
    "resnet": dict(architecture="resnet", conv_clamp=256),
    "conditional": dict(c_dim=3),
    "human-512x256-layout": dict(img_width=8),  # 16 high x 8 wide: const [C, 4, 2], noise [r, r/2]
    "short-mapping": dict(mapping_layers=2, mapping_layer_features=24, mapping_lr_multiplier=0.1),
}


def _images(G, seed=0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(2, G.z_dim)).float()
    c = torch.eye(G.c_dim)[[0, 2]] if G.c_dim else None
    with torch.no_grad():
        return [G(z, c, truncation_psi=0.7, noise_mode="const"), G(z, c, truncation_psi=1.0, noise_mode="none")]


def _write(tmp_path, obj, protocol=4, name="net.pkl"):
    path = tmp_path / name
    path.write_bytes(obj if isinstance(obj, bytes) else dump(obj, protocol))
    return path


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_pickle_loads_into_the_same_generator(tmp_path, name, protocol):
    G = random_generator(**CONFIGS[name])
    path = _write(tmp_path, network_dict(G), protocol)
    G2 = load_nvidia_pickle(path)
    assert G2.cfg.to_dict() == G.cfg.to_dict()
    sd, sd2 = G.state_dict(), G2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    for a, b in zip(_images(G), _images(G2)):
        assert torch.equal(a, b)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules  # nothing imported from the file


def test_conditional_generator_needs_a_label(tmp_path):
    G2 = load_any(_write(tmp_path, network_dict(random_generator(c_dim=3))))
    with pytest.raises(ValueError, match="conditional"):
        G2(torch.randn(1, 16))


def test_public_loader_reads_pickles(tmp_path):
    G = random_generator()
    G2 = dragnb.load_generator(_write(tmp_path, network_dict(G)))
    assert torch.equal(_images(G)[0], _images(G2)[0])


def test_numpy1_scalar_names_and_key_order(tmp_path):
    """Pickles written under numpy 1.x name ``numpy.core.multiarray.scalar``; key order varies."""
    scalar = fake_global("numpy.core.multiarray", "scalar")
    G = random_generator()
    d = network_dict(G)
    fc0 = d["G_ema"].state["_modules"]["mapping"].state["_modules"]["fc0"]
    fc0.state["weight_gain"] = Call(scalar, np.dtype("f8"), np.float64(0.25).tobytes())
    d = {k: d[k] for k in ("training_set_kwargs", "G_ema", "augment_pipe", "D", "G")}
    G2 = load_nvidia_pickle(_write(tmp_path, d, 3))
    assert torch.equal(_images(G)[0], _images(G2)[0])


def test_module_src_is_never_executed(tmp_path):
    """A record whose module_src would write a file loads (as weights only) and writes nothing."""
    marker = tmp_path / "module_src_ran"
    src = MODULE_SRC + f"\nopen({str(marker)!r}, 'w').write('pwned')\n"
    G = random_generator()
    G2 = load_nvidia_pickle(_write(tmp_path, network_dict(G, module_src=src)))
    assert not marker.exists()
    assert torch.equal(_images(G)[0], _images(G2)[0])


# ----------------------------------------------------------------------------
# Hostile files: refused, and the side effect did not happen


def _hostile_calls(marker):
    m = str(marker)
    return {
        "os.system": Call(os.system, f"touch {m}"),
        "subprocess.call": Call(subprocess.call, ["touch", m]),
        "subprocess.Popen": Call(subprocess.Popen, ["touch", m]),
        "builtins.eval": Call(builtins.eval, f"open({m!r}, 'w').close()"),
        "builtins.exec": Call(builtins.exec, f"open({m!r}, 'w').close()"),
        "builtins.getattr": Call(builtins.getattr, "text", "upper"),
    }


@pytest.mark.parametrize("kind", list(_hostile_calls("x")))
def test_hostile_global_at_top_level_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    d = network_dict(random_generator())
    d["evil"] = _hostile_calls(marker)[kind]
    with pytest.raises(UnsafePickleError, match="refused"):
        load_any(_write(tmp_path, d))
    assert not marker.exists()


def test_hostile_global_deep_in_module_state_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    d = network_dict(random_generator())
    syn = d["G_ema"].state["_modules"]["synthesis"]
    conv0 = syn.state["_modules"]["b8"].state["_modules"]["conv0"]
    conv0.state["_init_kwargs"]["resample_filter"] = [1, 3, Call(os.system, f"touch {marker}"), 1]
    with pytest.raises(UnsafePickleError, match="os.system|posix.system"):
        load_nvidia_pickle(_write(tmp_path, d, 3))
    assert not marker.exists()


class _BlobStorage:
    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.blob,))


class _BlobTensor:
    def __init__(self, blob, n):
        self.blob, self.n = blob, n

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_BlobStorage(self.blob), 0, (self.n,), (1,), False, OrderedDict()))


def _legacy_blob(main_obj) -> bytes:
    """A legacy torch.save layout whose main pickle is ``main_obj`` (no storages)."""
    sys_info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    head = [LEGACY_MAGIC, 1001, sys_info]
    return b"".join(pickle.dumps(o, protocol=2) for o in head) + pickle.dumps(main_obj, protocol=2) + pickle.dumps([])


def test_hostile_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    d = network_dict(random_generator())
    b4 = d["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b4"]
    hostile = _BlobTensor(_legacy_blob(Call(os.system, f"touch {marker}")), 16)
    b4.state["_modules"]["conv1"].state["_parameters"]["bias"] = hostile
    with pytest.raises(UnsafePickleError):
        load_nvidia_pickle(_write(tmp_path, d))
    assert not marker.exists()


def test_raw_opcode_exploits_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    for raw in (
        b"\x80\x02cos\nsystem\n(X" + f"touch {marker}".encode() + b"\ntR.",  # GLOBAL + REDUCE
        b"\x80\x02(cos\nsystem\nX\x05\x00\x00\x00touchtR.",
        b"\x80\x02(X" + f"touch {marker}".encode() + b"\nios\nsystem\n.",  # INST
    ):
        with pytest.raises(CheckpointError):
            load_any(_write(tmp_path, raw))
    assert not marker.exists()


def test_non_numeric_numpy_dtype_is_refused(tmp_path):
    d = network_dict(random_generator())
    d["G_ema"].state["odd"] = np.array([object()], dtype=object)
    with pytest.raises(CheckpointError):
        load_any(_write(tmp_path, d))


def test_tensor_view_past_its_storage_is_refused(tmp_path):
    class BadView:
        def __reduce__(self):
            storage = torch.storage.TypedStorage(4, dtype=torch.float32, _internal=True)  # 4 floats
            return (torch._utils._rebuild_tensor_v2, (storage, 2, (8,), (1,), False, OrderedDict()))

    d = network_dict(random_generator())
    d["G_ema"].state["_modules"]["mapping"].state["_buffers"]["w_avg"] = BadView()
    with pytest.raises(CheckpointError, match="past its storage"):
        load_any(_write(tmp_path, d))


# ----------------------------------------------------------------------------
# Clear errors


def test_truncated_pickle(tmp_path):
    data = dump(network_dict(random_generator()))
    for cut in (len(data) // 3, len(data) - 1):
        with pytest.raises(TruncatedFileError, match="truncated"):
            load_any(_write(tmp_path, data[:cut]))


def test_non_pickle_and_empty_files(tmp_path):
    with pytest.raises(UnknownFormatError, match="unknown checkpoint format"):
        load_any(_write(tmp_path, b"this is a text file, not a checkpoint\n" * 10, name="notes.pkl"))
    with pytest.raises(TruncatedFileError, match="empty"):
        load_any(_write(tmp_path, b"", name="empty.pkl"))


def test_missing_g_ema(tmp_path):
    d = network_dict(random_generator())
    del d["G_ema"]
    with pytest.raises(MissingNetworkError, match="G_ema"):
        load_any(_write(tmp_path, d))


def test_stylegan3_is_refused_plainly(tmp_path):
    G = random_generator()
    d = network_dict(G)
    fc = d["G_ema"].state["_modules"]["mapping"].state["_modules"]["fc0"]
    buffers = {"freqs": torch.randn(16, 2), "phases": torch.randn(16)}
    inp = Rec("SynthesisInput", module_state({"weight": torch.randn(16, 4)}, buffers, {"affine": fc}, {}))
    layer = Rec("SynthesisLayer", module_state({"weight": torch.randn(16, 16, 3, 3)}, {}, {}, {}))
    syn = d["G_ema"].state["_modules"]["synthesis"]
    syn.meta["class_name"] = "SynthesisNetwork"
    syn.state["_modules"] = OrderedDict(input=inp, L0_36_16=layer)
    with pytest.raises(UnsupportedArchitectureError, match="StyleGAN3"):
        load_any(_write(tmp_path, d))


def test_pickle_of_something_else(tmp_path):
    with pytest.raises(MissingNetworkError):
        load_any(_write(tmp_path, pickle.dumps([1, 2, 3], protocol=4)))
