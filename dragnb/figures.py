"""The figures of the blog post "Exploring DragGAN implementation using ONNX Runtime" (Microsoft Open Source
blog, 2023), reproduced with this package (notebook ``04_blog_figures``, ``tools/make_gallery.py``):

* Figure 1 - a seeded StyleGAN image next to the mapper/generator code that made it (:func:`figure1`);
* Figure 2a / 2b / 2c - the image with handle (red) and target (blue) points, the result of the drag, and
  the animation of the intermediate frames (:func:`drag_figures`).

The blog used FFHQ with seed 71; :func:`find_blog_checkpoint` looks for a converted FFHQ or MetFaces
checkpoint in the user models folder. Points are (x, y) image pixels, as everywhere in the public API.
"""

from __future__ import annotations

import inspect
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

BLOG_SEED = 71
# Converted checkpoints the blog setup runs on, in order of preference (globs in the user models folder).
BLOG_CHECKPOINTS = ("stylegan2-ffhq-512x512.safetensors", "*ffhq*.safetensors", "*metfaces*.safetensors")
# Illustrative drag for an aligned 512 px face, as fractions of (width, height): both mouth corners up and
# out (a smile). Not the blog's own points, which it does not list.
BLOG_POINTS_REL = (((0.41, 0.74), (0.37, 0.69)), ((0.59, 0.74), (0.63, 0.69)))
FIGURE1_HEADER = """\
# dragnb.export.OnnxGenerator: mapper.onnx (z, psi -> ws) and generator.onnx (ws -> image),
# both exported from PyTorch and run as onnxruntime.InferenceSession (self.mapper, self.synthesis)

"""
FIGURE_FILES = {
    "1": "fig1_code_and_image.png",
    "2a": "fig2a_original.png",
    "2b": "fig2b_result.png",
    "2c": "fig2c_animation.gif",
}


def find_blog_checkpoint(models_dir=None) -> Path | None:
    """The first converted FFHQ / MetFaces checkpoint (:data:`BLOG_CHECKPOINTS`) in ``models_dir``
    (default: ``dragnb.checkpoints.user_models_dir()``), or None."""
    from .checkpoints import user_models_dir

    folder = Path(models_dir) if models_dir is not None else user_models_dir()
    if not folder.is_dir():
        return None
    for pattern in BLOG_CHECKPOINTS:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found[0]
    return None


def blog_points(width: int, height: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """:data:`BLOG_POINTS_REL` in pixels of a ``width`` x ``height`` image (handles rounded, as the session does)."""
    def px(p):
        return (round(p[0] * (width - 1)), round(p[1] * (height - 1)))

    return [(px(h), px(t)) for h, t in BLOG_POINTS_REL]


def code_and_image(code: str, image: np.ndarray, path, title: str = "", image_px: int = 256) -> Path:
    """Save a figure with ``code`` (9 pt monospace) on the left and ``image`` (uint8 [H, W, 3], shown
    ``image_px`` pixels wide, nearest neighbour) on the right, ``title`` above the image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dpi, pad, gap, title_h = 100, 0.15, 0.3, 0.3  # inches
    fig = plt.figure(dpi=dpi)
    text = fig.text(0, 1, code.rstrip("\n"), family="monospace", fontsize=9, va="top", ha="left")
    box = text.get_window_extent(fig.canvas.get_renderer())  # the text's size does not depend on the figure's
    text_w, text_h = box.width / dpi, box.height / dpi
    img_w = image_px / dpi
    img_h = img_w * image.shape[0] / image.shape[1]
    W = pad + text_w + gap + img_w + pad
    H = pad + max(text_h, img_h + title_h) + pad
    fig.set_size_inches(W, H)
    text.set_position((pad / W, 1 - pad / H))
    ax = fig.add_axes(((W - pad - img_w) / W, (H - pad - title_h - img_h) / H, img_w / W, img_h / H))
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white", dpi=dpi)
    plt.close(fig)
    return path


def figure1(G, seed: int, path, psi: float = 0.7) -> tuple[Path, np.ndarray, str]:
    """Figure 1: export the mapper and the generator to ONNX, make the seed's image in ONNX Runtime, and save
    it next to the code that made it (the source of :class:`dragnb.export.OnnxGenerator`'s methods).

    Returns (figure path, image uint8 [H, W, 3], the code shown).
    """
    from .export import OnnxGenerator, export_mapper, export_synthesis

    with tempfile.TemporaryDirectory(prefix="dragnb-fig1-") as tmp:
        mapper = export_mapper(G, Path(tmp) / "mapper.onnx")
        og = OnnxGenerator(mapper, export_synthesis(G, Path(tmp) / "generator.onnx"))
        image = og.generate(seed, psi)
    methods = (OnnxGenerator.generate, OnnxGenerator.mapping, OnnxGenerator.render)
    code = FIGURE1_HEADER + textwrap.dedent("\n".join(inspect.getsource(f) for f in methods))
    title = f"seed {seed}, psi {psi} ({G.img_width}x{G.img_resolution})"
    return code_and_image(code, image, path, title), image, code


def drag_figures(session, out_dir, steps: int, size: int = 256, fps: float = 12, prefix: str = "") -> dict:
    """Run ``session`` for up to ``steps`` steps and write Figures 2a, 2b, 2c into ``out_dir``.

    2a: the first recorded frame (the image before the drag) with the handles (red), targets (blue) and arrows;
    2b: the last frame with the tracked handles; 2c: every frame as an animated GIF. Images are scaled so their
    longer side is ``size`` pixels (nearest neighbour for small models). ``prefix`` goes before the file names
    (:data:`FIGURE_FILES`). Returns the paths (keys "2a", "2b", "2c") and "steps", "seconds", "distance"
    (final pixel distance of each handle to its target), "converged".
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = len(session.recording)
    t0 = time.perf_counter()
    results = list(session.run(steps))
    seconds = time.perf_counter() - t0
    if len(session.recording) <= start:
        raise RuntimeError("the drag recorded no frames")
    rec = session.recording
    paths = {
        "2a": rec.export_png(out / (prefix + FIGURE_FILES["2a"]), index=start, overlays=True, size=size),
        "2b": rec.export_png(out / (prefix + FIGURE_FILES["2b"]), index=-1, overlays=True, size=size),
        "2c": rec.export_gif(out / (prefix + FIGURE_FILES["2c"]), overlays=True, fps=fps, size=size),
    }
    return {**paths, "steps": len(results), "seconds": seconds, "distance": results[-1].distance,
            "converged": results[-1].converged}
