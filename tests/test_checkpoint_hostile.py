"""Hostile checkpoint files: tiny files that claim huge generators, decompression bombs, pickles whose
structure makes printing or hashing them explode. Each must be refused with a ``CheckpointError`` that names
the file, quickly and without allocating much; they are loaded in a memory-capped child process
(``hostile_runner``), so a regression fails the test instead of the machine."""

from __future__ import annotations

import pickle

import pytest
import torch
from hostile_files import (
    big_declared_bytes_pickle,
    colliding_keys_pickle,
    deep_tuple_key_pickle,
    huge_generator_state_dict,
    many_containers_header,
    many_members_zip,
    many_objects_pickle,
    memo_index_pickle,
    native_config_only,
    nvidia_pickle_of,
    shared_tuple_pickle,
    tensors_safetensors,
    torch_save_bytes,
    torch_zip_declaring_storage,
    zip_bomb_torch_file,
)
from hostile_runner import load_in_child, problems
from nvidia_fakes import Call, dump, fake_global, network_dict, random_generator

torch.set_num_threads(1)


GROUPS: dict = {}  # group name -> function building {file name: bytes}


def group(fn):
    GROUPS[fn.__name__.removeprefix("_")] = fn
    return fn


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, list[dict]]:
    """Every group's files loaded in one capped child (one torch import for all): {group: results}."""
    folder = tmp_path_factory.mktemp("hostile")
    paths, owners = [], []
    for name, build in GROUPS.items():
        for fname, data in build().items():
            p = folder / f"{name}--{fname}"
            p.write_bytes(data)
            paths.append(p)
            owners.append(name)
    results: dict[str, list[dict]] = {name: [] for name in GROUPS}
    for owner, r in zip(owners, load_in_child(paths, time_cap=20.0)):
        results[owner].append(r)
    return results


def _check(results: list[dict], *, max_growth_mb: float = 300) -> list[dict]:
    bad = problems(results, max_growth_mb=max_growth_mb)
    assert not bad, "\n".join(bad)
    assert [r["status"] for r in results] == ["refused"] * len(results), results
    return results


@group
def _native_absurd_sizes():
    return {
        "mapping_layers.safetensors": native_config_only(mapping_layers=10**6),
        "z_dim.safetensors": native_config_only(z_dim=10**10),
        "channels.safetensors": native_config_only(channel_max=10**6, channel_base=10**9),
        "resolution_2_30.safetensors": native_config_only(img_resolution=2**30),
        "resolution_2_14.safetensors": native_config_only(img_resolution=2**14, channel_base=2**14, channel_max=1),
        "negative.safetensors": native_config_only(w_dim=-5),
        "float_dim.safetensors": native_config_only(z_dim=1.5),
        "bool_dim.safetensors": native_config_only(mapping_layers=True),
        "not_pow2.safetensors": native_config_only(img_resolution=100),
        "zero_channels.safetensors": native_config_only(channel_base=1),
        "img_channels.safetensors": native_config_only(img_channels=10**6),
        "c_dim.safetensors": native_config_only(c_dim=10**9),
        "hidden.safetensors": native_config_only(mapping_layer_features=10**9),
        "config_list.safetensors": tensors_safetensors({}, {"format": "dragnb-generator", "format_version": "1",
                                                            "config": "[1, 2, 3]"}),
    }


def test_native_files_declaring_absurd_sizes_are_refused_before_allocating(hostile):
    _check(hostile["native_absurd_sizes"])


def _with_noise_inputs(sd: dict) -> dict:
    """``sd`` plus the noise strengths NVIDIA's loader requires of every conv layer."""
    return {**sd, **{k.replace(".weight", ".noise_strength"): torch.zeros(()) for k in sd if ".conv1.weight" in k}}


@group
def _huge_generators():
    files = {
        "huge_64k.pt": torch_save_bytes(huge_generator_state_dict(65536)),
        "huge_16k.pt": torch_save_bytes(huge_generator_state_dict(16384)),
        "huge_16k_legacy.pt": torch_save_bytes(huge_generator_state_dict(16384), zipfile_format=False),
        "huge_16k.safetensors": tensors_safetensors(huge_generator_state_dict(16384)),
        # Within the resolution limit: refused because the tensors are not those of the config they imply
        # (no noise buffers), before the 4096 px generator's 180 MB of noise is allocated.
        "huge_4k.pt": torch_save_bytes(huge_generator_state_dict(4096)),
        "huge_4k.safetensors": tensors_safetensors(huge_generator_state_dict(4096)),
        "huge_16k.pkl": nvidia_pickle_of(_with_noise_inputs(huge_generator_state_dict(16384))),
        "huge_4k.pkl": nvidia_pickle_of(_with_noise_inputs(huge_generator_state_dict(4096))),
        "huge_16k_ros.pt": torch_save_bytes({"g_ema": {"style.1.weight": torch.zeros(4, 4)}}),  # control: small
        # no elements, but a dimension of 2**40 that once sized the w_avg made up for it
        "empty_but_wide_ros.pt": torch_save_bytes({"g_ema": {"style.1.weight": torch.zeros(2**40, 0)}}),
    }
    for name, data in files.items():
        assert len(data) < 20_000, name
    return files


