"""Every notebook runs top to bottom headless (step counts lowered through its parameter cell), its key
outputs are asserted, and committed notebooks carry no outputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def notebook_model(tmp_path_factory):
    """The bundled model (the notebooks' default)."""
    from dragnb.checkpoints import BUNDLED

    if BUNDLED["toyfaces"].exists():
        return "toyfaces"
    # Until the bundled weights land: a small random generator, so the notebooks' code paths still run.
    import torch

    import dragnb

    torch.manual_seed(0)
    G = dragnb.Generator(dragnb.GeneratorConfig(z_dim=16, w_dim=32, img_resolution=64, channel_base=512,
                                                channel_max=32, mapping_layers=2))
    return str(dragnb.save_generator(G, tmp_path_factory.mktemp("nbmodel") / "tiny.safetensors"))


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_stylegan_tour.ipynb", "02_ort_training_workflow.ipynb", "03_draggan_workbench.ipynb",
            "04_blog_figures.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: a code cell has outputs"
            assert cell.get("execution_count") is None, f"{path.name}: a code cell has an execution count"


def run_notebook(path: Path, params: dict, report: list[str], tmp_path: Path, timeout=300) -> dict:
    """Execute ``path`` with ``params`` injected after its ``parameters`` cell; return the ``report`` variables."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(src))
    keys = ", ".join(f"{k!r}: {k}" for k in report)
    dump = f"import json as _j; print('@@REPORT@@' + _j.dumps({{{keys}}}, default=str))"
    nb.cells.append(nbformat.v4.new_code_cell(dump))
    env_path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["PATH"] = env_path
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for out in nb.cells[-1].outputs:
        text = out.get("text", "")
        if "@@REPORT@@" in text:
            return json.loads(text.split("@@REPORT@@", 1)[1])
    raise AssertionError("notebook produced no report")


@pytest.mark.slow  # a kernel runs the notebook top to bottom
def test_01_stylegan_tour(tmp_path, notebook_model):
    r = run_notebook(ROOT / "notebooks/01_stylegan_tour.ipynb",
                     {"MODEL": notebook_model, "SEEDS": [0, 1, 2], "OUT": str(tmp_path)},
                     ["max_abs_img", "max_abs_ws"], tmp_path)
    assert r["max_abs_img"] < 1e-4 and r["max_abs_ws"] < 1e-4
    assert (tmp_path / "mapper.onnx").stat().st_size > 0 and (tmp_path / "synthesis.onnx").stat().st_size > 0


@pytest.mark.slow  # a kernel runs the notebook top to bottom
def test_02_ort_training_workflow(tmp_path, notebook_model):
    r = run_notebook(ROOT / "notebooks/02_ort_training_workflow.ipynb",
                     {"MODEL": notebook_model, "STEPS": 6, "OUT": str(tmp_path)},
                     ["grad_rel_naive", "grad_rel_fixed", "grad_rel_naive_vs_no_sg", "points_equal", "max_loss_rel",
                      "latent_rel", "adam_carry_rel", "backend_points_equal", "backend_latent_rel",
                      "artifact_points_equal", "torch_free"], tmp_path)
    for name in ("naive", "fixed"):
        for f in ("step.onnx", "training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"):
            assert (tmp_path / name / f).stat().st_size > 0, f"{name}/{f}"
    # The lost detach(): the naive export's gradient is PyTorch's gradient WITHOUT the stop-gradient, not PyTorch's.
    assert r["grad_rel_naive"] > 0.1 and r["grad_rel_naive_vs_no_sg"] < 1e-4
    assert r["grad_rel_fixed"] < 1e-4
    # Hand-written ORT loop vs the PyTorch back-end, and vs the package's ORT back-end.
    assert r["points_equal"] and r["max_loss_rel"] < 1e-3 and r["latent_rel"] < 1e-3
    assert r["backend_points_equal"] and r["backend_latent_rel"] < 1e-5
    assert r["adam_carry_rel"] > 0.01  # the Optimizer's moments survive a latent swap
    # The same drag from the artifact folder alone, in a process where torch cannot be imported.
    assert r["artifact_points_equal"] and not r["torch_free"]["torch"] and r["torch_free"]["steps"] > 1


@pytest.mark.slow  # a kernel runs the notebook top to bottom
def test_03_draggan_workbench(tmp_path, notebook_model):
    r = run_notebook(ROOT / "notebooks/03_draggan_workbench.ipynb",
                     {"MODEL": notebook_model, "STEPS": 3, "OUT": str(tmp_path)},
                     ["canvas_size", "first_loss", "steps_done", "frames", "backend_after", "saved", "widget_error",
                      "ready"], tmp_path)
    assert r["canvas_size"] == [512, 512]  # the 128 px toyfaces shown at the default display size
    assert r["first_loss"] > 0 and 1 < r["steps_done"] <= 4 and 1 <= r["frames"] <= r["steps_done"]
    # The user's workbench at the top is ready to drag after Run All: the code drove a second one.
    assert r["ready"] == {"steps": 0, "points": 0, "backend": "torch", "internals": False}
    assert r["backend_after"] == "ort" and r["widget_error"] is None
    assert {"drag.png", "drag.gif", "drag_session"} <= set(r["saved"])
    assert (tmp_path / "drag_session" / "session.json").is_file()


@pytest.mark.slow  # a kernel runs the notebook top to bottom
def test_04_blog_figures(tmp_path, notebook_model):
    import dragnb

    # A stand-in MetFaces of the sample's shape (1024 px, 18 ws of 512; random weights, few channels), so the
    # blog-setup cell runs its code path where no weights can be downloaded.
    models = tmp_path / "models"
    models.mkdir()
    import torch

    torch.manual_seed(0)
    G = dragnb.Generator(dragnb.GeneratorConfig(z_dim=512, w_dim=512, img_resolution=1024, channel_base=1024,
                                                channel_max=8, mapping_layers=2))
    assert (G.img_resolution, G.num_ws) == (1024, 18)
    dragnb.save_generator(G, models / "metfaces-random.safetensors")
    out = tmp_path / "figures"
    r = run_notebook(ROOT / "notebooks/04_blog_figures.ipynb",
                     {"MODEL": notebook_model, "STEPS": 4, "OUT": str(out), "SIZE": 128,
                      "BLOG_MODELS_DIR": str(models), "BLOG_STEPS": 2},
                     ["fig1_max_diff", "figure_files", "blog_files", "fig2", "blog"], tmp_path, timeout=600)
    assert r["fig1_max_diff"] <= 1  # Figure 1's ONNX Runtime image is PyTorch's
    assert {"fig1_code_and_image.png", "fig2a_original.png", "fig2b_result.png",
            "fig2c_animation.gif"} <= set(r["figure_files"])
    assert r["blog_files"] == sorted(["metfaces_stylegan_seed_71.png", "metfaces_draggan_seed_71_pt_training.gif",
                                      "metfaces_draggan_seed_71_pt_training_official.gif",
                                      "metfaces_draggan_seed_71_pt_training_dragnb.gif"])
    for f in r["blog_files"]:
        assert (out / f).stat().st_size > 0
    from PIL import Image

    assert Image.open(out / "metfaces_stylegan_seed_71.png").size == (1024, 1024)
    for mode in ("blog", "official", "dragnb"):  # the same pair, from the same image, in each mode
        assert 1 <= r["blog"][mode]["steps"] <= 2
        assert r["blog"][mode]["handle"] == [500, 647] or r["blog"][mode]["steps"] == 2


@pytest.mark.slow  # a kernel runs the notebook top to bottom
def test_05_real_pictures(tmp_path, notebook_model):
    r = run_notebook(ROOT / "notebooks/05_real_pictures.ipynb",
                     {"MODEL": notebook_model, "PROJ_STEPS": 12, "TUNE_STEPS": 6, "OUT": str(tmp_path)},
                     ["psnr_projection", "psnr_tuned", "n_trainable", "artifact_files", "parity_rel", "delta_bytes"],
                     tmp_path, timeout=900)
    assert r["psnr_tuned"] > 5 and r["psnr_projection"] > 5  # 6 tuning steps: not yet past the early dip
    assert r["n_trainable"] > 1000 and r["parity_rel"] < 5e-3 and r["delta_bytes"] > 0
    assert {"training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint",
            "manifest.json"} <= set(r["artifact_files"])
