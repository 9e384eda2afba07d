"""``dragnb convert``: NVIDIA-style pickle -> convert -> our format -> the same images."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from nvidia_fakes import Call, dump, network_dict, random_generator

import dragnb
from dragnb.checkpoints.convert import add_convert_parser, convert
from dragnb.checkpoints.errors import UnsafePickleError

torch.set_num_threads(1)


def test_convert_round_trip(tmp_path):
    G = random_generator(architecture="resnet", conv_clamp=256, img_width=8)
    src = tmp_path / "net.pkl"
    src.write_bytes(dump(network_dict(G), 3))
    out = tmp_path / "net.safetensors"
    summary = convert(src, out, progress=True)  # exercises the tqdm bars too
    assert summary["format"] == "nvidia-pickle"
    assert summary["resolution"] == [16, 8] and summary["num_ws"] == 6 and summary["architecture"] == "resnet"
    assert summary["channels"] == {4: 16, 8: 16, 16: 8}
    G2 = dragnb.load_generator(out)
    assert G2.cfg.to_dict() == G.cfg.to_dict()
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.7), G2(z, truncation_psi=0.7))


def test_convert_cli(tmp_path, capsys):
    src, out = tmp_path / "net.pkl", tmp_path / "out.safetensors"
    src.write_bytes(dump(network_dict(random_generator())))
    parser = argparse.ArgumentParser(prog="dragnb")
    add_convert_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", str(src), str(out), "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "16x16" in text and "num_ws       6" in text and "skip" in text and out.exists()


def test_convert_refuses_hostile_input_and_writes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    d = network_dict(random_generator())
    d["x"] = Call(os.system, f"touch {marker}")
    src, out = tmp_path / "evil.pkl", tmp_path / "out.safetensors"
    src.write_bytes(dump(d))
    with pytest.raises(UnsafePickleError):
        convert(src, out, progress=False)
    assert not out.exists() and not marker.exists()
