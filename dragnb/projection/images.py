"""Pictures in: any file or array becomes the uint8 [H, W, 3] RGB image a generator of a given size makes.

``load_image(source, width, height)`` takes a path, bytes, a file object, a PIL image or an array, and:

- decodes it with Pillow, refusing files larger than :data:`MAX_PIXELS` before they are decoded
  (decompression bombs), and reporting unreadable, empty, truncated or corrupt files as :class:`ImageError`;
- converts any mode to RGB: alpha is dropped (composited on white, so a transparent background is not black),
  grey and palette images are expanded, 16-bit and float images are scaled to 8 bits;
- applies the EXIF orientation (a phone photo is upright);
- crops the centre to the model's aspect ratio (``width : height``, so a 2:1 model gets a portrait crop) and
  resizes to ``height x width`` (Lanczos when shrinking, bicubic when enlarging).

Face models (FFHQ, the bundled toy faces) expect *aligned* crops: the face centred, eyes level, at the scale
of the training data. A centre crop does not align a face; see docs/projection.md for how to make one.

Numpy and Pillow only (no torch): the widget and the CLI check a picture before any model is loaded.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

MAX_PIXELS = 64_000_000      # decoded size limit (8000 x 8000): a larger picture is refused before decoding
MAX_FILE_BYTES = 256 << 20   # 256 MiB: no picture a user means to drag is larger on disk


class ImageError(ValueError):
    """A picture that cannot be used: unreadable, empty, corrupt, or too large."""


def _open_pil(source):
    """A loaded (decoded) PIL image from a path, bytes, file object or PIL image; ImageError otherwise."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    name = "image"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        name = str(path)
        if not path.is_file():
            raise ImageError(f"{name}: no such file" if not path.exists() else f"{name}: not a regular file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{name}: empty file")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name}: {size} bytes is larger than the {MAX_FILE_BYTES} bytes allowed for a picture")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(f"{name}: larger than the {MAX_FILE_BYTES} bytes allowed for a picture")
    else:
        raise TypeError(f"source must be a path, bytes, a file object, a PIL image or an array, "
                        f"got {type(source).__name__}")
    if not data:
        raise ImageError(f"{name}: empty file")
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name}: {w}x{h} pixels is more than the {MAX_PIXELS} allowed")
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a picture Pillow can read (PNG, JPEG, WebP, ...)") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise ImageError(f"{name}: corrupt or truncated picture ({e})") from e
    finally:
        Image.MAX_IMAGE_PIXELS = old
    if img.size[0] == 0 or img.size[1] == 0:
        raise ImageError(f"{name}: the picture has no pixels")
    return img


def _to_rgb_pil(img):
    """Any PIL mode -> RGB; alpha composited on white; 16-bit / float scaled to 8 bits; EXIF orientation."""
    from PIL import Image, ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001  (a broken EXIF block is no reason to refuse the pixels)
        pass
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, np.float64)
        hi = 65535.0 if img.mode != "F" and a.max() > 255 else (1.0 if img.mode == "F" and a.max() <= 1 else 255.0)
        img = Image.fromarray(np.clip(np.rint(a / hi * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA") or (img.mode in ("L", "LA", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(a) -> np.ndarray:
    """An array [H, W], [H, W, 1|3|4] (uint8, or float in [0, 1]) -> uint8 [H, W, 3]."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"an image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {list(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError("the image array has no pixels")
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise ImageError(f"{a.shape[1]}x{a.shape[0]} pixels is more than the {MAX_PIXELS} allowed")
    if a.dtype == np.uint8:
        f = a.astype(np.float64)
    elif a.dtype == np.uint16:
        f = a.astype(np.float64) / 257.0
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageError("the image array has NaN or infinite values")
        f = np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0
    else:
        raise ImageError(f"an image array must be uint8, uint16 or float in [0, 1], got {a.dtype}")
    if f.shape[2] == 4:
        alpha = f[:, :, 3:] / 255.0
        f = f[:, :, :3] * alpha + 255.0 * (1 - alpha)
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def centre_crop_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred box of aspect ``width : height`` in a w x h picture."""
    if w * height > h * width:   # too wide: crop the sides
        cw, ch = max(1, round(h * width / height)), h
    else:                        # too tall: crop top and bottom
        cw, ch = w, max(1, round(w * height / width))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def load_image(source, width: int, height: int | None = None) -> np.ndarray:
    """The picture ``source`` as uint8 [height, width, 3] RGB (centre crop to the aspect ratio, then resize).

    Args:
        source: a path, bytes, a binary file object, a PIL image, or an array ([H, W] grey, [H, W, 3] RGB or
            [H, W, 4] RGBA; uint8, uint16, or float in [0, 1]).
        width, height: the model's image size (``G.img_width``, ``G.img_resolution``); height None = square.
    Raises:
        ImageError: unreadable, empty, corrupt, or larger than :data:`MAX_PIXELS`.
    """
    from PIL import Image

    height = width if height is None else height
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    width, height = int(width), int(height)
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and source):
        img = Image.fromarray(_from_array(source), "RGB")
    else:
        img = _to_rgb_pil(_open_pil(source))
    box = centre_crop_box(img.size[0], img.size[1], width, height)
    img = img.crop(box)
    if img.size != (width, height):
        shrink = img.size[0] > width
        img = img.resize((width, height), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC,
                         reducing_gap=3.0 if shrink else None)
    out = np.array(img, np.uint8)  # a writable copy
    return np.ascontiguousarray(out[:, :, :3])
