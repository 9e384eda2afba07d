"""The generator follows the StyleGAN2 math: checked against straightforward reference forms
(per-sample weights, conv_transpose2d, naive upfirdn) written here independently of ops.py."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragnb.stylegan import Generator, GeneratorConfig, ops, z_from_seed
from dragnb.stylegan.networks import modulated_conv2d

torch.set_num_threads(1)


def small_cfg(**kw):
    base = dict(z_dim=8, w_dim=16, img_resolution=32, channel_base=256, channel_max=32, mapping_layers=2)
    base.update(kw)
    return GeneratorConfig(**base)


def make(seed=0, **kw):
    torch.manual_seed(seed)
    G = Generator(small_cfg(**kw)).eval()
    with torch.no_grad():  # non-zero noise strengths and biases so every term is exercised
        for name, p in G.named_parameters():
            if name.endswith(("noise_strength", "bias")) and "affine" not in name and "fc" not in name:
                p.normal_(0, 0.1)
        G.mapping.w_avg.normal_(0, 0.5)
    return G


def upfirdn_ref(x, f, up, pad, gain):
    """Naive upfirdn2d: zero insertion, pad (x0, x1, y0, y1), true convolution with f, times gain."""
    n, c, h, w = x.shape
    z = torch.zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, [pad[0], pad[1], pad[2], pad[3]])
    k = torch.flip(f, [0, 1]) * gain
    y = F.conv2d(z.reshape(n * c, 1, *z.shape[2:]), k[None, None])
    return y.reshape(n, c, *y.shape[2:])


def modconv_ref(x, weight, styles, demodulate=True, up=False, f=None):
    """Per-sample modulated weights (eq. 1-3), conv_transpose2d for up, then FIR."""
    out = []
    for i in range(x.shape[0]):
        w = weight * styles[i][None, :, None, None]
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        if up:
            y = F.conv_transpose2d(x[i : i + 1], w.transpose(0, 1), stride=2)
            y = upfirdn_ref(y, f, 1, (1, 1, 1, 1), 4)
        else:
            y = F.conv2d(x[i : i + 1], w, padding=weight.shape[-1] // 2)
        out.append(y)
    return torch.cat(out)


def test_fir_upsample_matches_naive_upfirdn():
    f = ops.fir_filter_2d()
    x = torch.randn(2, 3, 5, 6)
    assert torch.allclose(ops.upsample2d(x, f), upfirdn_ref(x, f, 2, (2, 1, 2, 1), 4), atol=1e-5)


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demod", [False, True])
def test_modulated_conv_matches_per_sample_weights(up, demod):
    torch.manual_seed(1)
    x, w, s = torch.randn(3, 4, 6, 5), torch.randn(7, 4, 3, 3), torch.randn(3, 4)
    got = modulated_conv2d(x, w, s, demodulate=demod, up=up, resample_filter=ops.fir_filter_2d())
    ref = modconv_ref(x, w, s, demodulate=demod, up=up, f=ops.fir_filter_2d())
    assert got.shape == ref.shape == (3, 7, 12 if up else 6, 10 if up else 5)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_mapping_math_and_truncation():
    G = make()
    z = torch.tensor(z_from_seed(5, 8), dtype=torch.float32)
    # Reference mapping from the formulas: normalise, FC with gain lr/sqrt(in), lrelu*sqrt(2).
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(2):
        fc = getattr(G.mapping, f"fc{i}")
        y = x @ (fc.weight * 0.01 / math.sqrt(fc.weight.shape[1])).t() + fc.bias * 0.01
        x = F.leaky_relu(y, 0.2) * math.sqrt(2)
    ws = G.mapping(z)
    assert ws.shape == (1, G.num_ws, 16) and G.num_ws == 8
    assert torch.allclose(ws[0, 3], x[0], atol=1e-5)
    w_avg = G.mapping.w_avg
    assert torch.allclose(G.mapping(z, truncation_psi=0.0)[0], w_avg.expand(8, -1), atol=1e-6)
    t = G.mapping(z, truncation_psi=0.7, truncation_cutoff=3)
    assert torch.allclose(t[0, :3], (w_avg + 0.7 * (x[0] - w_avg)).expand(3, -1), atol=1e-5)
    assert torch.allclose(t[0, 3:], x[0].expand(5, -1), atol=1e-5)


def test_seed_convention():
    assert np.array_equal(z_from_seed(71, 512), np.random.RandomState(71).randn(1, 512))
    with pytest.raises(ValueError):
        z_from_seed(-1, 4)
    with pytest.raises(TypeError):
        z_from_seed(1.5, 4)


@pytest.mark.parametrize("arch", ["skip", "orig", "resnet"])
def test_architectures_shapes_and_names(arch):
    G = make(architecture=arch, conv_clamp=256)
    img = G(torch.randn(2, 8), truncation_psi=0.7)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    names = set(G.state_dict())
    assert "synthesis.b4.const" in names and "synthesis.b32.torgb.affine.weight" in names
    assert ("synthesis.b8.torgb.weight" in names) == (arch == "skip")
    assert ("synthesis.b8.skip.weight" in names) == (arch == "resnet")
    assert not any(n.endswith("resample_filter") for n in names)


def test_orig_and_resnet_follow_block_math():
    """Recompute a whole resnet/orig synthesis from the layers, block by block."""
    for arch in ["resnet", "orig"]:
        G = make(architecture=arch, conv_clamp=0.5)  # a clamp small enough to bite
        ws = G.mapping(torch.randn(1, 8))
        syn, f = G.synthesis, ops.fir_filter_2d()

        def layer(L, x, w, up, gain=1.0, f=f):
            y = modconv_ref(x, L.weight, L.affine(w), up=up, f=f) + L.noise_const * L.noise_strength
            y = F.leaky_relu(y + L.bias[None, :, None, None], 0.2) * math.sqrt(2) * gain
            return y.clamp(-0.5 * gain, 0.5 * gain)

        x = layer(syn.b4.conv1, syn.b4.const[None], ws[:, 0], False)
        for k, res in enumerate([8, 16, 32]):
            b = getattr(syn, f"b{res}")
            i = 1 + 2 * k
            if arch == "resnet":
                y = F.conv2d(x, b.skip.weight / math.sqrt(x.shape[1]))
                y = upfirdn_ref(y, f, 2, (2, 1, 2, 1), 4) * math.sqrt(0.5)
                x = y + layer(b.conv1, layer(b.conv0, x, ws[:, i], True), ws[:, i + 1], False, math.sqrt(0.5))
            else:
                x = layer(b.conv1, layer(b.conv0, x, ws[:, i], True), ws[:, i + 1], False)
        t = syn.b32.torgb
        s = t.affine(ws[:, 7]) / math.sqrt(x.shape[1])
        img = (modconv_ref(x, t.weight, s, demodulate=False) + t.bias[None, :, None, None]).clamp(-0.5, 0.5)
        assert torch.allclose(G.synthesis(ws), img, atol=1e-5), arch


def test_noise_modes():
    G = make()
    ws = G.mapping(torch.randn(1, 8))
    a, b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(a, b)
    torch.manual_seed(0)
    r1 = G.synthesis(ws, noise_mode="random")
    r2 = G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(r1, r2)
    assert not torch.allclose(G.synthesis(ws, noise_mode="none"), a)
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="loud")


def test_non_square_stylegan_human_layout():
    G = make(img_resolution=32, img_width=16)
    assert G.synthesis.b4.const.shape[1:] == (4, 2)
    assert G.synthesis.b16.conv0.noise_const.shape == (16, 8)
    assert G(torch.randn(1, 8)).shape == (1, 3, 32, 16)
    assert G.feature_shape(3) == (8, 32, 16)
    with pytest.raises(ValueError):
        small_cfg(img_width=12)


def test_features_and_early_stop():
    G = make()
    ws = G.mapping(torch.randn(1, 8))
    full, feat = G.synthesis(ws, feature_block=2)
    assert torch.allclose(full, G.synthesis(ws))
    assert feat.shape == (1, *G.feature_shape(2)) == (1, 16, 16, 16)
    img, feat2 = G.synthesis(ws, feature_block=2, stop_after_block=2)
    assert img is None and torch.equal(feat, feat2)
    x, partial = G.synthesis.run_blocks(ws, 0, 3)
    _, img = G.synthesis.run_blocks(ws, 3, 4, x, partial)
    assert torch.allclose(img, full) and torch.equal(x, feat)
    with pytest.raises(ValueError):
        G.synthesis(ws, feature_block=4)


def test_conditional_needs_label():
    G = make(c_dim=3)
    with pytest.raises(ValueError, match="label"):
        G.mapping(torch.randn(1, 8))
    ws = G.mapping(torch.randn(2, 8), torch.eye(3)[:2])
    assert ws.shape == (2, 8, 16)


def test_bad_config():
    with pytest.raises(ValueError):
        small_cfg(img_resolution=48)
    with pytest.raises(ValueError):
        small_cfg(architecture="stylegan3")
    with pytest.raises(ValueError):
        GeneratorConfig.from_dict({"z_dim": 4, "bogus": 1})
