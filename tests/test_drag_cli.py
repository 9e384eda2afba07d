"""`dragnb drag` / `dragnb generate` end to end on the tiny model file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from dragnb.cli import PARSERS, main, parse_points
from dragnb.session import DragSession


def test_drag_end_to_end(tiny_model_path, tmp_path, capsys):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :16] = 255
    Image.fromarray(mask).save(tmp_path / "fixed.png")
    out = tmp_path / "run"
    rc = main(["drag", "--model", str(tiny_model_path), "--seed", "0", "--points", "36,30->44,30; 20,44 -> 20,38",
               "--mask", str(tmp_path / "fixed.png"), "--steps", "40", "--mp4", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "steps:" in printed and "ms/step" in printed and "point 1:" in printed
    for name in ("final.png", "drag.gif", "drag.mp4", "session.json", "session.npz"):
        assert (out / name).is_file(), name
    assert np.asarray(Image.open(out / "final.png")).shape == (64, 64, 3)
    n = int(printed.split("steps: ")[1].split()[0])
    assert 1 <= n <= 40 and iio.imread(out / "drag.gif", index=None).shape[0] == n
    doc = json.loads((out / "session.json").read_text())
    assert doc["seed"] == 0 and len(doc["current"]["targets"]) == 2
    s = DragSession.load(out)
    assert s.mask[:, :16].all() and not s.mask[:, 16:].any()
    assert s.num_steps == n


def test_generate(tiny_model_path, tiny_generator, tmp_path):
    assert main(["generate", "--model", str(tiny_model_path), "--seed", "7", "--out", str(tmp_path / "g.png")]) == 0
    img = np.asarray(Image.open(tmp_path / "g.png"))
    np.testing.assert_array_equal(img, DragSession(tiny_generator, seed=7).image)


@pytest.mark.parametrize("points", ["36,30", "a,b->1,2", "1,2,3->4,5", ";", "1,2->1,2"])
def test_bad_points_exit_2(tiny_model_path, tmp_path, capsys, points):
    rc = main(["drag", "--model", str(tiny_model_path), "--points", points, "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _bomb_png(path, side=30000):
    """A tiny PNG whose header declares side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + b"\0" * side
    body = zlib.compress(row * 64)  # the data stops early: only the header matters here
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("make_args", [
    lambda t: ["--model", str(t)],                                         # a folder that is no artifact set
    lambda t: ["--mask", str(t)],                                          # a directory as the mask
    lambda t: ["--mask", str((t / "m.txt").write_text("no image") and t / "m.txt")],
    lambda t: ["--mask", str(_bomb_png(t / "bomb.png"))],
    lambda t: ["--out", str((t / "file").write_text("x") and t / "file" / "sub")],  # under a file
    lambda t: ["--out", str((t / "file2").write_text("x") and t / "file2")],        # a file
    lambda t: ["--steps", "-3"],
    lambda t: ["--seed", "-5"],
])
def test_user_errors_exit_2_with_one_line_before_any_work(tiny_model_path, tmp_path, capfd, make_args):
    args = ["drag", "--model", str(tiny_model_path), "--points", "36,30->44,30", "--out", str(tmp_path / "run")]
    extra = make_args(tmp_path)
    if extra[0] == "--out":
        args = args[:-2]
    rc = main(args + extra)
    err = capfd.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dragnb drag: error:"), err
    assert not (tmp_path / "run").exists()


def test_parse_points_and_hooks():
    assert parse_points(" 1,2 -> 3.5,4 ;5,6->7,8; ") == [((1.0, 2.0), (3.5, 4.0)), ((5.0, 6.0), (7.0, 8.0))]
    assert [f.__name__ for f in PARSERS][:2] == ["add_generate_parser", "add_drag_parser"]
    assert {"add_convert_parser", "add_download_parser"} <= {f.__name__ for f in PARSERS}


def test_python_m_dragnb(tiny_model_path, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "dragnb", "generate", "--model", str(tiny_model_path),
                        "--out", str(tmp_path / "m.png")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.png").is_file()


def test_drag_in_official_mode(tmp_path, capsys):
    """--compat official on the official-code test network: the first steps of the recorded drag A."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    ref = np.load(data / "official_drags_small128.npz")
    out = tmp_path / "run"
    rc = main(["drag", "--model", str(data / "official_small128.safetensors"), "--compat", "official",
               "--points", "60,50->72,59", "--steps", "5", "--out", str(out)])
    assert rc == 0 and "official mode" in capsys.readouterr().out
    s = DragSession.load(out)
    assert s.params["compat"] == "official" and s.params["lr"] == 1e-3
    np.testing.assert_array_equal(np.array(s.handle_points)[:, ::-1], ref["A_handles_after"][4])


def test_official_mode_refusals_exit_2(tiny_model_path, tmp_path, capsys):
    args = ["drag", "--model", str(tiny_model_path), "--points", "36,30->44,30", "--compat", "official",
            "--out", str(tmp_path / "x")]
    assert main(args) == 2 and "feature block 5" in capsys.readouterr().err  # 64 px: blocks 0-4
    args += ["--feature-block", "3"]
    assert main(args) == 2 and "r1" in capsys.readouterr().err  # the official r1 rounds to 0 at 64 px
    assert not (tmp_path / "x").exists()
    assert main(args + ["--r1", "1", "--steps", "2"]) == 0
    assert DragSession.load(tmp_path / "x").params["compat"] == "official"


def test_class_of_a_conditional_model(tmp_path, capsys):
    from conftest import make_tiny_generator

    from dragnb import save_generator

    G = make_tiny_generator(c_dim=3)
    path = save_generator(G, tmp_path / "cond.safetensors")
    assert main(["generate", "--model", str(path), "--seed", "4", "--class", "2", "--out", str(tmp_path / "c.png")
                 ]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), DragSession(G, seed=4, c=2).image)
    assert main(["drag", "--model", str(path), "--class", "1", "--points", "36,30->44,30", "--steps", "2",
                 "--out", str(tmp_path / "run")]) == 0
    assert DragSession.load(tmp_path / "run").class_index == 1
    assert main(["generate", "--model", str(path), "--class", "3", "--out", str(tmp_path / "d.png")]) == 2
    assert "class index" in capsys.readouterr().err
