"""The official DragGAN's drag step against dragnb's PyTorch and ONNX Runtime steps, side by side.

Given a checkout of the official code (XingangPan/DragGAN) and an environment that runs it, this times one drag
step of each, on the same network and the same drag, in rounds: official, dragnb PyTorch, dragnb ORT, one step
each per round (the order rotates), so that a change of machine load hits all three alike.

* **Official**: ``viz.renderer.Renderer._render_drag_impl(is_drag=True, to_pil=True)``, the call the official
  gradio app makes per step: the full synthesis with autograd, feature resize, point tracking, motion loss,
  backward, ``torch.optim.Adam`` step and the uint8 / PIL image. The code is imported from ``--official`` in a
  worker process run by ``--official-python``; nothing of it is copied here.
* **dragnb**: ``DragSession.step()`` (tracking, losses, backward, Adam, the full image as uint8) on the network
  converted with ``dragnb convert``, in one worker process per back-end.

Same drag on both sides: seed 0 (``RandomState(0).randn(1, 512)``), psi 0.7, W+ with 6 optimised ws, features of
block 5, lr 1e-3, one handle moving (h/8, h/10) px, no mask, the official radii (r1 = round(3 h / 512) disk,
r2 = round(12 h / 512) window). Each worker's first step (F0 and the reference features) and ``--warmup`` more
are not timed. Workers time the step call alone (no messaging). ``--compat official`` times dragnb's official
mode instead of its default arithmetic (the same settings, reached by that mode's defaults).

    .venv/bin/python tools/official_speed.py --official ../DragGAN --official-python ../venv/bin/python \\
        --pkl net256.pkl net512.pkl --threads 1 all --steps 5 --json docs/bench/official.json

Prints a table per network and thread count with the medians and the ratios to the official step; ``--json``
writes every step time, the tracked points of each side, the machine and the versions. Besides the wall time,
each step's CPU time (``time.process_time``, all threads of the worker) is recorded: with one thread on a
machine whose other jobs take cores away, it is the steadier measure of the work a step does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIDES = ("official", "torch", "ort")
MARK = "@@official_speed "  # prefix of the workers' protocol lines (the official code prints to stdout too)
SEED, PSI, NUM_LAYERS, FEATURE_BLOCK, LR = 0, 0.7, 6, 5, 1e-3


def drag_rc(h: int) -> tuple[list[int], list[int]]:
    """(handle, target) as (row, col): a point 0.4 h from the top-left corner moving (h/8, h/10)."""
    handle = [int(h * 0.4), int(h * 0.4)]
    return handle, [handle[0] + h // 8, handle[1] + h // 10]


# ----------------------------------------------------------------------------
# Workers: one drag each, one timed step per request


def _say(obj: dict) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _serve(step, info: dict) -> None:
    """Answer ``step`` requests on stdin with {"ms", "cpu_ms", "points", ...} until "quit"."""
    _say({"ready": True, **info})
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        extra = step()
        _say({"ms": 1000 * (time.perf_counter() - t0), "cpu_ms": 1000 * (time.process_time() - c0), **extra})


def official_worker(spec: dict) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, os.path.abspath(spec["official"]))
    import dnnlib
    from viz.renderer import Renderer

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from official_reference import stylegan2_path  # Renderer.get_network picks the architecture by the file name

    pkl = stylegan2_path(spec["pkl"])
    r = Renderer(disable_timing=True)
    res = dnnlib.EasyDict()
    r.init_network(res, pkl, SEED, None, True, "const", PSI, None, None, LR)
    r._render_drag_impl(res, is_drag=False, to_pil=True)  # the app shows the image before the first drag
    h = int(r.G.img_resolution)
    handle, target = drag_rc(h)
    points, targets = [handle], [target]  # the renderer tracks the points in this list, in place
    mask = torch.zeros(h, h)  # no flexible area drawn in the app: the mask term is off

    def step() -> dict:
        r._render_drag_impl(res, points, targets, mask, 20, reg=0, feature_idx=FEATURE_BLOCK, r1=3, r2=12,
                            trunc_psi=PSI, is_drag=True, to_pil=True)
        if "error" in res:
            raise RuntimeError(str(res.error))
        return {"points": [[int(v) for v in p] for p in res.points]}

    t0 = time.perf_counter()
    step()  # first step: reference features
    first = 1000 * (time.perf_counter() - t0)
    _serve(step, {"resolution": h, "first_step_ms": first, "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "numpy": np.__version__})


def dragnb_worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])  # the ORT back-end takes torch's thread count
    from dragnb import DragSession

    common = dict(seed=SEED, truncation_psi=PSI, backend=spec["side"], latent_space="w+",
                  device=spec.get("device", "cpu"))
    if spec.get("compat", "dragnb") == "official":  # the same settings, by the mode's own defaults
        s = DragSession(spec["model"], compat="official", **common)
    else:
        s = DragSession(spec["model"], feature_block=FEATURE_BLOCK, num_layers=NUM_LAYERS, lr=LR, r1=spec["r1"],
                        r2=spec["r2"], **common)
    h = s.H
    (hr, hc), (tr, tc) = drag_rc(h)
    s.add_point(handle=(hc, hr), target=(tc, tr))  # (x, y)

    def step() -> dict:
        out = s.step()
        return {"points": [[round(y), round(x)] for x, y in out.handle_points], "loss": out.loss}

    t0 = time.perf_counter()
    step()  # first step: F0, the reference features (and the back-end's first calls)
    first = 1000 * (time.perf_counter() - t0)
    _serve(step, {"resolution": h, "first_step_ms": first, "threads": torch.get_num_threads()})


# ----------------------------------------------------------------------------
# The parent: workers in rounds


class Worker:
    def __init__(self, side: str, python: str, spec: dict, env: dict):
        self.side = side
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([python, __file__, "--worker", json.dumps({**spec, "side": side})],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=tempfile.gettempdir())
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.proc.wait()
        self.log.seek(0)
        raise RuntimeError(f"{self.side} worker exited ({self.proc.returncode}):\n{self.log.read()[-4000:]}")

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def convert(pkl: Path, work: Path) -> Path:
    out = work / (pkl.stem + ".safetensors")
    if not out.exists() or out.stat().st_mtime < pkl.stat().st_mtime:
        from dragnb.checkpoints.convert import convert as dragnb_convert

        dragnb_convert(pkl, out, progress=False)
    return out


def thread_count(t: str) -> int:
    if t == "all":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return int(t)


def measure(pkl: Path, model: Path, threads: int, a) -> dict:
    import numpy as np

    sides = [s for s in SIDES if s in a.sides]
    env_dragnb = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    if a.artifacts:
        env_dragnb["DRAGNB_ARTIFACTS"] = str(a.artifacts)
    base = {"threads": threads, "official": str(a.official), "pkl": str(pkl), "model": str(model),
            "device": getattr(a, "device", "cpu"),  # dragnb's device (tools/device_check.py: the GPU)
            "compat": getattr(a, "compat", "dragnb")}
    workers = {}
    load_before = os.getloadavg()
    try:
        for side in sides:  # one at a time: the start of one (an ORT export) must not slow another's first step
            if side == "official":
                workers[side] = Worker(side, a.official_python, base, dict(os.environ))
            else:
                h = workers["official"].info["resolution"] if "official" in workers else None
                h = h or _resolution(model)
                spec = {**base, "r1": round(3 * h / 512), "r2": round(12 * h / 512)}
                workers[side] = Worker(side, sys.executable, spec, env_dragnb)
            print(f"  {side}: ready, first step {workers[side].info['first_step_ms']:.0f} ms", flush=True)
        times = {s: [] for s in sides}
        cpu = {s: [] for s in sides}
        points = {s: [] for s in sides}
        losses = {s: [] for s in sides}
        for i in range(a.warmup + a.steps):
            order = sides[i % len(sides):] + sides[: i % len(sides)]
            for side in order:
                out = workers[side].step()
                points[side].append(out["points"])
                if "loss" in out:
                    losses[side].append(out["loss"])
                if i >= a.warmup:
                    times[side].append(out["ms"])
                    cpu[side].append(out["cpu_ms"])
            print(f"  round {i + 1}/{a.warmup + a.steps}: " + ", ".join(
                f"{s} {times[s][-1]:.0f} ms" if i >= a.warmup else f"{s} (warm-up)" for s in sides), flush=True)
    finally:
        for w in workers.values():
            w.close()
    run = {"pkl": pkl.name, "model": model.name, "resolution": workers[sides[0]].info["resolution"],
           "threads": threads, "compat": base["compat"], "steps": a.steps, "warmup": a.warmup,
           "loadavg_before": list(load_before),
           "loadavg_after": list(os.getloadavg()), "sides": {}}
    for s in sides:
        run["sides"][s] = {"ms": [round(t, 1) for t in times[s]], "median_ms": round(statistics.median(times[s]), 1),
                           "min_ms": round(min(times[s]), 1),
                           "cpu_ms": [round(t, 1) for t in cpu[s]],
                           "median_cpu_ms": round(statistics.median(cpu[s]), 1),
                           "first_step_ms": round(workers[s].info["first_step_ms"], 1),
                           "worker_threads": workers[s].info["threads"], "points_rc": points[s]}
        if losses[s]:
            run["sides"][s]["loss"] = losses[s]
        if s == "official":
            run["official_torch"] = workers[s].info["torch"]
    if "official" in sides:
        off = np.array(times["official"])
        for s in sides:
            if s != "official":
                run[f"{s}_over_official"] = round(float(np.median(times[s]) / np.median(off)), 3)
                run[f"{s}_over_official_paired"] = round(float(np.median(np.array(times[s]) / off)), 3)
                run[f"{s}_over_official_cpu"] = round(float(np.median(cpu[s]) / np.median(cpu["official"])), 3)
    return run


def _resolution(model: Path) -> int:
    from dragnb.checkpoints import load_generator

    return int(load_generator(model, device="cpu").img_resolution)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--official", type=Path, help="checkout of the official DragGAN (XingangPan/DragGAN)")
    ap.add_argument("--official-python", default=sys.executable,
                    help="python of an environment that runs the official code (default: this one)")
    ap.add_argument("--pkl", type=Path, nargs="+", help="official network pickles (NVIDIA format)")
    ap.add_argument("--threads", nargs="+", default=["1", "all"], help="thread counts: numbers or 'all' (cores)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per side after the first one")
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    ap.add_argument("--compat", default="dragnb", choices=["dragnb", "official"],
                    help="dragnb's mode: its default arithmetic given the official settings, or compat='official' "
                         "(NVIDIA's forms up to the features on PyTorch: bit for bit the official numbers)")
    ap.add_argument("--work-dir", type=Path, help="where the converted networks go (default: a temporary folder)")
    ap.add_argument("--artifacts", type=Path, help="ORT artifact cache root (default: dragnb's)")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args(argv)
    if a.worker:
        spec = json.loads(a.worker)
        (official_worker if spec["side"] == "official" else dragnb_worker)(spec)
        return 0
    if a.pkl is None or ("official" in a.sides and a.official is None):
        ap.error("--pkl is required, and --official unless --sides leaves the official code out")
    if a.steps < 1 or a.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    from dragnb.bench.machine import machine_info, versions

    tmp = None
    if a.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="official_speed_")
        a.work_dir = Path(tmp.name)
    a.work_dir.mkdir(parents=True, exist_ok=True)
    # Absolute paths are recorded by their last component: the JSON describes the run, not this machine's folders.
    short = [os.path.basename(v) if os.path.isabs(v) else v for v in sys.argv]
    doc = {"machine": machine_info(), "versions": versions(), "command": " ".join(short), "runs": []}
    try:
        for pkl in a.pkl:
            model = convert(pkl, a.work_dir)
            for t in a.threads:
                threads = thread_count(t)
                print(f"{pkl.name}, {threads} thread(s):", flush=True)
                run = measure(pkl, model, threads, a)
                doc["runs"].append(run)
                _print_run(run)
                if a.json:
                    a.json.parent.mkdir(parents=True, exist_ok=True)
                    a.json.write_text(json.dumps(doc, indent=1) + "\n")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def _print_run(run: dict) -> None:
    print(f"  {run['resolution']} px, {run['threads']} thread(s), {run['steps']} steps, "
          f"load {run['loadavg_before'][0]:.1f} -> {run['loadavg_after'][0]:.1f}")
    for s, r in run["sides"].items():
        nan = float("nan")
        ratio = "" if s == "official" else (f"  x{run.get(f'{s}_over_official', nan):.2f} of official "
                                           f"(paired {run.get(f'{s}_over_official_paired', nan):.2f}, "
                                           f"CPU time {run.get(f'{s}_over_official_cpu', nan):.2f})")
        print(f"    {s:9s} median {r['median_ms']:8.0f} ms  min {r['min_ms']:8.0f} ms  "
              f"CPU {r['median_cpu_ms']:8.0f} ms{ratio}")


if __name__ == "__main__":
    sys.exit(main())
