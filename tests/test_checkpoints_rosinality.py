"""rosinality .pt checkpoints and plain torch state dicts, read by the allowlist torch reader."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
from nvidia_fakes import Call, random_generator

from dragnb.checkpoints.errors import MissingNetworkError, TruncatedFileError, UnsafePickleError
from dragnb.checkpoints.foreign import load_any
from dragnb.checkpoints.rosinality import load_rosinality
from dragnb.stylegan.ops import fir_filter_2d

torch.set_num_threads(1)


def to_rosinality(G) -> dict:
    """Our generator's weights under rosinality's names and shapes (the inverse of the loader's table)."""
    sd, res = G.state_dict(), G.cfg.block_resolutions
    out = {}
    for i in range(G.cfg.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]

    def layer(dst, src, torgb=False):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        if torgb:
            out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        else:
            out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
            out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]

    layer("conv1", "synthesis.b4.conv1")
    layer("to_rgb1", "synthesis.b4.torgb", torgb=True)
    out["noises.noise_0"] = sd["synthesis.b4.conv1.noise_const"][None, None]
    for i, r in enumerate(res[1:]):
        layer(f"convs.{2 * i}", f"synthesis.b{r}.conv0")
        out[f"convs.{2 * i}.conv.blur.kernel"] = fir_filter_2d() * 4
        layer(f"convs.{2 * i + 1}", f"synthesis.b{r}.conv1")
        layer(f"to_rgbs.{i}", f"synthesis.b{r}.torgb", torgb=True)
        out[f"to_rgbs.{i}.upsample.kernel"] = fir_filter_2d() * 4
        out[f"noises.noise_{2 * i + 1}"] = sd[f"synthesis.b{r}.conv0.noise_const"][None, None]
        out[f"noises.noise_{2 * i + 2}"] = sd[f"synthesis.b{r}.conv1.noise_const"][None, None]
    return out


def _images(G):
    z = torch.from_numpy(np.random.RandomState(1).randn(2, G.z_dim)).float()
    with torch.no_grad():
        return G(z, truncation_psi=0.7, noise_mode="const")


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_rosinality_round_trip(tmp_path, zipfile_format):
    G = random_generator()
    path = tmp_path / "ros.pt"
    ckpt = {"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg.clone()}
    if not zipfile_format:  # a training checkpoint written by an old torch: legacy format, args Namespace
        ckpt.update(g=to_rosinality(G), args=argparse.Namespace(size=16, n_mlp=8, channel_multiplier=2),
                    g_optim={"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99)}]})
    torch.save(ckpt, path, _use_new_zipfile_serialization=zipfile_format)
    G2 = load_any(path)
    assert G2.cfg.to_dict() == G.cfg.to_dict()
    assert torch.equal(_images(G), _images(G2))


def test_rosinality_without_latent_avg_estimates_it(tmp_path):
    G = random_generator()
    path = tmp_path / "ros.pt"
    torch.save({"g_ema": to_rosinality(G)}, path)
    G2 = load_rosinality(path)
    with torch.no_grad():
        w = G.mapping(torch.randn(4096, G.z_dim, generator=torch.Generator().manual_seed(0)))[:, 0].mean(0)
    assert torch.allclose(G2.mapping.w_avg, w, atol=1e-5)
    z = torch.randn(1, G.z_dim)
    assert torch.equal(G(z, noise_mode="const"), G2(z, noise_mode="const"))  # psi 1: w_avg unused


def test_plain_nvidia_named_state_dict(tmp_path):
    """A bare ``torch.save(G.state_dict())``: everything but lr multiplier / conv_clamp comes from shapes."""
    G = random_generator(architecture="resnet", channel_base=200)  # channels 16, 16, 12
    path = tmp_path / "sd.pt"
    torch.save(G.state_dict(), path)
    G2 = load_any(path)
    assert [G2.cfg.channels(r) for r in (4, 8, 16)] == [16, 16, 12]
    assert G2.cfg.architecture == "resnet"
    assert torch.equal(_images(G), _images(G2))


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_hostile_torch_file_is_refused(tmp_path, zipfile_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": to_rosinality(random_generator()), "args": Call(os.system, f"touch {marker}")}, path,
               _use_new_zipfile_serialization=zipfile_format)
    with pytest.raises(UnsafePickleError, match="system"):
        load_any(path)
    assert not marker.exists()


def test_truncated_and_foreign_torch_files(tmp_path):
    path = tmp_path / "ros.pt"
    torch.save({"g_ema": to_rosinality(random_generator())}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedFileError):
        load_any(path)
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(MissingNetworkError, match="g_ema"):
        load_any(path)


def test_bare_safetensors_state_dict(tmp_path):
    from safetensors.torch import save_file

    G = random_generator(c_dim=2)
    path = tmp_path / "sd.safetensors"
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path))
    G2 = load_any(path)
    assert G2.cfg.to_dict() == G.cfg.to_dict()
    z, c = torch.randn(1, G.z_dim), torch.tensor([[0.0, 1.0]])
    assert torch.equal(G(z, c), G2(z, c))
