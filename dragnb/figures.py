"""The figures of the blog post "Exploring DragGAN implementation using ONNX Runtime" (Microsoft Open Source
blog, 2023), reproduced with this package (notebook ``04_blog_figures``, ``tools/make_gallery.py``):

* Figure 1 - a seeded StyleGAN image next to the mapper/generator code that made it (:func:`figure1`);
* Figure 2a / 2b / 2c - the image with handle (red) and target (blue) points, the result of the drag, and
  the animation of the intermediate frames (:func:`drag_figures`).

The blog's own setup is fixed by the sample code published with it (``draggan_demo.py`` and ``handles.json`` of
the DragGAN folder of microsoft/onnxruntime-training-examples): MetFaces (FFHQ too) at 1024 px, seed 71 without
truncation, one point pair (the nose, 50 px to the right), at most 100 iterations of its own loop, which
``compat="blog"`` reproduces. :func:`find_blog_checkpoint` looks for a converted MetFaces, then FFHQ, checkpoint in
the user models folder; :func:`blog_setup` runs that drag in the three compat modes and writes files named as the
sample's ``images/``. Points are (x, y) image pixels, as everywhere in the public API.
"""

from __future__ import annotations

import inspect
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

BLOG_SEED = 71
BLOG_PSI = 1.0  # the sample repeats the mapped w over every ws: no truncation
# handles.json's pair [647, 500, 647, 550] read through the sample's swaps and flip: handle (x 500, y 647), target
# (x 550, y 647) in its 1024 px image.
BLOG_PAIR_1024 = ((500, 647), (550, 647))
BLOG_MODES = ("blog", "official", "dragnb")
# Converted checkpoints the blog setup runs on, in order of preference (globs in the user models folder): the
# sample's model_name is "metfaces"; its images/ also show FFHQ.
BLOG_CHECKPOINTS = ("*metfaces*.safetensors", "stylegan2-ffhq-1024x1024.safetensors", "*ffhq*.safetensors")
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


def blog_pair(width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The sample's (handle, target) in pixels of a ``width`` x ``height`` image: :data:`BLOG_PAIR_1024` as it is
    at 1024 px, scaled (and rounded) for another size."""
    def px(p):
        return (round(p[0] * width / 1024), round(p[1] * height / 1024))

    return px(BLOG_PAIR_1024[0]), px(BLOG_PAIR_1024[1])


def blog_model_name(checkpoint) -> str:
    """"metfaces" or "ffhq" from a checkpoint's file name (the prefix of the sample's image files), else its stem."""
    stem = Path(checkpoint).stem.lower()
    return next((name for name in ("metfaces", "ffhq") if name in stem), stem)


def blog_file_names(name: str, backend: str) -> dict:
    """Output files of :func:`blog_setup`, named as the sample's ``images/``: the seed's image and one GIF per
    compat mode (``pt`` for the PyTorch back-end, as the sample's "pt_training", ``ort`` for ONNX Runtime)."""
    tag = "pt" if backend == "torch" else backend
    names = {"stylegan": f"{name}_stylegan_seed_{BLOG_SEED}.png"}
    for mode in BLOG_MODES:
        names[mode] = f"{name}_draggan_seed_{BLOG_SEED}_{tag}_training" + ("" if mode == "blog" else f"_{mode}")
        names[mode] += ".gif"
    return names


def blog_setup(G, name: str, out_dir, backend: str = "torch", steps: int = 100, size: int = 256,
               fps: float = 12) -> dict:
    """The blog sample's drag on ``G``: seed 71, psi 1, :func:`blog_pair`, up to ``steps`` steps (the sample's 100)
    with each mode's learning rate and tolerance, once per compat mode (:data:`BLOG_MODES`, each from the seed's
    image). Writes :func:`blog_file_names` into ``out_dir`` (the PNG at the model's resolution, GIFs ``size``
    pixels on the longer side, handles red and targets blue).

    Returns {"files": {key: path}, mode: {"steps", "seconds", "handle" (x, y), "distance", "converged"}}.
    """
    from .session import DragSession

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / v for k, v in blog_file_names(name, backend).items()}
    report: dict = {"files": files}
    for mode in BLOG_MODES:
        session = DragSession(G, seed=BLOG_SEED, truncation_psi=BLOG_PSI, backend=backend, compat=mode)
        if mode == "blog":
            Image.fromarray(session.image).save(files["stylegan"])
        handle, target = blog_pair(session.W, session.H)
        session.add_point(handle=handle, target=target)
        t0 = time.perf_counter()
        results = list(session.run(steps))
        seconds = time.perf_counter() - t0
        session.recording.export_gif(files[mode], overlays=True, fps=fps, size=size)
        report[mode] = {"steps": len(results), "seconds": seconds, "handle": results[-1].handle_points[0],
                        "distance": results[-1].distance[0], "converged": results[-1].converged}
    return report


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
