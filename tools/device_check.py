"""The GPU check: CPU vs device parity, step times at 256 / 512 / 1024 px, and (given a checkout) the official code.

Run on a machine with a GPU (a few minutes; nothing to build)::

    .venv/bin/python tools/device_check.py --device cuda --json docs/bench/device_check.json
    .venv/bin/python tools/device_check.py --device cuda --official ../DragGAN --pkl net256.pkl net512.pkl \\
        net1024.pkl --json docs/bench/device_check.json      # also the official code on the same GPU, interleaved

* **Parity**: the bundled model and a random 256 px StyleGAN2 (the same weights on both devices: made on the CPU,
  then copied): the seed image's float output (max |CPU - device| <= 1e-3 in fp32), and two drags (one and two
  points) stepped in lockstep on both devices for 30 steps: the tracked points must be identical at every step.
* **Speed**: ``DragSession.step()`` (tracking, losses, backward, Adam, the image as uint8: what the workbench does
  per displayed frame) on random StyleGAN2 generators of 256, 512 and 1024 px on the device, median of the timed
  steps after a warm-up. Each step ends with its host copy, so the time is the device's, not a launch time.
* **Official** (``--official PATH --pkl ...``): tools/official_speed.py's workers, the official
  ``Renderer._render_drag_impl`` (it picks CUDA itself) and dragnb's PyTorch step on ``--device``, one step each
  per round, on the same pickles.

``--device cpu --quick`` is the smoke test CI runs (tiny sizes, a few steps): it checks the script, not a GPU.
Exit status 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGE_TOL = 1e-3  # fp32: max |CPU - device| of the generator's float image


def random_generator(resolution: int):
    """A random StyleGAN2 of ``resolution`` px (the FFHQ configs: 512 channels at most), made on the CPU."""
    import torch

    from dragnb.stylegan.networks import Generator, GeneratorConfig

    torch.manual_seed(resolution)
    base = 16384 if resolution <= 256 else 32768
    cfg = GeneratorConfig(z_dim=512, w_dim=512, img_resolution=resolution, channel_base=base, channel_max=512,
                          mapping_layers=8, conv_clamp=256)
    return Generator(cfg).eval().requires_grad_(False)


def tiny_generator(resolution: int = 32):
    """A small random generator for the --quick smoke test."""
    import torch

    from dragnb.stylegan.networks import Generator, GeneratorConfig

    torch.manual_seed(resolution)
    cfg = GeneratorConfig(z_dim=32, w_dim=32, img_resolution=resolution, channel_base=512, channel_max=32,
                          mapping_layers=2)
    return Generator(cfg).eval().requires_grad_(False)


def drags(size: int) -> list[list[tuple[tuple[float, float], tuple[float, float]]]]:
    """Two drags in (x, y) pixels of a ``size`` px image: one point; two points moving apart."""
    f = lambda a: round(a * size)  # noqa: E731
    return [[((f(0.45), f(0.5)), (f(0.58), f(0.46)))],
            [((f(0.35), f(0.4)), (f(0.28), f(0.4))), ((f(0.65), f(0.6)), (f(0.72), f(0.66)))]]


def image_diff(G_cpu, G_dev, ws) -> float:
    """max |G_cpu(ws) - G_dev(ws)| of the float images (const noise)."""
    import torch

    with torch.no_grad():
        a = G_cpu.synthesis(torch.from_numpy(ws), noise_mode="const")
        b = G_dev.synthesis(torch.from_numpy(ws).to(next(G_dev.parameters()).device), noise_mode="const")
    return float((a - b.cpu()).abs().max())


def parity_drag(G_cpu, G_dev, device: str, pairs, steps: int, seed: int = 0) -> dict:
    """One drag stepped in lockstep on the CPU and on ``device``: tracked points, losses, final ws and image."""
    import numpy as np

    from dragnb import DragSession

    sessions = [DragSession(G_cpu, seed=seed, device="cpu"), DragSession(G_dev, seed=seed, device=device)]
    for s in sessions:
        for h, t in pairs:
            s.add_point(handle=h, target=t)
    first_mismatch, loss_diff, pixel_diff = None, 0.0, 0
    for i in range(steps):
        a, b = (s.step() for s in sessions)
        if first_mismatch is None and a.handle_points != b.handle_points:
            first_mismatch = i
        loss_diff = max(loss_diff, abs(a.loss - b.loss))
        pixel_diff = max(pixel_diff, int(np.abs(a.image.astype(int) - b.image.astype(int)).max()))
    ws_cpu, ws_dev = sessions[0].ws, sessions[1].ws
    return {"points": [list(p) for p in pairs], "steps": steps, "tracked_identical": first_mismatch is None,
            "first_mismatch_step": first_mismatch, "max_loss_diff": loss_diff, "max_uint8_diff": pixel_diff,
            "final_ws_max_diff": float(np.abs(ws_cpu - ws_dev).max()),
            "final_image_max_diff": image_diff(G_cpu, G_dev, ws_cpu),
            "final_handles_cpu": sessions[0].handle_points, "final_handles_device": sessions[1].handle_points}


def parity(device: str, quick: bool) -> dict:
    from dragnb import DragSession
    from dragnb.checkpoints import load_generator

    if quick:
        models = {"random32": tiny_generator(32)}
    else:
        models = {"toyfaces": load_generator("toyfaces", device="cpu"), "random256": random_generator(256)}
    steps = 3 if quick else 30
    out = {}
    for name, G_cpu in models.items():
        G_dev = copy.deepcopy(G_cpu).to(device)
        ws = DragSession(G_cpu, seed=0, device="cpu").ws
        seed_diff = image_diff(G_cpu, G_dev, ws)
        runs = [parity_drag(G_cpu, G_dev, device, pairs, steps) for pairs in drags(G_cpu.img_resolution)]
        ok = seed_diff <= IMAGE_TOL and all(r["tracked_identical"] and r["final_image_max_diff"] <= IMAGE_TOL
                                            for r in runs)
        out[name] = {"resolution": G_cpu.img_resolution, "seed_image_max_diff": seed_diff, "drags": runs, "ok": ok}
        tracked = ["identical" if r["tracked_identical"] else f"DIFFER at {r['first_mismatch_step']}" for r in runs]
        print(f"parity {name}: seed image max diff {seed_diff:.2e}; " + "; ".join(
            f"drag {i}: tracked {tracked[i]}, final image max diff {r['final_image_max_diff']:.2e}"
            for i, r in enumerate(runs)) + f" -> {'ok' if ok else 'FAIL'}", flush=True)
    return out


def step_times(G, device: str, steps: int, warmup: int) -> dict:
    """Median / min ms of ``DragSession.step()`` on ``device`` (the first step, with F0, reported apart)."""
    from dragnb import DragSession

    s = DragSession(G, seed=0, device=device)
    for h, t in drags(s.H)[0]:
        s.add_point(handle=h, target=t)
    t0 = time.perf_counter()
    s.step()
    first = 1000 * (time.perf_counter() - t0)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        s.step()  # ends with the host copy of the step's numbers and image: the device is done
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return {"resolution": s.H, "device": s.device, "first_step_ms": round(first, 2), "ms": [round(t, 2) for t in times],
            "median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2)}


def speed(device: str, quick: bool) -> list[dict]:
    sizes = [32] if quick else [256, 512, 1024]
    out = []
    for res in sizes:
        G = (tiny_generator(res) if quick else random_generator(res)).to(device)
        r = step_times(G, device, steps=2 if quick else 20, warmup=1 if quick else 5)
        print(f"speed {res} px on {r['device']}: median {r['median_ms']:.1f} ms, min {r['min_ms']:.1f} ms "
              f"(first step {r['first_step_ms']:.0f} ms)", flush=True)
        out.append(r)
        del G
    return out


def official(a) -> list[dict]:
    """tools/official_speed.py's interleaved rounds: the official step and dragnb's PyTorch step on ``a.device``."""
    import official_speed

    opts = SimpleNamespace(sides=["official", "torch"], official=a.official, official_python=a.official_python,
                           steps=a.official_steps, warmup=2, artifacts=None, device=a.device)
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for pkl in a.pkl:
        run = official_speed.measure(pkl, official_speed.convert(pkl, work), 1, opts)
        official_speed._print_run(run)
        runs.append(run)
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU (default cuda)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke test of the script")
    ap.add_argument("--skip", nargs="*", default=[], choices=("parity", "speed"), help="parts to leave out")
    ap.add_argument("--official", type=Path, help="checkout of the official DragGAN: also time its step")
    ap.add_argument("--official-python", default=sys.executable, help="python that runs the official code")
    ap.add_argument("--pkl", type=Path, nargs="+", default=[], help="NVIDIA pickles for the official comparison")
    ap.add_argument("--official-steps", type=int, default=20, help="timed steps per side in the official rounds")
    ap.add_argument("--work-dir", default="/tmp/device_check", help="where the pickles are converted")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args(argv)
    if a.official is not None and not a.pkl:
        ap.error("--official needs --pkl (the official code loads NVIDIA pickles)")
    import torch

    from dragnb.bench.machine import machine_info, versions
    from dragnb.devices import resolve_device

    a.device = resolve_device(a.device)
    doc = {"format": "dragnb-device-check", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": a.device,
           "gpu": torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else None,
           "quick": a.quick, "machine": machine_info(), "versions": versions(), "image_tolerance": IMAGE_TOL}
    if "parity" not in a.skip:
        doc["parity"] = parity(a.device, a.quick)
    if "speed" not in a.skip:
        doc["speed"] = speed(a.device, a.quick)
    if a.official is not None:
        doc["official"] = official(a)
    doc["parity_ok"] = all(m["ok"] for m in doc.get("parity", {}).values())
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0 if doc["parity_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
