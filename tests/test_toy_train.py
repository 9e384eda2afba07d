"""The toyfaces training script: checkpoints are atomic and a resumed run equals an uninterrupted one."""

from pathlib import Path

import pytest
import torch

from dragnb.toy import train as T

torch.set_num_threads(1)

TINY = dict(resolution=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=8, batch=2,
            warmup_kimg=0.002, decay_start=0.5, total_kimg=0.016, eval_seeds=2, ckpt_minutes=100.0)


def _weights(out):
    state = T.load_checkpoint(T.latest_checkpoint(out))
    return state["step"], state["G"], state["G_ema"]


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    T.train(tmp_path / "a", 5, T.TrainConfig(**TINY), log=lambda s: None)
    T.train(tmp_path / "b", 5, T.TrainConfig(**TINY), max_steps=3, log=lambda s: None)
    assert _weights(tmp_path / "b")[0] == 3
    T.train(tmp_path / "b", 5, log=lambda s: None)  # resumes with the saved configuration
    (sa, ga, ea), (sb, gb, eb) = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert sa == sb == 8
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k
        assert torch.equal(ea[k], eb[k]), k
    rows = (tmp_path / "b" / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_exported_generator_loads(tmp_path):
    import dragnb

    T.train(tmp_path, 5, T.TrainConfig(**TINY), max_steps=1, log=lambda s: None)
    G = T.generator_from_checkpoint(T.latest_checkpoint(tmp_path))
    dragnb.save_generator(G, tmp_path / "toy.safetensors")
    H = dragnb.load_generator(tmp_path / "toy.safetensors")
    z = torch.randn(2, T.faces.NUM_PARAMS)
    assert torch.equal(G(z), H(z))


def test_architecture_is_a_training_setting(tmp_path):
    """--architecture orig trains a generator whose only toRGB is the last block's; old checkpoints (without
    the field) resume as "skip"."""
    T.train(tmp_path / "o", 5, T.TrainConfig(**TINY, architecture="orig"), max_steps=1, log=lambda s: None)
    G = T.generator_from_checkpoint(T.latest_checkpoint(tmp_path / "o"))
    assert G.cfg.architecture == "orig"
    state = T.load_checkpoint(T.latest_checkpoint(tmp_path / "o"))
    state["train_config"].pop("architecture")
    assert T.TrainConfig(**state["train_config"]).architecture == "skip"


def test_init_from_starts_a_fine_tune_from_another_runs_weights(tmp_path):
    """--init-from copies the source run's EMA weights into a new run (step 0, fresh optimiser); a different
    architecture is refused with a clear error and writes no checkpoint."""
    import pytest

    T.train(tmp_path / "src", 5, T.TrainConfig(**TINY), max_steps=2, log=lambda s: None)
    src_ema = T.load_checkpoint(T.latest_checkpoint(tmp_path / "src"))["G_ema"]
    T.train(tmp_path / "ft", 5, T.TrainConfig(**TINY, init_from=str(tmp_path / "src"), lr=0.0),
            max_steps=1, log=lambda s: None)
    state = T.load_checkpoint(T.latest_checkpoint(tmp_path / "ft"))
    assert state["step"] == 1 and state["train_config"]["init_from"] == str(tmp_path / "src")
    for k in src_ema:  # lr 0: the weights are exactly the source's EMA weights
        assert torch.equal(state["G"][k].float(), src_ema[k].float()) or "w_avg" in k, k
    with pytest.raises(ValueError, match="generator differs"):
        T.train(tmp_path / "bad", 5, T.TrainConfig(**{**TINY, "channel_max": 4}, init_from=str(tmp_path / "src")),
                log=lambda s: None)
    assert not list((tmp_path / "bad").glob("ckpt-*.pt"))


def test_init_from_a_lower_resolution_grows_the_generator(tmp_path):
    """--init-from a 16 px run into a 32 px configuration: mapping and blocks 4-16 are copied, the new block's
    toRGB starts at zero, so the grown generator first draws the old image upsampled, exactly."""
    from dragnb.stylegan import ops

    T.train(tmp_path / "src", 5, T.TrainConfig(**TINY), max_steps=2, log=lambda s: None)
    small = T.generator_from_checkpoint(T.latest_checkpoint(tmp_path / "src"))
    T.train(tmp_path / "big", 5, T.TrainConfig(**{**TINY, "resolution": 32, "lr": 0.0},
                                               init_from=str(tmp_path / "src")), max_steps=1, log=lambda s: None)
    big = T.generator_from_checkpoint(T.latest_checkpoint(tmp_path / "big"), ema=False)
    assert big.img_resolution == 32
    z = torch.randn(3, T.faces.NUM_PARAMS)
    with torch.no_grad():
        want = ops.upsample2d(small(z, noise_mode="const"), big.synthesis.block(big.num_blocks - 1).resample_filter)
        got = big(z, noise_mode="const")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


class _Payload:
    """Unpickling this would run code (it writes a file): a checkpoint must never be unpickled that way."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_a_checkpoint_runs_no_code(tmp_path):
    """Checkpoints are read with weights_only: a file holding an object that would execute on unpickling is
    refused, and nothing runs."""
    import pickle

    marker = tmp_path / "ran.txt"
    bad = tmp_path / "ckpt-00000001.pt"
    torch.save({"step": 1, "payload": _Payload(marker)}, bad)
    with pytest.raises(pickle.UnpicklingError):
        T.load_checkpoint(bad)
    with pytest.raises(pickle.UnpicklingError):
        T.generator_from_checkpoint(bad)
    assert not marker.exists()
