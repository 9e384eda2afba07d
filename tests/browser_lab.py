"""JupyterLab + Debian Chromium helpers for the browser test and ``scripts/workbench_screenshot.py``.

The recipe (docs/testing.md): a JupyterLab server on a temporary root with its own
config/data/runtime/settings dirs (news and update checks off), Chromium headless with the flags that keep
it off the network, "Run All Cells" through the menu once the kernel says Idle.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A python3 notebook of code ``cells``."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)
    return path


@contextmanager
def jupyter_lab(tmp: Path, app: str = "jupyterlab"):
    """Start JupyterLab (``app="notebook"``: Notebook 7, the same server and extensions) with root ``tmp/root``
    (kernels use this interpreter); yield (base url, token, root)."""
    root = tmp / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
        env[var] = str(tmp / var.lower())
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--allow-root"]
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield base, token, root
        finally:
            try:
                req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
                urllib.request.urlopen(req, timeout=5)
                proc.wait(timeout=15)
            except Exception:  # noqa: BLE001 - fall back to ending the process we started
                pass
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)


@contextmanager
def chromium_page(profile: Path, width: int = 1400, height: int = 1000):
    """A headless Debian-Chromium page (fresh profile ``profile``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_FLAGS, viewport={"width": width, "height": height})
        try:
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()


def open_and_run_all(page, base: str, token: str, notebook: str, timeout_ms: int = 120_000,
                     app: str = "jupyterlab") -> None:
    """Open ``notebook`` (relative to the root) in ``app`` (see :func:`jupyter_lab`), wait for an idle kernel,
    Run All Cells via the menu."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    path = "lab/tree" if app == "jupyterlab" else "notebooks"
    page.goto(f"{base}/{path}/{notebook}?token={token}")
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    try:  # a second notebook in the same workspace asks for its kernel (the first one does not)
        page.locator(".jp-Dialog button", has_text="Select").first.click(timeout=5_000)
    except PlaywrightTimeout:
        pass
    if app == "jupyterlab":
        page.get_by_text("(ipykernel) | Idle").first.wait_for(timeout=timeout_ms)
    else:  # Notebook 7 has no status bar: its toolbar's execution indicator says when the kernel is idle
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=timeout_ms)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def widget_button(page, name: str):
    """An ipywidgets button by its text (JupyterLab has its own buttons called "Run")."""
    return page.locator("button.jupyter-button").filter(has_text=re.compile(rf"^\W*{re.escape(name)}\s*$")).first


def widget_texts(page) -> str:
    """The text of every ipywidgets HTML widget on the page, joined."""
    return " ".join(page.locator(".widget-html").all_inner_texts())


def element_rgb(locator) -> np.ndarray:
    """int16 [H, W, 3] screenshot of one element."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def wait_for(fn, timeout: float = 60.0, what: str = "condition"):
    """Poll ``fn()`` every 0.2 s until it is truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
