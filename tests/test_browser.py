"""The workbench in a real browser: JupyterLab + Debian's Chromium, driven by Playwright (recipe:
docs/testing.md; helpers in ``browser_lab.py``). A notebook builds the Workbench on the tiny test model; the
test checks, with real clicks, keys and screenshots checked by pixel: the image drawn crisp (sent at its own
size, scaled by the canvas), a handle's hint that goes with its target, Step and the S key (no point placed),
Run then Stop (the loss curve stays put under the status area), Undo back to the earlier loss curve, the mask
modes and the brush circle, painting, saving a GIF, a right-click delete, a new seed that asks first, and
the actions seen with the image in a 1000 px window (JupyterLab's file browser open) and in a narrower one,
where the canvas shrinks and a click still lands on the image pixel under it. Then it prints how fast runs
are shown against the back-end's ms/step (tiny and bundled model): a benchmark figure, not a check. All of it
in JupyterLab, and again in Notebook 7 where the ``notebook`` package is installed (drawing from Run's worker
thread included). Clicks go where the canvas is at that moment: clicking a button low in the panel scrolls
the page (15 px in Notebook 7, more than a point's hit radius).

Needs ``/usr/bin/chromium`` (``scripts/setup.sh --browser`` installs it); never ``playwright install``.
"""

from __future__ import annotations

import importlib.util
import io
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
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dragnb.checkpoints import BUNDLED

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium missing: run scripts/setup.sh --browser"),
]
SIZE = 512  # canvas pixels of the 64 px tiny model


def stop_if_running(page) -> None:
    """Click Stop, unless the run has ended by itself (converged) before the click."""
    try:
        widget_button(page, "Stop").click(timeout=5_000)
    except PlaywrightTimeout:
        assert "run ended" in widget_texts(page), "no Stop button during a run"


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


def image_xy(x: int, y: int) -> tuple[float, float]:
    """Canvas pixel of the tiny model's image pixel (x, y)'s centre (8 canvas pixels per image pixel)."""
    k = SIZE / 64
    return (x + 0.5) * k, (y + 0.5) * k


def assert_image_and_actions_in_view(page, canvas, width: int, height: int, rows: int = 1) -> float:
    """With the canvas scrolled into a ``width`` x ``height`` viewport, the Run button (in the toolbar right
    above the image, in at most ``rows`` rows) and the whole image are in it: by their boxes, and by a
    screenshot of the viewport (the image there as the canvas shows it, the button's label drawn). Returns the
    canvas' displayed width (CSS pixels)."""
    canvas.scroll_into_view_if_needed()
    time.sleep(0.5)
    run, img = widget_button(page, "Run").bounding_box(), canvas.bounding_box()
    assert 0 <= run["y"] < img["y"] and img["y"] - (run["y"] + run["height"]) < 20 + 36 * (rows - 1), (run, img)
    for b in (run, img):
        assert b["x"] >= 0 and b["y"] >= 0 and b["x"] + b["width"] <= width and b["y"] + b["height"] <= height, b
    assert abs(img["height"] - img["width"]) < 2, f"the image lost its aspect ratio: {img}"
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(np.int16)

    def crop(b, inset=2):
        return shot[round(b["y"]) + inset:round(b["y"] + b["height"]) - inset,
                    round(b["x"]) + inset:round(b["x"] + b["width"]) - inset]

    seen, own = crop(img), element_rgb(canvas)[2:-2, 2:-2]
    own = np.asarray(Image.fromarray(own.astype(np.uint8)).resize(seen.shape[1::-1])).astype(np.int16)
    assert np.abs(seen - own).mean() < 12 and seen.std() > 10, "the image is not seen in the window"
    assert crop(run).std() > 10, "the Run button is not seen in the window"
    return img["width"]


