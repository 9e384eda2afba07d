"""Our own weights format: exact round trip, no code execution, clear errors."""

import copy
import json
import struct

import pytest
import torch

import dragnb
from dragnb.checkpoints import CheckpointError
from dragnb.stylegan import Generator, GeneratorConfig

torch.set_num_threads(1)


@pytest.fixture
def G():
    torch.manual_seed(0)
    cfg = GeneratorConfig(z_dim=8, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2,
                          architecture="resnet", conv_clamp=256.0)
    return Generator(cfg).eval()


def test_round_trip_exact(G, tmp_path):
    p = dragnb.save_generator(G, tmp_path / "g.safetensors")
    G2 = dragnb.load_generator(p)
    assert G2.cfg == G.cfg and not G2.training
    for k, v in G.state_dict().items():
        assert torch.equal(v, G2.state_dict()[k]), k
    z = torch.randn(2, 8)
    # Like with like: a frozen generator computes its weight-derived tensors once (ops.frozen_derived), which
    # rounds differently (~4e-7) from the per-call path of one whose weights require grad.
    frozen = copy.deepcopy(G).requires_grad_(False)
    assert torch.equal(frozen(z, truncation_psi=0.5), G2(z, truncation_psi=0.5))
    assert (G2.z_dim, G2.w_dim, G2.c_dim, G2.num_ws, G2.img_resolution, G2.img_channels) == (8, 16, 0, 6, 16, 3)


def test_truncated_file(G, tmp_path):
    p = dragnb.save_generator(G, tmp_path / "g.safetensors")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        dragnb.load_generator(p)


def test_unknown_format(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello, this is not a model" * 10)
    with pytest.raises(CheckpointError):
        dragnb.load_generator(p)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        dragnb.load_generator(tmp_path / "empty.safetensors")


def test_missing_file_and_name():
    with pytest.raises(FileNotFoundError, match="no model"):
        dragnb.load_generator("/nonexistent/model.safetensors")


def _rewrite_config(path, **changes):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    cfg = json.loads(header["__metadata__"]["config"])
    cfg.update(changes)
    header["__metadata__"]["config"] = json.dumps(cfg)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n :])


def test_config_mismatch(G, tmp_path):
    p = dragnb.save_generator(G, tmp_path / "g.safetensors")
    _rewrite_config(p, channel_max=32)
    with pytest.raises(CheckpointError, match="does not match"):
        dragnb.load_generator(p)
    p = dragnb.save_generator(G, tmp_path / "h.safetensors")
    _rewrite_config(p, architecture="bogus")
    with pytest.raises(CheckpointError, match="config"):
        dragnb.load_generator(p)
