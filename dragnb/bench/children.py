"""Measurements that need a fresh process: the peak RSS of a drag (PyTorch, ORT, DragSession on the artifacts,
the torch-free runtime file) and the soak. ``python -m dragnb.bench --child JSON`` runs one job (:func:`main`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from ..testing import UNIMPORTABLE_SRC, make_unimportable
from .machine import open_files, peak_rss_mb, rss_mb
from .workload import Drag, load_model, make_backend


def child_job(model: str, feature_block: int, threads: int, artifacts_root, steps: int, **extra) -> dict:
    """A child job: the model as named on the command line, its feature block, threads, artifacts and steps."""
    return {"model": model, "feature_block": feature_block, "threads": threads, "artifacts_root": str(artifacts_root),
            "steps": int(steps), **extra}


def soak_job(model: str, feature_block: int, threads: int, artifacts_root, steps: int, **extra) -> dict:
    """A soak job (:func:`child_soak`): growth is measured after a warm-up of a fifth of the steps, at most 100."""
    warmup = min(100, int(steps) // 5)
    return child_job(model, feature_block, threads, artifacts_root, steps, warmup=warmup, kind="soak", **extra)


def run_child(job: dict) -> dict:
    """Run ``job`` in a fresh interpreter (python -m dragnb.bench --child JSON); its JSON result."""
    cmd = [sys.executable, "-m", "dragnb.bench", "--child", json.dumps(job)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=job.get("timeout", 3600))
    if p.returncode != 0:
        raise RuntimeError(f"bench child {job['kind']}/{job.get('backend')} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_each(job: dict, backends) -> dict:
    """``job`` once per back-end, each in its own fresh process: {backend: result}."""
    return {k: run_child({**job, "backend": k}) for k in backends}


def child_drag(job: dict) -> dict:
    """(fresh process) One drag of ``job["steps"]`` steps, the last one rendering; peak RSS and timings."""
    import torch

    torch.set_num_threads(job["threads"])
    if job["backend"] == "ort":  # module imports are the process's start, not the drag's
        from ..backends import ort_backend  # noqa: F401
        from ..backends.ort_cache import export_settings

        export_settings(0, "const")
    G, _ = load_model(job["model"])
    fb = job["feature_block"]
    drag = Drag(G, mask=job.get("mask", False))
    base = rss_mb()
    t0 = time.perf_counter()
    kw = {"options": job["options"]} if job.get("options") and job["backend"] == "ort" else {}
    b = make_backend(job["backend"], G, fb, job["threads"], job["artifacts_root"], **kw)
    start_s = time.perf_counter() - t0  # the back-end ready to drag (cached artifacts: key, verify, sessions)
    state = drag.begin(b)
    drag.step(b, state)
    first_step_s = time.perf_counter() - t0  # ... + start + F0 + the first step
    for i in range(job["steps"] - 1):
        drag.step(b, state, render=(i == job["steps"] - 2))
    return {"peak_rss_mb": peak_rss_mb(), "base_rss_mb": base, "end_rss_mb": rss_mb(), "start_s": start_s,
            "first_step_s": first_step_s}


# The torch-free runtime's drag, run by ``python -c`` in a process where torch and dragnb cannot be imported
# (onnxruntime-training imports torch whenever it is installed): the memory of the on-device loop alone.
_RUNTIME_CHILD = UNIMPORTABLE_SRC + r"""
make_unimportable("torch", "dragnb")
import json, os, time
import numpy as np

job = json.loads(sys.argv[1])
sys.path.insert(0, job["folder"])  # the runtime's copy in the artifact folder, and the modules beside it
import ort_runtime as R
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
base = rss()
t0 = time.perf_counter()
rt = R.DragRuntime(job["folder"], threads=job["threads"], check_hashes=False)
handles = np.array(job["handles"], np.int64)
targets = np.array(job["targets"], np.float32)
rt.start(rt.seed_ws(0, 0.7), "w+", job["num_layers"])
_, f0 = rt.features()
ref = np.ascontiguousarray(f0[:, handles[:, 0], handles[:, 1]].T)
del f0
for i in range(job["steps"]):
    out = rt.step(handles, targets, ref, None, None, 10.0, job["r1"], job["r2"], -1.0, False, job["lr"],
                  i == job["steps"] - 1)
    handles = out["tracked_rc"]
    if i == 0:
        start_s = time.perf_counter() - t0
