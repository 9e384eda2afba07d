"""The workbench in a real browser: JupyterLab + Debian's Chromium, driven by Playwright (recipe:
docs/testing.md; helpers in ``browser_lab.py``). A notebook builds the Workbench on the
tiny test model; the test clicks a handle and a target on the canvas, presses Step and sees the canvas
change, presses Run then Stop and sees the step counter stop, paints the mask, saves a GIF and finds it,
and deletes the pair with a right-click.

Needs ``/usr/bin/chromium`` (``scripts/setup.sh --browser`` installs it); never ``playwright install``.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from browser_lab import (
    CHROMIUM,
    chromium_page,
    element_rgb,
    jupyter_lab,
    open_and_run_all,
    wait_for,
    widget_button,
    widget_texts,
    write_notebook,
)
from PIL import Image

from dragnb.checkpoints import BUNDLED

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium missing: run scripts/setup.sh --browser"),
]
SIZE = 512  # canvas pixels of the 64 px tiny model


def report_speed(label: str, page, step_number, seconds: float = 6.0) -> float | None:
    """A benchmark figure, not a check: the wall-clock time per step as the page shows the steps, over the
    back-end's ms/step (the status line's "compute N ms/step"), while a run goes on (at most ``seconds``).
    Printed (``pytest -s`` shows it) and returned; None when the run ended before enough steps were shown."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = widget_texts(page)
        if "run ended" in text:
            break
        samples.append((time.monotonic(), step_number(), text))
        time.sleep(0.05)
    if len(samples) < 2 or samples[-1][1] - samples[0][1] < 5:
        print(f"\n[speed] {label}: the run ended before enough steps were shown")
        return None
    (t0, n0, _), (t1, n1, text) = samples[0], samples[-1]
    compute = float(re.search(r"compute (\d+) ms/step", text).group(1))
    wall_ms = (t1 - t0) / (n1 - n0) * 1000
    ratio = wall_ms / max(compute, 1.0)
    print(f"\n[speed] {label}: {wall_ms:.1f} ms per step on the wall clock (as shown), compute "
          f"{compute:.0f} ms/step: ratio {ratio:.2f}")
    return ratio


@pytest.mark.slow  # a JupyterLab server and a browser
def test_workbench_in_browser(tiny_model_path, tmp_path):
    with jupyter_lab(tmp_path / "lab") as (base, token, root), chromium_page(tmp_path / "profile") as page:
        out = root / "out"
        write_notebook(root / "workbench.ipynb", [
            "import torch\ntorch.set_num_threads(1)\nimport dragnb",
            f"wb = dragnb.Workbench(model={str(tiny_model_path)!r})\n"
            f"wb.save_path.value = {str(out / 'drag')!r}\n"
            "wb.max_steps.value = 100000\n"
            "wb",
        ])
        open_and_run_all(page, base, token, "workbench.ipynb")

        def step_number() -> int:  # the status line's "step N": steps taken since the seed image
            m = re.search(r"step (\d+)", widget_texts(page))
            return int(m.group(1)) if m else -1

        canvas = page.locator(".jp-OutputArea-output canvas[width='512']").first  # the image (not the loss curve)
        canvas.wait_for(timeout=120_000)
        wait_for(lambda: "0 point pairs" in widget_texts(page), 60, "the workbench status")
        time.sleep(0.5)  # ipyevents attaches a little after the view
        box = canvas.bounding_box()

        def at(x, y):  # canvas pixels -> page pixels (the canvas is shown 1:1)
            return box["x"] + x, box["y"] + y

        # A handle, then its target (image pixels (25, 25) -> (35, 27) at 8 canvas pixels per image pixel).
        page.mouse.click(*at(200, 200))
        page.mouse.click(*at(280, 216))
        wait_for(lambda: "1 point pair" in widget_texts(page), 30, "a point pair")
        before = element_rgb(canvas)

        # Step: the canvas shows the stepped image and the trail.
        for _ in range(3):
            n = step_number()
            widget_button(page, "Step").click()
            wait_for(lambda n=n: "loss" in widget_texts(page) and step_number() > n, 60, "a step")
        time.sleep(0.3)
        assert np.abs(element_rgb(canvas) - before).mean() > 0.01, "the canvas did not change after Step"

        # Run, then Stop: the step counter stops. Meanwhile: how fast steps are shown, against the compute.
        widget_button(page, "Run").click()
        wait_for(lambda: step_number() >= 8, 60, "running steps")
        report_speed("tiny 64 px model", page, step_number, 3.0)
        if "run ended" not in widget_texts(page):
            widget_button(page, "Stop").click()
        widget_button(page, "Run").wait_for(timeout=30_000)
        stopped = step_number()
        time.sleep(1.5)
        assert step_number() == stopped, "steps continued after Stop"

        # Paint the mask: the fixed region (outside the stroke) is darkened.
        corner = element_rgb(canvas)[480:500, 480:500].mean()
        widget_button(page, "Mask").click()
        page.mouse.move(*at(150, 150))
        page.mouse.down()
        page.mouse.move(*at(300, 260), steps=8)
        page.mouse.up()
        wait_for(lambda: "movable" in widget_texts(page), 30, "the mask")
        time.sleep(0.3)
        assert element_rgb(canvas)[480:500, 480:500].mean() < corner - 5, "the mask overlay was not drawn"

        # Save a GIF of the recorded steps.
        widget_button(page, "GIF").click()
        gif = out / "drag.gif"
        wait_for(lambda: "saved" in widget_texts(page), 60, "the saved message")
        with Image.open(gif) as im:
            assert im.n_frames >= 2 and im.size == (SIZE, SIZE)

        # Right-click on the target deletes its pair (ipyevents reports the button).
        widget_button(page, "Points").click()
        page.mouse.click(*at(280, 216), button="right")
        wait_for(lambda: "0 point pairs" in widget_texts(page), 30, "the pair to be deleted")
        assert "⚠" not in widget_texts(page), widget_texts(page)

        # The bundled model: how fast a run is shown, against the compute (printed, not asserted).
        if BUNDLED["toyfaces"].exists():
            write_notebook(root / "speed.ipynb", [
                "import torch\ntorch.set_num_threads(1)\nimport dragnb",
                "wb = dragnb.Workbench()\nwb.max_steps.value = 100000\n"
                "wb.add_point((40, 60), (100, 60))  # far: the run goes on while it is measured\nwb",
            ])
            open_and_run_all(page, base, token, "speed.ipynb")
            wait_for(lambda: "1 point pair" in widget_texts(page), 120, "the bundled model's workbench")
            widget_button(page, "Run").click()
            wait_for(lambda: step_number() >= 5, 120, "running steps")
            report_speed("bundled toyfaces 128 px, PyTorch", page, step_number, 8.0)
            page.locator("button.jupyter-button", has_text="Internals").first.click()
            time.sleep(1.0)
            report_speed("the same with Internals open", page, step_number, 6.0)
            widget_button(page, "Stop").click()
            widget_button(page, "Run").wait_for(timeout=60_000)
