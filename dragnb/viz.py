"""Small, dependency-light visual helpers shared by notebooks and widgets (numpy in, uint8 out)."""

from __future__ import annotations

import numpy as np


def to_uint8_image(img) -> np.ndarray:
    """One image [C, H, W] or [1, C, H, W] in [-1, 1] (tensor or array) -> uint8 [H, W, C]."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 4:
        img = img[0]
    return np.clip((img + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def image_grid(images, cols: int, pad: int = 2, fill: int = 255, labels=None) -> np.ndarray:
    """Tile uint8 [H, W, 3] images (same size) row-major into one uint8 image with ``pad`` px gutters.

    ``labels``: one text per image (or None), written in a strip under each tile.
    """
    images = [np.asarray(i) for i in images]
    h, w, c = images[0].shape
    strip = LABEL_HEIGHT if labels is not None else 0
    rows = (len(images) + cols - 1) // cols
    cell_h = h + strip
    out = np.full((rows * (cell_h + pad) - pad, cols * (w + pad) - pad, c), fill, np.uint8)
    for k, im in enumerate(images):
        r, q = divmod(k, cols)
        out[r * (cell_h + pad) : r * (cell_h + pad) + h, q * (w + pad) : q * (w + pad) + w] = im
    if labels is not None:
        from PIL import Image, ImageDraw

        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        for k, text in enumerate(labels):
            if text:
                r, q = divmod(k, cols)
                draw.text((q * (w + pad) + 2, r * (cell_h + pad) + h + 2), str(text), fill=(0, 0, 0))
        out = np.asarray(canvas)
    return out


LABEL_HEIGHT = 14  # px of the label strip under each tile of image_grid


def pca_rgb(feat, basis: np.ndarray | None = None) -> np.ndarray:
    """Feature map [C, H, W] -> uint8 [H, W, 3]: projection on its first three principal components.

    Each component is scaled to [0, 255] by its 1st/99th percentiles. Pass ``basis`` ([3, C], e.g. from
    the first frame) to keep colours stable across frames; the signs of a fresh basis are fixed so the
    largest loading is positive.
    """
    if hasattr(feat, "detach"):
        feat = feat.detach().cpu().numpy()
    feat = np.asarray(feat, dtype=np.float32)
    c, h, w = feat.shape
    x = feat.reshape(c, -1).T  # [HW, C]
    x = x - x.mean(0, keepdims=True)
    if basis is None:
        basis = pca_basis(feat)
    y = x @ basis.T  # [HW, 3]
    lo, hi = np.percentile(y, 1, axis=0), np.percentile(y, 99, axis=0)
    y = (y - lo) / np.maximum(hi - lo, 1e-8)
    return (np.clip(y, 0, 1) * 255).astype(np.uint8).reshape(h, w, 3)


def pca_basis(feat) -> np.ndarray:
    """First three principal directions [3, C] of a feature map [C, H, W] (fewer channels: zero-padded)."""
    feat = np.asarray(feat, dtype=np.float32)
    c = feat.shape[0]
    x = feat.reshape(c, -1).T
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    basis = np.zeros((3, c), np.float32)
    k = min(3, vt.shape[0])
    basis[:k] = vt[:k]
    signs = np.sign(basis[np.arange(3), np.abs(basis).argmax(1)])
    return basis * np.where(signs == 0, 1, signs)[:, None]


def show(img, title: str = "", width_in: float = 4.0):
    """Display a uint8 [H, W, 3] image with matplotlib (pixels kept sharp), ``width_in`` inches wide."""
    import matplotlib.pyplot as plt

    h, w = np.asarray(img).shape[:2]
    fig = plt.figure(figsize=(width_in, width_in * h / w + (0.3 if title else 0)))
    plt.imshow(img, interpolation="nearest")
    plt.axis("off")
    if title:
        plt.title(title, fontsize=9)
    plt.show()
    return fig