def test_small_torch_and_safetensors_files_implying_huge_generators_are_refused(hostile):
    _check(hostile["huge_generators"], max_growth_mb=50)


@group
def _zip_bombs():
    small = torch_save_bytes({"g_ema": {"style.1.weight": torch.zeros(64, 64)}})
    bomb = zip_bomb_torch_file(small, 1536)  # the member lies about the storage's size
    consistent = torch_zip_declaring_storage(1536)  # record and member agree: only the ratio gives it away
    assert len(bomb) < 3_000_000 and len(consistent) < 3_000_000
    return {"bomb.pt": bomb, "consistent_bomb.pt": consistent}


def test_zip_members_inflating_to_gigabytes_are_refused_before_reading(hostile):
    _check(hostile["zip_bombs"])


@group
def _unpickler_bombs():
    return {
        "memo.pkl": memo_index_pickle(2**28),  # an 11-byte file that sized the memo table to 2 GB
        "binbytes.pkl": big_declared_bytes_pickle(2**40),
        "deep_key.pkl": deep_tuple_key_pickle(300_000),  # hashing the key overflowed the C stack
        "wide_key.pkl": shared_tuple_pickle(14, 4, wrap=lambda t: {t: 1}),  # hashing it visits 4 ** 14 tuples
        "colliding_keys.pkl": colliding_keys_pickle(100_000),  # 1.3 MB, minutes of dict inserts
        "colliding_keys_ordereddict.pkl": colliding_keys_pickle(60_000, via_constructor=True),
    }


def test_pickles_that_make_the_unpickler_allocate_are_refused(hostile):
    _check(hostile["unpickler_bombs"])


@group
def _structure_outgrowing_size():
    """A few MB of pickle opcodes, JSON or zip directory entries that would parse into hundreds of MB."""
    return {
        "dicts.pkl": many_objects_pickle(5_000_000),
        "dicts.safetensors": many_containers_header(15 << 20),
        "members.pt": b"PK\x03\x04" + many_members_zip(200_000)[4:],
    }


def test_files_whose_structure_outgrows_their_size_are_refused(hostile):
    _check(hostile["structure_outgrowing_size"], max_growth_mb=60)


def _persid_pickle(depth, width):
    """A protocol-2 pickle whose persistent id is a shared nested tuple (printed by the refusal)."""
    return shared_tuple_pickle(depth, width)[:-1].replace(b"\x80\x04", b"\x80\x02", 1) + b"Q."


@group
def _unbounded_messages():
    dtype = fake_global("numpy", "dtype")
    nested = pickle.loads(shared_tuple_pickle(16, 4))  # 4 ** 16 tuples when printed, 200 bytes when pickled
    d = network_dict(random_generator())
    d["G_ema"].state["_modules"]["mapping"].state["_modules"]["fc0"].state["activation"] = nested
    hint = network_dict(random_generator())
    hint["G_ema"].state["z_dim"] = nested
    return {
        "persid.pkl": _persid_pickle(16, 4),
        "dtype.pkl": dump({"G_ema": Call(dtype, nested)}, 4),
        "activation.pkl": dump(d, 4),
        "hint.pkl": dump(hint, 4),
        "no_g_ema.pkl": dump({"G": [nested], ("a" * 10**6): 1}, 4),
    }


def test_refusals_never_print_attacker_data_unbounded(hostile):
    for r in _check(hostile["unbounded_messages"]):
        assert len(r["message"]) < 1000 and r["seconds"] < 5, r


def test_bounded_refusal_in_process(tmp_path):
    """The same kind of refusal in this process, for the error type and message (a cheap case only)."""
    from dragnb.checkpoints import load_generator
    from dragnb.checkpoints.errors import CheckpointError

    p = tmp_path / "persid.pkl"
    p.write_bytes(_persid_pickle(12, 4))
    with pytest.raises(CheckpointError) as e:
        load_generator(p)
    assert str(p) in str(e.value) and len(str(e.value)) < 1000
