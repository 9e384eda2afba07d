"""What a checkpoint may declare (``limits.py``), values that would make every image wrong, bounded messages."""

from __future__ import annotations

import dataclasses
import math
import pickle
import time

import numpy as np
import pytest
import torch
from hostile_files import native_bytes, shared_tuple_pickle, torch_save_bytes
from nvidia_fakes import dump, network_dict, random_generator, tf_pickle_tuple
from test_checkpoints_rosinality import to_rosinality

from dragnb.checkpoints import load_generator
from dragnb.checkpoints.errors import CheckpointError, InvalidValueError, LimitExceededError, brief
from dragnb.checkpoints.limits import RULES, checked_config, expected_shapes
from dragnb.checkpoints.pickle_scan import MAX_DEPTH, scan_pickle
from dragnb.stylegan.networks import Generator, GeneratorConfig

torch.set_num_threads(1)

CONFIGS = [
    dict(z_dim=8, w_dim=16, img_resolution=16, channel_base=128, channel_max=16),
    dict(z_dim=8, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, architecture="resnet",
         mapping_layers=3, mapping_layer_features=24),
    dict(z_dim=8, w_dim=8, img_resolution=16, img_width=8, channel_base=64, channel_max=8, architecture="orig"),
    dict(z_dim=4, w_dim=8, c_dim=5, mapping_embed_features=6, img_resolution=8, channel_base=64, channel_max=8,
         img_channels=1, mapping_layers=1),
    dict(z_dim=4, w_dim=8, img_resolution=4, img_width=1, channel_base=32, channel_max=8),
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_expected_shapes_are_the_generators(kw):
    cfg = GeneratorConfig(**kw)
    actual = {k: tuple(v.shape) for k, v in Generator(cfg).state_dict().items()}
    assert expected_shapes(cfg) == actual


def test_every_config_field_has_a_rule():
    """A field added to GeneratorConfig must get a rule here, or files can only hold its default."""
    assert {f.name for f in dataclasses.fields(GeneratorConfig)} == set(RULES)


@pytest.mark.parametrize("change, error", [
    (dict(img_resolution=8192), LimitExceededError),
    (dict(img_resolution=48), LimitExceededError),
    (dict(img_width=3), LimitExceededError),
    (dict(img_width=2), LimitExceededError),  # 16 / 2: an aspect ratio of 8
    (dict(z_dim=0), LimitExceededError),
    (dict(w_dim=4096), LimitExceededError),
    (dict(c_dim=-1), LimitExceededError),
    (dict(channel_max=4096), LimitExceededError),
    (dict(channel_base=8, channel_max=16), LimitExceededError),  # 0 channels at 16 px
    (dict(mapping_layers=33), LimitExceededError),
    (dict(z_dim=16.0), CheckpointError),
    (dict(z_dim="16"), CheckpointError),
    (dict(normalize_z=1), CheckpointError),
    (dict(architecture=["skip"]), CheckpointError),
    (dict(mapping_lr_multiplier=float("nan")), InvalidValueError),
    (dict(mapping_lr_multiplier=float("inf")), InvalidValueError),
    (dict(mapping_lr_multiplier=0.0), InvalidValueError),
    (dict(conv_clamp=-1.0), InvalidValueError),
    (dict(conv_clamp=0), InvalidValueError),
    (dict(conv_clamp=float("nan")), InvalidValueError),
    (dict(surprise=1), CheckpointError),
])
def test_config_limits(change, error):
    d = {**GeneratorConfig(**CONFIGS[0]).to_dict(), **change}
    with pytest.raises(error) as e:
        checked_config(d, "model.safetensors")
    assert "model.safetensors" in str(e.value)


def test_real_sizes_are_accepted():
    for kw in (dict(img_resolution=1024), dict(img_resolution=512, img_width=256, conv_clamp=256),
               dict(img_resolution=32, c_dim=1000, channel_base=16384), dict(img_resolution=4096, channel_max=2048,
                                                                             channel_base=2**23)):
        cfg = checked_config(GeneratorConfig(**kw).to_dict(), "x")
        assert cfg == GeneratorConfig(**kw)


# ----------------------------------------------------------------------------
# Values that would silently make every image wrong


def _with(G, name, value):
    G = random_generator()
    with torch.no_grad():
        G.state_dict()[name].view(-1)[0] = value
    return G


@pytest.mark.parametrize("change", [
    dict(mapping_lr_multiplier=float("nan")), dict(mapping_lr_multiplier=float("inf")),
    dict(mapping_lr_multiplier=-0.01), dict(conv_clamp=-256.0), dict(conv_clamp=float("nan")),
    dict(conv_clamp=float("inf")),
])
def test_native_absurd_scalars_are_refused(tmp_path, change):
    p = tmp_path / "g.safetensors"
    p.write_bytes(native_bytes(random_generator(), **change))
    with pytest.raises(InvalidValueError, match=str(p)):
        load_generator(p)


@pytest.mark.parametrize("name", ["mapping.w_avg", "synthesis.b8.conv0.weight", "synthesis.b4.const",
                                  "mapping.fc0.bias"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_in_every_format(tmp_path, name, value):
    G = _with(random_generator(), name, value)
    files = {
        "native.safetensors": native_bytes(G),
        "nvidia.pkl": dump(network_dict(G), 4),
        "tf.pkl": dump(tf_pickle_tuple(G), 4),
        "plain.pt": torch_save_bytes(G.state_dict()),
        "ros.pt": torch_save_bytes({"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg.clone()}),
    }
    for fname, data in files.items():
        if fname == "ros.pt" and name == "mapping.w_avg":
            continue  # rosinality keeps w_avg in latent_avg: tested below
        p = tmp_path / fname
        p.write_bytes(data)
        with pytest.raises(InvalidValueError, match="NaN or infinite"):
            load_generator(p)


def test_rosinality_nan_latent_avg_is_refused(tmp_path):
    G = random_generator()
    avg = G.mapping.w_avg.clone()
    avg[3] = float("nan")
    p = tmp_path / "ros.pt"
    p.write_bytes(torch_save_bytes({"g_ema": to_rosinality(G), "latent_avg": avg}))
    with pytest.raises(InvalidValueError, match="w_avg"):
        load_generator(p)


@pytest.mark.parametrize("attr, value", [("bias_gain", float("nan")), ("bias_gain", float("inf")),
                                         ("bias_gain", 0.0), ("conv_clamp", -1.0), ("conv_clamp", float("nan"))])
def test_nvidia_absurd_attributes_are_refused(tmp_path, attr, value):
    d = network_dict(random_generator())
    syn = d["G_ema"].state["_modules"]["synthesis"].state["_modules"]
    module = (d["G_ema"].state["_modules"]["mapping"].state["_modules"]["fc0"] if attr == "bias_gain"
              else syn["b8"].state["_modules"]["conv0"])
    module.state[attr] = value
    if attr == "conv_clamp":
        for b in syn.values():
            for m in b.state["_modules"].values():
                m.state["conv_clamp"] = value
    p = tmp_path / "net.pkl"
    p.write_bytes(dump(d, 4))
    with pytest.raises(InvalidValueError, match=str(p)):
        load_generator(p)


# ----------------------------------------------------------------------------
# Bounded messages and pickles


def test_brief_is_bounded_whatever_the_value():
    nested = pickle.loads(shared_tuple_pickle(40, 4))  # 4 ** 40 tuples unfolded
    t = time.perf_counter()
    for value in (nested, {"k": [nested] * 10**6}, [nested, {1: nested}], 10**100000, "x" * 10**7, b"y" * 10**7,
                  [[[[[[]]]]]] * 1000):
        text = brief(value)
        assert len(text) < 2000, text[:100]
    assert time.perf_counter() - t < 1.0
    assert brief({"a": 1, "b": [1, 2]}) == "{'a': 1, 'b': [1, 2]}"
    assert brief((1,)) == "(1,)" and brief(math.pi) == repr(math.pi) and brief(np.float32) == "<type>"


def test_real_pickles_are_far_from_the_scan_limits():
    """Genuine structures nest about 30 deep: MAX_DEPTH leaves a wide margin."""
    import io

    from dragnb.checkpoints import pickle_scan

    depths = []
    real = pickle_scan._combine

    def spy(items):
        node = real(items)
        depths.append(node.depth)
        return node

    pickle_scan._combine = spy
    try:
        for data in (dump(network_dict(random_generator(architecture="resnet", c_dim=3)), 2),
                     dump(tf_pickle_tuple(random_generator()), 4)):
            scan_pickle(io.BytesIO(data), "x")
    finally:
        pickle_scan._combine = real
    assert 10 < max(depths) < MAX_DEPTH // 4
