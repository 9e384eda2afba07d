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
    assert "01_stylegan_tour.ipynb" in names


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


def test_01_stylegan_tour(tmp_path, notebook_model):
    r = run_notebook(ROOT / "notebooks/01_stylegan_tour.ipynb",
                     {"MODEL": notebook_model, "SEEDS": [0, 1, 2], "OUT": str(tmp_path)},
                     ["max_abs_img", "max_abs_ws"], tmp_path)
    assert r["max_abs_img"] < 1e-4 and r["max_abs_ws"] < 1e-4
    assert (tmp_path / "mapper.onnx").stat().st_size > 0 and (tmp_path / "synthesis.onnx").stat().st_size > 0
