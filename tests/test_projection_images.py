"""Pictures in (dragnb.projection.images): any size or mode becomes the model's RGB size; bad files are refused
with a clear ImageError; nothing here needs torch."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dragnb.projection import MAX_PIXELS, ImageError, load_image
from dragnb.projection.images import centre_crop_box


def _png(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_modes_become_rgb(tmp_path):
    rgb = Image.new("RGB", (40, 30), (10, 20, 30))
    assert load_image(rgb, 16).shape == (16, 16, 3)
    grey = Image.new("L", (20, 20), 100)
    out = load_image(_png(grey), 8)
    assert out.dtype == np.uint8 and (out == 100).all()
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent: composited on white
    assert (load_image(rgba, 8) == 255).all()
    half = Image.new("RGBA", (20, 20), (0, 0, 0, 128))
    assert abs(int(load_image(half, 8)[0, 0, 0]) - 127) <= 1
    pal = Image.new("P", (20, 20), 3)
    pal.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2, 200, 100, 50] + [0] * 756)
    assert tuple(load_image(_png(pal), 8)[0, 0]) == (200, 100, 50)
    i16 = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    assert (load_image(i16, 4) == 255).all()
    cmyk = Image.new("CMYK", (10, 10), (0, 0, 0, 0))
    p = tmp_path / "c.jpg"
    cmyk.save(p)
    assert load_image(p, 4).shape == (4, 4, 3)


def test_arrays():
    assert load_image(np.zeros((5, 7), np.uint8), 4).shape == (4, 4, 3)
    f = load_image(np.full((6, 6, 3), 0.5, np.float32), 6)
    assert (f == 128).all()
    a = np.zeros((6, 6, 4), np.uint8)  # alpha 0 -> white
    assert (load_image(a, 6) == 255).all()
    with pytest.raises(ImageError):
        load_image(np.zeros((0, 5, 3), np.uint8), 4)
    with pytest.raises(ImageError):
        load_image(np.zeros((4, 4, 2), np.uint8), 4)
    with pytest.raises(ImageError):
        load_image(np.full((4, 4, 3), np.nan, np.float32), 4)


def test_centre_crop_and_aspect():
    # a 2:1 (portrait) model: width 32, height 64
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 137:163] = 255  # the middle 26 of the 50 columns a portrait crop keeps are white
    out = load_image(wide, 32, 64)
    assert out.shape == (64, 32, 3) and out[:, 10:22].min() > 200 and out[:, :4].max() < 60
    assert centre_crop_box(300, 100, 32, 64) == (125, 0, 175, 100)
    assert centre_crop_box(100, 300, 1, 1) == (0, 100, 100, 200)
    big = np.random.RandomState(0).randint(0, 255, (500, 400, 3)).astype(np.uint8)
    assert load_image(big, 128).shape == (128, 128, 3)


def test_exif_orientation():
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    out = load_image(buf.getvalue(), 10, 20)  # upright: 10 wide, 20 high, the white half on top
    assert out.shape == (20, 10, 3) and out[2, 5].mean() > 200 and out[17, 5].mean() < 50


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png", 8)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png", 8)
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ImageError, match="not a picture"):
        load_image(tmp_path / "text.png", 8)
    data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(ImageError):
        load_image(data[: len(data) // 2], 8)  # truncated
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path, 8)
    with pytest.raises(TypeError):
        load_image(3.5, 8)


def test_decompression_bomb_refused_before_decoding():
    # A PNG whose header claims more than MAX_PIXELS: refused from the header, nothing is decoded.
    side = int(MAX_PIXELS**0.5) + 1000
    img = Image.new("1", (side, side))  # 1 bit per pixel: small in memory, compresses to almost nothing
    data = _png(img)
    assert len(data) < 2_000_000
    with pytest.raises(ImageError, match="decompression bomb|more than"):
        load_image(data, 8)


def test_images_module_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from dragnb.projection import load_image\nimport numpy as np\n"
            "print(load_image(np.zeros((3, 3, 3), np.uint8), 2).shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 2, 3)"