@pytest.mark.slow  # a JupyterLab server and a browser
@pytest.mark.parametrize("app", ["jupyterlab", "notebook"], ids=["JupyterLab", "Notebook 7"])
def test_workbench_in_browser(app, tiny_model_path, tmp_path):
    if importlib.util.find_spec(app) is None:
        pytest.skip(f"{app} is not installed (the dev extras install it)")
    with jupyter_lab(tmp_path / "lab", app) as (base, token, root), chromium_page(tmp_path / "profile") as page:
        out = root / "out"
        write_notebook(root / "workbench.ipynb", [
            "import torch\ntorch.set_num_threads(1)\nimport dragnb",
            f"wb = dragnb.Workbench(model={str(tiny_model_path)!r})\n"
            f"wb.save_path.value = {str(out / 'drag')!r}\n"
            "wb.max_steps.value = 100000\n"
            "wb",
        ])
        open_and_run_all(page, base, token, "workbench.ipynb", app=app)

        def step_number() -> int:  # the status line's "step N": steps taken since the seed image
            m = re.search(r"step (\d+)", widget_texts(page))
            return int(m.group(1)) if m else -1

        canvas = page.locator(".jp-OutputArea-output canvas[width='512']").first  # the image (not the loss curve)
        canvas.wait_for(timeout=120_000)
        wait_for(lambda: "0 point pairs" in widget_texts(page), 60, "the workbench status")
        time.sleep(0.5)  # ipyevents attaches a little after the view

        def at(x, y):  # canvas pixels -> page pixels where the canvas is now (clicking a button may scroll it)
            box = canvas.bounding_box()
            k = box["width"] / SIZE
            return box["x"] + x * k, box["y"] + y * k

        # The image is sent at its own size and scaled by the canvas with smoothing off: crisp 8x8 blocks.
        # (The screenshot can be a pixel larger than the canvas and a pixel off: compare inside each block.)
        blocks = element_rgb(canvas)[:SIZE, :SIZE].reshape(64, 8, 64, 8, 3)[:, 1:7, :, 1:7]
        assert np.abs(blocks - blocks[:, :1, :, :1]).max() <= 2, "image pixels are smoothed, not crisp blocks"
        assert np.abs(np.diff(blocks[:, 0, :, 0], axis=1)).mean() > 1, "the image is blank"

        # A handle, then its target (image pixels (25, 25) -> (35, 27) at 8 canvas pixels per image pixel); the
        # handle's hint goes once the target is placed.
        page.mouse.click(*at(200, 200))
        wait_for(lambda: "now click where it should go" in widget_texts(page), 30, "the handle's hint")
        page.mouse.click(*at(280, 216))
        wait_for(lambda: "1 point pair" in widget_texts(page), 30, "a point pair")
        assert "now click" not in widget_texts(page), "the handle's hint stayed after the target was placed"
        before = element_rgb(canvas)

        # Step: the canvas shows the stepped image and the trail.
        for _ in range(3):
            n = step_number()
            widget_button(page, "Step").click()
            wait_for(lambda n=n: "loss" in widget_texts(page) and step_number() > n, 60, "a step")
        time.sleep(0.3)
        assert np.abs(element_rgb(canvas) - before).mean() > 0.01, "the canvas did not change after Step"

        # Keys with the mouse over the image, no click: S steps and places no point.
        page.mouse.move(*at(100, 450))
        n = step_number()
        page.keyboard.press("s")
        wait_for(lambda: step_number() == n + 1, 60, "a step from the S key")
        assert "now click" not in widget_texts(page), "the key placed a point"
        loss_curve = page.locator(".jp-OutputArea-output canvas[width='300']").first
        curve_before_run, curve_y = element_rgb(loss_curve), loss_curve.bounding_box()["y"]
        steps_before_run = step_number()

        # Run, then Stop: the step counter stops. Meanwhile: how fast steps are shown, against the compute.
        widget_button(page, "Run").click()
        wait_for(lambda: step_number() >= 8, 60, "running steps")
        report_speed(f"tiny 64 px model ({app})", page, step_number, 3.0)
        stop_if_running(page)
        widget_button(page, "Run").wait_for(timeout=30_000)
        time.sleep(0.5)  # widget views update independently: the last status can show just after the button
        stopped = step_number()
        time.sleep(1.5)
        assert step_number() == stopped, "steps continued after Stop"
        assert loss_curve.bounding_box()["y"] == curve_y, "the status area changed height: the loss curve moved"

        # Undo: back to before the run, with the loss curve of that state (no line over the undone steps).
        widget_button(page, "Undo").click()
        wait_for(lambda: step_number() == steps_before_run, 30,
                 f"the undo to step {steps_before_run}, from {stopped}: {widget_texts(page)}")
        time.sleep(0.3)
        assert np.abs(element_rgb(loss_curve) - curve_before_run).mean() < 1, "Undo left the undone loss curve"

        # Paint the mask: the fixed region (outside the stroke) is darkened. The modes are buttons; the brush
        # shows as a circle under the cursor.
        corner = element_rgb(canvas)[480:500, 480:500].mean()
        widget_button(page, "Mask").click()
        assert widget_button(page, "Movable").is_visible() and widget_button(page, "Fixed").is_visible()
        no_brush = element_rgb(canvas)
        page.mouse.move(*at(400, 400))
        time.sleep(0.5)
        ring = np.abs(element_rgb(canvas) - no_brush).sum(2)
        ys, xs = np.nonzero(ring > 30)
        assert len(xs) and abs(xs.mean() - 400) < 6 and abs(ys.mean() - 400) < 6, "no brush circle at the cursor"
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
        canvas.scroll_into_view_if_needed()
        page.mouse.click(*at(280, 216), button="right")
        wait_for(lambda: "0 point pairs" in widget_texts(page), 30, "the pair to be deleted")
        assert "⚠" not in widget_texts(page), widget_texts(page)

        # A new seed would drop the mask and the drag: asked first; Keep changes nothing.
        seed_box = page.locator(".widget-inline-hbox:has(> label:text-is('seed')) input").first
        seed_box.click()
        seed_box.fill("5")
        seed_box.press("Enter")
        wait_for(lambda: "drops" in widget_texts(page), 30, "the question before a new image")
        widget_button(page, "Keep").click()
        wait_for(lambda: seed_box.input_value() == "0", 30, "the seed control to show the image in use")
        wait_for(lambda: not widget_button(page, "Keep").is_visible(), 30, "the question to go")
        assert "seed 0" in widget_texts(page) and "drops" not in widget_texts(page)

        # A 1000 px window (JupyterLab: with the file browser open): the actions are seen with the image. Then
        # a narrower one: the canvas shrinks with the notebook, and a click lands on the image pixel under it.
        page.set_viewport_size({"width": 1000, "height": 800})
        if app == "jupyterlab" and not page.locator("#filebrowser").is_visible():
            page.locator(".jp-SideBar .lm-TabBar-tab[data-id='filebrowser']").first.click()
            page.locator("#filebrowser").wait_for(timeout=10_000)
        assert_image_and_actions_in_view(page, canvas, 1000, 800)
        narrow = 800 if app == "jupyterlab" else 480  # Notebook 7 has no file browser beside the notebook
        page.set_viewport_size({"width": narrow, "height": 800})
        shown = assert_image_and_actions_in_view(page, canvas, narrow, 800, rows=2)  # the toolbar may wrap
        assert 200 < shown < 480, f"the canvas was not shrunk with the notebook: {shown} px wide"
        page.mouse.click(*at(*image_xy(10, 40)))  # image pixel (10, 40), on a canvas shown smaller
        wait_for(lambda: "Handle at (10, 40)" in widget_texts(page), 30, f"the handle at (10, 40): "
                 f"{widget_texts(page)}")
        page.keyboard.press("Escape")
        wait_for(lambda: "Handle at" not in widget_texts(page), 30, "Escape to drop the handle")
        page.set_viewport_size({"width": 1400, "height": 1000})

        # The bundled model: how fast a run is shown, against the compute (printed, not asserted).
        if BUNDLED["toyfaces"].exists():
            write_notebook(root / "speed.ipynb", [
                "import torch\ntorch.set_num_threads(1)\nimport dragnb",
                "wb = dragnb.Workbench()\nwb.max_steps.value = 100000\n"
                "wb.add_point((20, 64), (110, 64))  # far: the run goes on while it is measured\nwb",
            ])
            open_and_run_all(page, base, token, "speed.ipynb", app=app)
            wait_for(lambda: "1 point pair" in widget_texts(page), 120, "the bundled model's workbench")
            widget_button(page, "Run").click()
            wait_for(lambda: step_number() >= 5, 120, "running steps")
            report_speed(f"bundled toyfaces 128 px, PyTorch ({app})", page, step_number, 6.0)
            page.locator("button.jupyter-button", has_text="Internals").first.click()
            time.sleep(1.0)
            report_speed(f"the same with Internals open ({app})", page, step_number, 6.0)
            stop_if_running(page)
            widget_button(page, "Run").wait_for(timeout=60_000)
            if importlib.util.find_spec("onnxruntime") is not None:  # the same on ONNX Runtime, from the start
                page.locator("button.jupyter-button", has_text="Internals").first.click()
                widget_button(page, "Reset image").click()
                wait_for(lambda: step_number() == 0, 60, "the seed image")
                page.locator(".widget-inline-hbox:has(> label:text-is('back-end')) select").first.select_option(
                    label="ONNX Runtime")  # exports the artifacts on first use (the workbench's bar shows it)
                wait_for(lambda: "back-end: ort" in widget_texts(page), 300, "the ONNX Runtime back-end")
                widget_button(page, "Run").click()
                wait_for(lambda: step_number() >= 5, 120, "running steps")
                report_speed(f"bundled toyfaces 128 px, ONNX Runtime ({app})", page, step_number, 6.0)
                stop_if_running(page)
                widget_button(page, "Run").wait_for(timeout=60_000)
                assert "⚠" not in widget_texts(page), widget_texts(page)
