"""Load checkpoint files in a child process, under a memory cap and a time cap per file.

A hostile file must not be able to take the test run down with it (a segfault, a 20 GB allocation, a hang),
so each file is loaded by ``dragnb.checkpoints.load_generator`` in a child Python whose address space is
capped (``RLIMIT_AS`` = its size once torch is imported + ``mem_cap``). The parent gives each file
``time_cap`` seconds and starts a fresh child after a crash or a hang. Many files share one child, so torch
is imported once per batch, not once per file.

Each result is a dict: ``path``, ``status`` (``ok``: a generator; ``refused``: a ``CheckpointError``;
``escaped``: any other exception; ``crashed``: the child died; ``timeout``), ``type``, ``message``,
``seconds`` and ``peak_growth_mb`` (how far the child's peak RSS rose above its RSS before this file).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time

import torch

torch.set_num_threads(1)
from dragnb.checkpoints import load_generator
from dragnb.checkpoints.errors import CheckpointError


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])


def reset_peak():
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so each file's own peak is seen.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kb("VmRSS:")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kb():
    return status_kb("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


cap = status_kb("VmSize:") * 1024 + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
paths = json.load(open(sys.argv[1]))
for i in range(int(sys.argv[3]), len(paths)):
    print(json.dumps({"start": i}), flush=True)
    before, t = reset_peak(), time.perf_counter()
    try:
        G = load_generator(paths[i])
        del G
        status, kind, msg = "ok", "", ""
    except CheckpointError as e:
        status, kind, msg = "refused", type(e).__name__, str(e)
    except BaseException as e:  # noqa: B036 - the point is to report whatever escapes
        status, kind = "escaped", type(e).__name__
        msg = str(e.args[0])[:2000] if len(e.args) == 1 and isinstance(e.args[0], str) else "(not shown)"
    seconds = time.perf_counter() - t
    growth = (peak_kb() - before) / 1024
    print(json.dumps({"done": i, "status": status, "type": kind, "message": msg[:4000], "seconds": seconds,
                      "peak_growth_mb": growth}), flush=True)
"""

OOM_WORDS = ("out of memory", "MemoryError", "can't allocate memory", "cannot allocate memory")


def load_in_child(paths, *, mem_cap: int = 2 << 30, time_cap: float = 10.0, startup: float = 120.0) -> list[dict]:
    """Load every path in ``paths`` (see the module docstring); returns one result dict per path, in order."""
    paths = [str(p) for p in paths]
    results: list[dict | None] = [None] * len(paths)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as d:
        listing, errlog = Path(d) / "paths.json", Path(d) / "stderr.txt"
        listing.write_text(json.dumps(paths))
        i = 0
        while i < len(paths):
            with open(errlog, "wb") as err:
                proc = subprocess.Popen([sys.executable, "-c", CHILD, str(listing), str(mem_cap), str(i)],
                                        stdout=subprocess.PIPE, stderr=err, env=env)
            current, started = None, False
            deadline = time.monotonic() + startup
            buf = b""
            try:
                while True:
                    wait = deadline - time.monotonic()
                    ready = select.select([proc.stdout], [], [], max(wait, 0))[0] if wait > 0 else []
                    if not ready:
                        if current is None:
                            raise RuntimeError(f"the loader child did not start: {errlog.read_text()[-2000:]}")
                        results[current] = dict(path=paths[current], status="timeout", type="", message="",
                                                seconds=time_cap, peak_growth_mb=0.0)
                        i = current + 1
                        break
                    chunk = os.read(proc.stdout.fileno(), 1 << 16)
                    if not chunk:  # the child exited
                        if current is None:
                            if started:
                                i = len(paths)
                                break
                            raise RuntimeError(f"the loader child failed: {errlog.read_text()[-2000:]}")
                        proc.wait()
                        results[current] = dict(path=paths[current], status="crashed", type=f"rc {proc.returncode}",
                                                message=errlog.read_text()[-2000:], seconds=0.0, peak_growth_mb=0.0)
                        i = current + 1
                        break
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        msg = json.loads(line)
                        if "start" in msg:
                            current, started = msg["start"], True
                            deadline = time.monotonic() + time_cap
                        else:
                            results[msg["done"]] = dict(path=paths[msg["done"]], **{k: v for k, v in msg.items()
                                                                                   if k != "done"})
                            current = None
                            i = msg["done"] + 1
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()
    return results


def problems(results: list[dict], *, max_growth_mb: float = 300.0, max_message: int = 1000) -> list[str]:
    """Every result that breaks the loading contract, one line each: anything but a generator or a bounded
    ``CheckpointError`` naming the file, a refusal that was really the memory cap, or a peak above the cap."""
    bad = []
    for r in results:
        name = Path(r["path"]).name
        if r["status"] not in ("ok", "refused"):
            bad.append(f"{name}: {r['status']} {r['type']}: {r['message'][:300]}")
        elif r["status"] == "refused" and any(w in r["message"] for w in OOM_WORDS):
            bad.append(f"{name}: refused only by the memory cap: {r['message'][:300]}")
        elif r["status"] == "refused" and (r["path"] not in r["message"] or len(r["message"]) > max_message):
            bad.append(f"{name}: the message does not name the file or is {len(r['message'])} chars long: "
                       f"{r['message'][:300]}")
        elif r["peak_growth_mb"] > max_growth_mb:
            bad.append(f"{name}: peak memory rose by {r['peak_growth_mb']:.0f} MB ({r['status']})")
    return bad
