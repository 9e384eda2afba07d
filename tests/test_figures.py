"""``dragnb.figures``: the blog's Figure 1 (code + image) and Figures 2a/2b/2c (points, result, animation)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dragnb import figures
from dragnb.session import DragSession


def test_find_blog_checkpoint_prefers_metfaces_as_the_sample(tmp_path, monkeypatch):
    assert figures.find_blog_checkpoint(tmp_path / "missing") is None
    assert figures.find_blog_checkpoint(tmp_path) is None
    (tmp_path / "metfaces.pkl").write_bytes(b"")  # not converted: ignored
    assert figures.find_blog_checkpoint(tmp_path) is None
    (tmp_path / "my-ffhq-256.safetensors").write_bytes(b"")
    assert figures.find_blog_checkpoint(tmp_path) == tmp_path / "my-ffhq-256.safetensors"
    (tmp_path / "stylegan2-ffhq-1024x1024.safetensors").write_bytes(b"")
    assert figures.find_blog_checkpoint(tmp_path) == tmp_path / "stylegan2-ffhq-1024x1024.safetensors"
    (tmp_path / "metfaces.safetensors").write_bytes(b"")
    monkeypatch.setenv("DRAGNB_MODELS", str(tmp_path))  # the default folder is the user models folder
    assert figures.find_blog_checkpoint() == tmp_path / "metfaces.safetensors"
    assert figures.blog_model_name(tmp_path / "metfaces.safetensors") == "metfaces"
    assert figures.blog_model_name("stylegan2-ffhq-1024x1024.safetensors") == "ffhq"


def test_blog_pair_is_the_samples_nose_pair():
    """handles.json [647, 500, 647, 550] through the sample's swaps: handle (x 500, y 647) -> (x 550, y 647)."""
    assert figures.blog_pair(1024, 1024) == ((500, 647), (550, 647))
    assert figures.blog_pair(512, 512) == ((250, 324), (275, 324))  # scaled for another size
    names = figures.blog_file_names("metfaces", "torch")
    assert names["stylegan"] == "metfaces_stylegan_seed_71.png"
    assert names["blog"] == "metfaces_draggan_seed_71_pt_training.gif"
    assert figures.blog_file_names("ffhq", "ort")["official"] == "ffhq_draggan_seed_71_ort_training_official.gif"


def test_code_and_image_puts_code_left_and_image_right(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 255  # a red image
    path = figures.code_and_image("def f():\n    return 1\n", img, tmp_path / "f.png", "title", image_px=128)
    out = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60)
    rows, cols = np.nonzero(red)
    assert 120 <= cols.max() - cols.min() + 1 <= 130 and 120 <= rows.max() - rows.min() + 1 <= 130
    assert cols.min() > out.shape[1] // 3  # the text is on the left
    dark = out[:, : cols.min()].sum(-1) < 200
    assert dark.sum() > 50  # some code was drawn


def test_figure1_shows_the_code_that_made_the_image(tiny_generator, tmp_path):
    import torch

    from dragnb.viz import to_uint8_image

    path, image, code = figures.figure1(tiny_generator, 5, tmp_path / "fig1.png")
    assert path.is_file() and "def generate" in code and "self.mapper.run" in code
    z = torch.from_numpy(np.random.RandomState(5).randn(1, tiny_generator.z_dim)).float()
    with torch.no_grad():
        ref = to_uint8_image(tiny_generator.synthesis(tiny_generator.mapping(z, truncation_psi=0.7)))
    assert np.abs(image.astype(int) - ref.astype(int)).max() <= 1


def test_drag_figures_writes_2a_2b_2c(tiny_generator, tmp_path):
    s = DragSession(tiny_generator, seed=1)
    s.add_point(handle=(30, 32), target=(38, 32))
    r = figures.drag_figures(s, tmp_path / "figs", steps=3, size=128, prefix="x_")
    assert r["steps"] == 3 and len(r["distance"]) == 1
    assert r["2a"].name == "x_fig2a_original.png" and r["2c"].suffix == ".gif"
    a, b = (np.asarray(Image.open(r[k]).convert("RGB")) for k in ("2a", "2b"))
    assert a.shape == b.shape == (128, 128, 3)
    # 2a shows the first frame with the handle where it was placed: red at (30, 32) scaled by 2
    assert tuple(a[2 * 32, 2 * 30]) == (230, 30, 30)
    with Image.open(r["2c"]) as gif:
        assert gif.n_frames >= 2 and gif.size == (128, 128)


def test_drag_figures_needs_points(tiny_generator, tmp_path):
    with pytest.raises(ValueError, match="no points"):
        figures.drag_figures(DragSession(tiny_generator, seed=1), tmp_path, steps=2)
