"""Screenshot of the workbench in use (``docs/workbench.png``), taken in JupyterLab + Debian Chromium.

    .venv/bin/python scripts/workbench_screenshot.py [--model toyfaces] [--seed 3] [--points "x,y->x,y; ..."]

Places the points with mouse clicks, paints a mask, runs some steps, opens the internals view and saves a
screenshot of the widget. ``--model`` defaults to the bundled model, or a tiny random generator when the
bundled weights are not installed. Points are image pixels (x, y).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_lab import (  # noqa: E402
    chromium_page,
    jupyter_lab,
    open_and_run_all,
    wait_for,
    widget_button,
    widget_texts,
    write_notebook,
)


def parse_points(text: str) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        h, t = part.split("->")
        pairs.append((tuple(map(float, h.split(","))), tuple(map(float, t.split(",")))))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or checkpoint (default: bundled, else tiny random)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--points", default=None, help='"x,y->x,y; ..." image pixels (default: two drags)')
    ap.add_argument("--steps", type=int, default=60, help="steps to run before the screenshot")
    ap.add_argument("--out", default=str(ROOT / "docs" / "workbench.png"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dragnb-shot-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from dragnb.checkpoints import BUNDLED

            if BUNDLED["toyfaces"].exists():
                model = "toyfaces"
            else:
                import torch

                import dragnb

                torch.manual_seed(0)
                G = dragnb.Generator(dragnb.GeneratorConfig(z_dim=32, w_dim=32, img_resolution=64, channel_base=512,
                                                            channel_max=16, mapping_layers=2))
                model = str(dragnb.save_generator(G, tmp / "tiny.safetensors"))
        print(f"model: {model}")
        with jupyter_lab(tmp / "lab") as (base, token, root), chromium_page(tmp / "profile", 1600, 2000) as page:
            write_notebook(root / "workbench.ipynb", [
                "import torch\ntorch.set_num_threads(1)\nimport dragnb",
                f"wb = dragnb.Workbench(model={model!r})\nwb.seed.value = {args.seed}\n"
                f"wb.max_steps.value = {args.steps}\nwb",
            ])
            open_and_run_all(page, base, token, "workbench.ipynb")
            canvas = page.locator(".jp-OutputArea-output canvas[width='512']").first
            canvas.wait_for(timeout=120_000)
            wait_for(lambda: re.search(r"(\d+)x(\d+) px", widget_texts(page)), 60, "the workbench")
            time.sleep(1.0)
            w, h = map(int, re.search(r"(\d+)x(\d+) px", widget_texts(page)).groups())
            box = canvas.bounding_box()
            s = box["width"] / w

            def at(x, y):  # image pixel centre -> page pixels
                return box["x"] + (x + 0.5) * s, box["y"] + (y + 0.5) * s

            points = parse_points(args.points) if args.points else [
                ((0.41 * w, 0.52 * h), (0.36 * w, 0.52 * h)), ((0.69 * w, 0.70 * h), (0.76 * w, 0.70 * h))]  # seed 3:
            # the left eye 5% out, the right mouth corner 7% out
            for handle, target in points:
                page.mouse.click(*at(*handle))
                page.mouse.click(*at(*target))
            wait_for(lambda: f"{len(points)} point pair" in widget_texts(page), 30, "the points")
            widget_button(page, "Mask").click()  # the region allowed to move: the head, around the drags
            page.mouse.move(*at(0.12 * w, 0.04 * h))
            page.mouse.down()
            for i, y in enumerate(np.arange(0.04, 0.86, 0.05)):  # zig-zag strokes fill the region
                x0, x1 = (0.12, 0.88) if i % 2 == 0 else (0.88, 0.12)
                page.mouse.move(*at(x0 * w, y * h), steps=2)
                page.mouse.move(*at(x1 * w, y * h), steps=12)
            page.mouse.up()
            wait_for(lambda: "movable" in widget_texts(page), 30, "the mask")
            widget_button(page, "Points").click()
            widget_button(page, "Run").click()
            wait_for(lambda: "run ended" in widget_texts(page), 600, "the run to end")
            page.locator("button.jupyter-button", has_text="Internals").first.click()
            wait_for(lambda: "next tracked position" in widget_texts(page), 60, "the internals view")
            time.sleep(1.0)
            widget = page.locator(".jp-OutputArea-output").last
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            widget.screenshot(path=args.out)
            print(f"saved {args.out}")


if __name__ == "__main__":
    main()