hwm = [int(x.split()[1]) / 1024 for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
print(json.dumps({"peak_rss_mb": hwm, "base_rss_mb": base,
                  "end_rss_mb": rss(), "start_s": start_s, "torch_imported": "torch" in sys.modules}))
"""


def child_runtime(job: dict) -> dict:
    """The same drag through the torch-free runtime copied in the artifact folder (numpy + onnxruntime only), in a
    fresh process."""
    p = subprocess.run([sys.executable, "-c", _RUNTIME_CHILD, json.dumps(job)], capture_output=True, text=True,
                       timeout=job.get("timeout", 3600))
    if p.returncode != 0:
        raise RuntimeError(f"bench child runtime failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def child_session(job: dict) -> dict:
    """(fresh process, torch and onnx unimportable) The same drag through ``DragSession`` on the artifact folder
    alone (``ArtifactModel``): the public API's torch-free ORT drag. Peak RSS and timings as :func:`child_drag`.

    The session's own rules differ from :class:`~dragnb.bench.workload.Drag` in two details that do not change
    the memory: the tolerance must be > 0 (1e-6: the handles reach integer targets only by landing on them
    exactly), and the seed's image is rendered when the drag starts (F0).
    """
    make_unimportable("torch", "onnx")  # the meta-path finders see every import from here on
    from ..backends.ort_model import ArtifactModel
    from ..backends.ort_sessions import import_onnxruntime
    from ..drag import geometry
    from ..session import DragSession

    import_onnxruntime()  # module imports are the process's start, not the drag's
    base = rss_mb()
    t0 = time.perf_counter()
    model = ArtifactModel(job["folder"], threads=job["threads"])
    s = DragSession(model, seed=0, truncation_psi=0.7, backend="ort", num_layers=job["num_layers"], r1=job["r1"],
                    r2=job["r2"], lr=job["lr"], tolerance=1e-6, render_every=job["steps"])
    start_s = time.perf_counter() - t0  # the session ready to drag: manifest, hashes, sessions, the seed's ws
    for h, t in zip(geometry.rc_to_xy(job["handles"]), geometry.rc_to_xy(job["targets"])):  # (row, col) -> (x, y)
        s.add_point(handle=tuple(h), target=tuple(t))
    steps = sum(1 for _ in s.run(max_steps=job["steps"]))  # the last step renders the image
    return {"peak_rss_mb": peak_rss_mb(), "base_rss_mb": base, "end_rss_mb": rss_mb(), "start_s": start_s,
            "steps": steps, "torch_imported": "torch" in sys.modules}


def child_soak(job: dict) -> dict:
    """(fresh process) ``steps`` steps; a new drag (start, F0; mask on every other drag) every 100 steps, an
    image every 10th step. RSS and open files sampled after every step; growth after the warm-up."""
    import torch

    torch.set_num_threads(job["threads"])
    G, _ = load_model(job["model"])
    b = make_backend(job["backend"], G, job["feature_block"], job["threads"], job["artifacts_root"])
    drags = [Drag(G), Drag(G, mask=True)]
    rss, fds = [], []
    state = None
    for i in range(job["steps"]):
        if i % 100 == 0:
            drag = drags[(i // 100) % 2]
            state = drag.begin(b)
        drag.step(b, state, render=(i % 10 == 9))
        rss.append(rss_mb())
        fds.append(open_files())
    warm = min(job["warmup"], len(rss) - 1)
    after = rss[warm:]
    return {"steps": job["steps"], "warmup": warm, "rss_mb_after_warmup": rss[warm], "rss_mb_end": rss[-1],
            "rss_mb_max_after_warmup": max(after), "rss_growth": (max(after) - rss[warm]) / rss[warm],
            "fd_after_warmup": fds[warm], "fd_end": fds[-1], "fd_growth": max(fds[warm:]) - fds[warm],
            "rss_mb_samples": rss[:: max(1, len(rss) // 50)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="dragnb bench child process (internal)")
    ap.add_argument("--child", required=True)
    job = json.loads(ap.parse_args(argv).child)
    fn = {"drag": child_drag, "session": child_session, "soak": child_soak}[job["kind"]]
    print(json.dumps(fn(job)))
    return 0
