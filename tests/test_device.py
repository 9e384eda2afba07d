"""The ``device`` setting on a CPU-only machine: "auto" falls back to the CPU, "cpu" works, and every unknown or
unavailable device is a clear ValueError (CLI: exit 2, one line) that changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dragnb import devices
from dragnb.checkpoints import load_generator
from dragnb.cli import main
from dragnb.session import DragSession

DRAG = ((36, 30), (44, 30))  # (x, y) handle -> target on the 64 px tiny generator


def fingerprint(s: DragSession):
    """Everything a refused call must leave unchanged."""
    return (s.handle_points, s.target_points, s.ws.tobytes(), s.params, s.num_steps, len(s._history), s.seed,
            s.backend_name)

# Devices this machine lacks (on a GPU machine "cuda" exists, so it is left out there) and spellings never valid.
MISSING = [d for d in ("cuda", "cuda:3", "mps")
           if not (d.startswith("cuda") and torch.cuda.device_count() > int(d.partition(":")[2] or 0))
           and not (d == "mps" and torch.backends.mps.is_available())]
BAD = [*MISSING, "tpu", "", 5, None, "cuda:x", "CPU"]



def test_auto_is_cpu_without_a_gpu():
    if not torch.cuda.is_available():
        assert devices.resolve_device("auto") == "cpu"
        assert devices.available_devices() == ["auto", "cpu"]
    assert devices.resolve_device("cpu") == "cpu"


def test_auto_never_picks_a_gpu_that_fails(monkeypatch):
    """A visible GPU whose first tensor op fails (driver / toolkit mismatch) is skipped by "auto" and refused
    by name."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices, "_works", lambda name: None if name == "cpu" else "RuntimeError: broken driver")
    assert devices.resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="broken driver"):
        devices.resolve_device("cuda")


@pytest.mark.parametrize("device", BAD)
def test_bad_device_is_a_clear_error(device):
    with pytest.raises(ValueError, match="device"):
        devices.resolve_device(device)


@pytest.mark.parametrize("device", BAD)
def test_bad_device_loads_nothing(tiny_model_path, device):
    with pytest.raises(ValueError, match="device"):
        load_generator(tiny_model_path, device=device)


@pytest.mark.parametrize("device", BAD)
def test_bad_device_makes_no_session_and_moves_nothing(tiny_generator, device):
    before = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    with pytest.raises(ValueError, match="device"):
        DragSession(tiny_generator, seed=1, device=device)
    assert all(v.device.type == "cpu" for v in tiny_generator.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in tiny_generator.state_dict().items())


@pytest.fixture(scope="module")
def dragged(tiny_generator):
    s = DragSession(tiny_generator, seed=4, device="cpu", tolerance=0.5)
    s.add_point(handle=DRAG[0], target=DRAG[1])
    for _ in range(2):
        s.step()
    return s


@pytest.mark.parametrize("device", BAD)
def test_set_device_refused_changes_nothing(dragged, device):
    before = fingerprint(dragged)
    with pytest.raises(ValueError, match="device"):
        dragged.set_device(device)
    assert fingerprint(dragged) == before and dragged.device == "cpu"


def test_explicit_cpu_and_set_device_continue_the_drag(tiny_generator, tiny_model_path):
    assert next(load_generator(tiny_model_path, device="cpu").parameters()).device.type == "cpu"

    def fresh():
        s = DragSession(tiny_generator, seed=4, device="cpu", tolerance=0.5)
        s.add_point(handle=DRAG[0], target=DRAG[1])
        return s

    a, b = fresh(), fresh()
    ref = [a.step() for _ in range(4)]
    got = [b.step() for _ in range(2)]
    b.set_device("cpu")  # the same device: nothing to move, the drag goes on
    b.set_device("auto" if not torch.cuda.is_available() else "cpu")
    got += [b.step() for _ in range(2)]
    for r, q in zip(ref, got):
        assert (r.loss, r.handle_points) == (q.loss, q.handle_points)
    assert b.device == "cpu"


def test_saved_session_loads_on_cpu_and_continues_identically(tiny_model_path, tmp_path):
    def fresh():
        s = DragSession(tiny_model_path, seed=4, tolerance=0.5, device="cpu")
        s.add_point(handle=DRAG[0], target=DRAG[1])
        return s

    a = fresh()
    ref = [a.step() for _ in range(6)]
    b = fresh()
    for _ in range(3):
        b.step()
    b.save(tmp_path / "saved")
    for bad in ("tpu", *MISSING):
        with pytest.raises(ValueError, match="device"):  # the caller's error, not a damaged file
            DragSession.load(tmp_path / "saved", device=bad)
    c = DragSession.load(tmp_path / "saved", device="cpu")
    assert c.device == "cpu"
    for r, q in zip(ref[3:], [c.step() for _ in range(3)]):
        assert (r.step, r.loss, r.handle_points, r.distance) == (q.step, q.loss, q.handle_points, q.distance)
        np.testing.assert_array_equal(r.image, q.image)


@pytest.mark.parametrize("device", ["tpu", "", *MISSING])
@pytest.mark.parametrize("command", ["generate", "drag", "bench"])
def test_cli_bad_device_exits_2_with_one_line(tiny_model_path, tmp_path, capsys, command, device):
    args = ["--model", str(tiny_model_path), "--device", device]
    if command == "generate":
        args += ["--out", str(tmp_path / "x.png")]
    elif command == "drag":
        args += ["--points", "36,30->44,30", "--steps", "1", "--out", str(tmp_path / "run")]
    else:
        args += ["--json", str(tmp_path / "run" / "bench.json")]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "run").exists()


def test_a_device_move_carries_the_drag_over(tiny_generator, monkeypatch):
    """set_device rebuilds the PyTorch back-end from the old one's numpy state: the drag continues as if never
    moved. (On a CPU-only machine the move is cpu -> cpu, forced past the "same device" shortcut.)"""
    def fresh():
        s = DragSession(tiny_generator, seed=4, device="cpu", tolerance=0.5)
        s.add_point(handle=DRAG[0], target=DRAG[1])
        return s

    a, b = fresh(), fresh()
    ref = [a.step() for _ in range(5)]
    got = [b.step() for _ in range(2)]
    old_backend = b._backend
    with monkeypatch.context() as m:
        m.setattr(DragSession, "device", property(lambda s: "elsewhere"))
        b.set_device("cpu")
    assert b._backend is not old_backend and b.device == "cpu"
    got += [b.step() for _ in range(3)]
    for r, q in zip(ref, got):
        assert (r.loss, r.handle_points, r.distance) == (q.loss, q.handle_points, q.distance)
        np.testing.assert_array_equal(r.image, q.image)
    np.testing.assert_array_equal(a.ws, b.ws)
