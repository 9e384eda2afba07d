"""DragSession.from_image on the tiny generator: the session starts at the projection, reset and undo go back to
it, the tuned weights are saved as a delta beside the session and restored by load; bad pictures change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_generator
from PIL import Image

from dragnb import DragSession, save_generator
from dragnb.projection import ImageError
from dragnb.session.io import SessionFileError
from dragnb.session.picture import DELTA_FILE

FAST = dict(projection_steps=8, tuning_steps=4, projection={"w_avg_samples": 200}, tuning={"lr": 1e-3})


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("pic") / "face.png"
    s = DragSession(make_tiny_generator(), seed=4)
    Image.fromarray(s.image).resize((90, 120)).save(path)  # another size and aspect: centre-cropped, resized
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_generator(make_tiny_generator(), tmp_path_factory.mktemp("m") / "tiny.safetensors")


def test_from_image_starts_at_the_projection_and_reset_returns(model_path, picture):
    seen = []
    s = DragSession.from_image(model_path, picture, tune=True, callback=lambda k, st: seen.append(k) and False, **FAST)
    assert seen == ["project"] * 8 + ["tune"] * 4
    assert s.picture["tuned"] and s.picture["projection_steps"] == 8 and s.picture["tuning_steps"] == 4
    start = s.image
    ws0 = s.ws
    s.add_point(handle=(30, 30), target=(34, 30))
    list(s.run(max_steps=3))
    assert not np.array_equal(s.ws, ws0)
    s.reset()
    assert np.array_equal(s.ws, ws0) and np.array_equal(s.image, start)
    s.undo()  # undo the reset: back to the dragged latent
    assert not np.array_equal(s.ws, ws0)


def test_save_and_load_restore_the_tuned_weights(model_path, picture, tmp_path):
    s = DragSession.from_image(model_path, picture, tune=True, **FAST)
    s.add_point(handle=(30, 30), target=(34, 30))
    list(s.run(max_steps=2))
    s.save(tmp_path / "sess")
    assert (tmp_path / "sess" / DELTA_FILE).is_file()
    assert not (tmp_path / "sess" / "generator.safetensors").exists()  # a delta, not a full copy
    t = DragSession.load(tmp_path / "sess")
    assert t.picture == s.picture
    assert np.abs(t.image.astype(int) - s.image.astype(int)).max() <= 1
    a = [r.loss for r in s.run(max_steps=2)]
    b = [r.loss for r in t.run(max_steps=2)]
    assert a == pytest.approx(b, rel=1e-4)
    t.reset()
    s.reset()
    assert np.abs(t.image.astype(int) - s.image.astype(int)).max() <= 1
    # the delta belongs to its base model: another model is refused with the session file error
    other = save_generator(make_tiny_generator(seed=3), tmp_path / "other.safetensors")
    with pytest.raises(SessionFileError, match="another base model"):
        DragSession.load(tmp_path / "sess", model=other)


def test_projection_only_and_bad_pictures(model_path, picture, tmp_path):
    s = DragSession.from_image(model_path, picture, tune=False, **FAST)
    assert not s.picture["tuned"] and s.picture["psnr"] == s.picture["projection_psnr"]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(ImageError):
        DragSession.from_image(model_path, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="tuning_backend"):
        DragSession.from_image(model_path, picture, tuning_backend="jax")


def test_cli_project(model_path, picture, tmp_path, capsys):
    import json

    from dragnb.cli import main

    out = tmp_path / "run"
    assert main(["project", str(picture), "--model", str(model_path), "--out", str(out), "--tune", "--steps", "6",
                 "--tune-steps", "3"]) == 0
    report = json.loads((out / "projection.json").read_text())
    assert report["tuned"] and report["tuning_steps"] == 3 and report["size"] == [64, 64]
    assert "projection PSNR" in capsys.readouterr().out
    for name in ("projected.png", "target.png", "session.json", DELTA_FILE):
        assert (out / name).is_file()
    s = DragSession.load(out)
    assert np.array_equal(s.image, np.asarray(Image.open(out / "projected.png")))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 20)
    assert main(["project", str(tmp_path / "bad.jpg"), "--model", str(model_path), "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_defaults_are_the_measured_settings():
    """What a user gets by default (``from_image``, ``tune``, ``dragnb project --tune``) is what the bars of
    test_projection_quality.py were measured with (``dragnb.toy.picturecheck``)."""
    import inspect

    from dragnb.cli import build_parser
    from dragnb.projection.tuning import TuningSettings, tune
    from dragnb.toy import picturecheck

    defaults = inspect.signature(DragSession.from_image).parameters
    cli = build_parser().parse_args(["project", "x.png", "--out", "o", "--tune"])
    settings = TuningSettings()
    tune_steps = inspect.signature(tune).parameters["num_steps"].default
    assert defaults["projection_steps"].default == cli.steps == picturecheck.PROJECTION_STEPS
    assert (defaults["tuning_steps"].default == cli.tune_steps == tune_steps == settings.num_steps
            == picturecheck.TUNING["num_steps"])
    assert {k: getattr(settings, k) for k in picturecheck.TUNING} == picturecheck.TUNING


def test_workbench_open_image(model_path, picture):
    pytest.importorskip("ipycanvas")
    from dragnb import Workbench

    wb = Workbench(model=str(model_path))
    drawn = wb.frames
    wb.open_image(str(picture), tune=True, **FAST)
    assert wb.wait(120) and wb.last_error is None
    assert wb.session.picture["tuned"] and "opened the picture" in wb.message.value
    assert np.array_equal(wb.last_image, wb.session.image) and wb.frames == drawn
    before = wb.session
    wb._picture.path.value = ""
    wb._picture.open_button.click()  # neither an upload nor a path: one error line, the session stays
    assert "choose a picture" in str(wb.last_error) and wb.session is before
    wb._picture.path.value = "/nonexistent/picture.png"
    wb._picture.open_button.click()
    assert isinstance(wb.last_error, ImageError) and wb.session is before
    with pytest.raises(ImageError):
        wb.open_image(b"not a picture")


def test_portrait_model(picture):
    """A 2:1 model (64 high, 32 wide): the picture is cropped to a portrait and the session has that size."""
    G = make_tiny_generator(img_width=32)
    s = DragSession.from_image(G, picture, tune=True, **FAST)
    assert s.image.shape == (64, 32, 3) and s.picture["projection_steps"] == 8
