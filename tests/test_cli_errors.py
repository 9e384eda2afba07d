"""User errors of ``dragnb generate`` / ``convert``: exit status 2 and one line on stderr, outputs checked before
any work (no model is loaded for an output that cannot be written)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hostile_files import deep_tuple_key_pickle
from nvidia_fakes import dump, network_dict, random_generator
from test_checkpoint_contract import CASES

import dragnb.checkpoints.convert as convert
import dragnb.drag.session as session
from dragnb.cli import main


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("dragnb ") and "error:" in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command starts loading a model (its outputs should have been refused first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(session.DragSession, "__init__", refuse)
    monkeypatch.setattr(convert, "sniff", refuse)
    monkeypatch.setattr(convert, "load_any", refuse)


@pytest.fixture
def pickle_file(tmp_path):
    p = tmp_path / "net.pkl"
    p.write_bytes(dump(network_dict(random_generator()), 4))
    return p


def test_convert_of_a_directory(tmp_path, capsys):
    err = _one_line_error(capsys, main(["convert", str(tmp_path), str(tmp_path / "o.safetensors"), "--no-progress"]))
    assert "not a regular file" in err


def test_convert_of_a_missing_file(tmp_path, capsys):
    _one_line_error(capsys, main(["convert", str(tmp_path / "no.pkl"), str(tmp_path / "o.safetensors")]))


@pytest.mark.parametrize("name, data", [
    ("deep.pkl", lambda: deep_tuple_key_pickle(300_000)),
    ("overlap.safetensors", CASES["SafetensorError-overlapping-offsets"]),
    ("garbage.pt", lambda: b"PK\x03\x04" + bytes(64)),
])
def test_convert_of_hostile_files(tmp_path, capsys, name, data):
    src = tmp_path / name
    src.write_bytes(data())
    out = tmp_path / "o.safetensors"
    err = _one_line_error(capsys, main(["convert", str(src), str(out), "--no-progress"]))
    assert str(src) in err and not out.exists()


@pytest.mark.parametrize("out", ["/dev/null/x.png", "{tmp}", "{tmp}/file.txt/x.png"])
def test_generate_unwritable_output_is_refused_before_loading(tmp_path, capsys, no_model_load, out):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    _one_line_error(capsys, main(["generate", "--out", out.format(tmp=tmp_path)]))


@pytest.mark.parametrize("out", ["{tmp}", "{tmp}/file.txt/o.safetensors", "/dev/null/o.safetensors",
                                 "{tmp}/o.pkl"])
def test_convert_unwritable_output_is_refused_before_loading(tmp_path, capsys, no_model_load, pickle_file, out):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    _one_line_error(capsys, main(["convert", str(pickle_file), out.format(tmp=tmp_path), "--no-progress"]))


def test_generate_creates_a_missing_output_folder(tiny_model_path, tmp_path, capsys):
    assert main(["generate", "--model", str(tiny_model_path), "--out", str(tmp_path / "a" / "b" / "g.png")]) == 0
    assert (tmp_path / "a" / "b" / "g.png").is_file()


def test_generate_with_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, main(["generate", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "g.png")]))


def test_multi_line_errors_are_cut_to_their_first_line(tmp_path, capsys, monkeypatch):
    def explode(*args, **kwargs):
        raise ValueError("the first line\nException raised from c10::foo (most recent call first):\nframe #0: ...")

    monkeypatch.setattr(session.DragSession, "__init__", explode)
    err = _one_line_error(capsys, main(["generate", "--out", str(tmp_path / "g.png")]))
    assert "the first line" in err and "frame" not in err


def test_entry_point_prints_no_traceback(tmp_path):
    src = tmp_path / "deep.pkl"
    src.write_bytes(deep_tuple_key_pickle(300_000))
    r = subprocess.run([sys.executable, "-m", "dragnb", "convert", str(src), str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("dragnb convert: error:"), r.stderr
