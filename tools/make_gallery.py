"""Regenerate the README gallery (``docs/gallery/``) by running ``notebooks/04_blog_figures.ipynb``::

    .venv/bin/python tools/make_gallery.py                      # bundled model, the notebook's defaults
    .venv/bin/python tools/make_gallery.py --model some.safetensors --steps 80

The notebook runs headless with its parameter cell overridden (MODEL, OUT, SIZE, STEPS); its figures are
written straight into the gallery folder. Nothing is written back into the notebook.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "04_blog_figures.ipynb"


def run(params: dict, timeout: int = 1800) -> None:
    """Execute the notebook with ``params`` assigned in a cell right after its ``parameters`` cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toyfaces", help="bundled name or checkpoint path (default: toyfaces)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "gallery"), help="gallery folder")
    ap.add_argument("--size", type=int, default=192, help="pixels of Figure 2's images (default 192)")
    ap.add_argument("--steps", type=int, default=None, help="drag steps (default: the notebook's)")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = a.model if Path(a.model).suffix == "" else str(Path(a.model).resolve())
    params = {"MODEL": model, "OUT": str(out), "SIZE": a.size}
    if a.steps is not None:
        params["STEPS"] = a.steps
    t0 = time.perf_counter()
    run(params)
    for p in sorted(out.iterdir()):
        print(f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}  {p.stat().st_size / 1024:.0f} KiB")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
