"""The performance rewrites compute the same numbers as the plain forms they replace.

* sampled features (``core.ResizedFeatures.at``) equal the materialised map (``full()``) bit for bit, and
  ``full()`` equals ``F.interpolate(bilinear, align_corners=False)``; the torch-free runtime's numpy resize
  equals ``full()`` bit for bit (F0 and the step must agree exactly for the L1 mask term);
* the mask term over the fixed pixels equals the mean over the whole map;
* the up-sampling convolution (eager: transposed conv; exports: polyphase) equals zero insertion + conv;
* eager FIR filtering (a depthwise conv) equals the export's form (channels folded into the batch);
* tensors derived from frozen weights are reused only while the weight is unchanged;
* the in-place elementwise ops of a forward without autograd give the numbers of the autograd forward;
* NVIDIA's forms (official mode, ``ops.nvidia_form``) compute the same function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragnb.drag import core, geometry
from dragnb.stylegan import ops


@pytest.mark.parametrize("hw,size", [((16, 16), (64, 64)), ((8, 4), (32, 16)), ((5, 7), (23, 40)), ((8, 8), (8, 8))])
def test_sampled_features_equal_the_map_bit_for_bit(hw, size):
    torch.manual_seed(0)
    x = torch.randn(1, 6, *hw)
    feat = core.ResizedFeatures(x, size)
    full = feat.full()
    assert full.shape == (6, *size)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5)
    rows, cols = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    for merged in (False, True):
        at = feat.at(rows, cols, merged=merged)  # [H, W, C]
        assert torch.equal(at.permute(2, 0, 1), full)
    assert np.array_equal(geometry.resize_features(x.numpy(), size, chunk=4), full.numpy())
    traced = core.ResizedFeatures(x.clone().requires_grad_(True), size).full()  # the whole-map form (autograd)
    assert traced.requires_grad and torch.equal(traced.detach(), full)


def test_mask_term_over_fixed_pixels_equals_the_dense_mean():
    torch.manual_seed(1)
    x = torch.randn(1, 5, 8, 8)
    feat = core.ResizedFeatures(x, (32, 32))
    f0 = core.ResizedFeatures(x + 0.1 * torch.randn_like(x), (32, 32)).full()
    fixed = torch.zeros(32, 32)
    fixed[4:20, 10:30] = 1.0
    fixed[0, 0] = 0.5  # a soft weight is honoured too
    dense = (feat.full() * fixed - f0 * fixed).abs().mean()
    sparse = core.mask_loss(feat, fixed, f0 * fixed)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=0)
    assert core.mask_loss(feat, torch.zeros(1, 1), torch.zeros(1, 1, 1)) == 0  # no mask: exactly 0
    f0_same = feat.full()
    assert core.mask_loss(feat, fixed, f0_same * fixed) == 0  # at the start of a drag: exactly 0


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_upsampling_conv_forms_agree(k, monkeypatch):
    torch.manual_seed(k)
    x, w, f = torch.randn(2, 5, 7, 6), torch.randn(4, 5, k, k), ops.fir_filter_2d()
    out = {}
    for form in ops.UP_CONV_FORMS:
        monkeypatch.setattr(ops, "UP_CONV", form)
        out[form] = ops.conv3x3_up2(x, w, f)
    if k == 3:
        assert out["auto"].shape == (2, 4, 14, 12)
    for form in ("polyphase", "auto"):
        torch.testing.assert_close(out[form], out["zero_insertion"], atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(ops, "UP_CONV", "fast")
    with pytest.raises(ValueError, match="UP_CONV"):
        ops.conv3x3_up2(x, w, f)


def test_eager_fir_equals_the_folded_export_form():
    torch.manual_seed(2)
    x, f = torch.randn(2, 5, 9, 7), ops.fir_filter_2d()
    for pad, gain in (((2, 1, 2, 1), 4.0), ((1, 1, 1, 1), 1.0), ((0, 3, 1, 2), 2.0)):
        folded = F.conv2d(F.pad(x.reshape(10, 1, 9, 7), list(pad)), (f * gain)[None, None])
        torch.testing.assert_close(ops.fir2d(x, f, pad, gain), folded.reshape(2, 5, *folded.shape[2:]),
                                   atol=1e-6, rtol=1e-6)


def test_pointwise_conv_as_matmul_equals_conv2d():
    torch.manual_seed(4)
    x, w = torch.randn(2, 7, 5, 6), torch.randn(3, 7, 1, 1)
    y = ops.conv2d(x, w)
    torch.testing.assert_close(y, F.conv2d(x, w), atol=1e-6, rtol=1e-6)
    # the same sums whatever requires grad (a model and its frozen copy must render the same image)
    assert torch.equal(ops.conv2d(x, w.clone().requires_grad_(True)).detach(), y)
    assert torch.equal(ops.conv2d(x.clone().requires_grad_(True), w).detach(), y)


def test_frozen_derived_follows_the_weight():
    w = torch.randn(3, 4)
    calls = []

    def double(t):
        calls.append(1)
        return t * 2

    a = ops.frozen_derived(w, "double", double)
    assert ops.frozen_derived(w, "double", double) is a and len(calls) == 1  # reused
    w.add_(1)  # in place (load_state_dict, an EMA update): recomputed
    assert torch.equal(ops.frozen_derived(w, "double", double), w * 2) and len(calls) == 2
    w.requires_grad_(True)  # a trained weight: never cached, the result carries the gradient
    b = ops.frozen_derived(w, "double", double)
    assert b.requires_grad and len(calls) == 3
    assert ops.frozen_derived(w, "double", double) is not b and len(calls) == 4


def test_inplace_forward_equals_the_autograd_forward(tiny_generator):
    G = tiny_generator
    torch.manual_seed(3)
    ws = G.mapping(torch.randn(1, G.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        plain = G.synthesis(ws, noise_mode="const")
    traced = G.synthesis(ws.clone().requires_grad_(True), noise_mode="const")
    assert traced.requires_grad and torch.equal(traced.detach(), plain)


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_nvidia_form_is_the_same_function(architecture):
    """``ops.nvidia_form`` (official mode's bit-exact forms: per-sample modulated weights, grouped convolutions over
    a batch, addmm, padding then filter) computes the generator's default numbers to rounding, forward and the
    gradient with respect to the ws, for a batch of two."""
    from conftest import make_tiny_generator

    G = make_tiny_generator(architecture=architecture, conv_clamp=256.0)
    torch.manual_seed(1)
    ws = G.mapping(torch.randn(2, G.z_dim), truncation_psi=0.7)

    def run():
        w = ws.clone().requires_grad_(True)
        img, feat = G.synthesis(w, feature_block=G.num_blocks - 2, return_features=True)
        (grad,) = torch.autograd.grad(feat.square().sum() + img.sum(), w)
        return img.detach(), feat.detach(), grad

    plain = run()
    with ops.nvidia_form():
        assert ops.in_nvidia_form()
        nvidia = run()
    assert not ops.in_nvidia_form()
    for a, b in zip(plain, nvidia):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


def test_nvidia_form_stays_in_its_thread_and_out_of_exports():
    """The switch is a context variable: another thread does not see it, and an ONNX export keeps its own forms."""
    import threading

    seen = []
    with ops.nvidia_form():
        t = threading.Thread(target=lambda: seen.append(ops.in_nvidia_form()))
        t.start()
        t.join()
        assert ops.in_nvidia_form() and seen == [False]

        class Probe(torch.nn.Module):
            def forward(self, x):
                seen.append(ops.in_nvidia_form())
                return x + 1

        import io

        torch.onnx.export(Probe(), (torch.zeros(2),), io.BytesIO(), dynamo=False)
    assert seen == [False, False]
