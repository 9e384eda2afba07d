"""``dragnb bench``: the PyTorch and ONNX Runtime back-ends measured side by side (issue 9).

For each model (the bundled one, the FFHQ-512 architecture with random weights, or a checkpoint), in ONE
run and with the SAME thread count on both sides:

* **step**: one DragGAN step (forward to the feature block, tracking, losses, backward, Adam) of each
  back-end, the two back-ends alternating step by step on the same drag, so that a change of machine load
  hits both alike; medians (and minima) in milliseconds. The drag never converges (tolerance -1), so every
  step is a full step with an update; no image is rendered (``render_every`` > 1 in ``run()``), and a
  separate row times a step that also renders the image.
* **forward**: one full no-grad inference forward of the synthesis network, PyTorch and ORT (an
  ``InferenceSession`` of ``dragnb.export.export_synthesis``), alternating likewise.
* **first drag**: export + training artifacts + sessions + F0 + one step with an empty artifact cache,
  against a **cached start** (the same, artifacts cached) in a fresh process.
* **memory**: peak RSS of the same drag in separate fresh processes: PyTorch, ORT through dragnb
  (``OrtBackend``, which also holds the PyTorch generator, so torch is loaded), ORT through ``DragSession`` on
  the artifact folder alone with torch unimportable (what the "peak RSS ort <= torch" goal judges: the public
  API's torch-free ORT drag), and the torch-free ORT runtime file alone.
* **soak** (``--soak``): many steps per back-end in a fresh process (a new drag every 100 steps, with and
  without a mask, an image every 10th step): RSS and open-file growth after the warm-up.
* **FLOPs**: convolution and matmul FLOPs of a step and of a forward (``torch.utils.flop_counter``), and
  the machine's peak measured with a large 3x3 convolution, for achieved / peak.

Every number goes to a JSON document (:func:`run_bench`); :func:`format_table` prints the ratios and the
goals of issue 9. Nothing here asserts a time: the tests only check the document's structure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..testing import UNIMPORTABLE_SRC, make_unimportable

BUNDLED_NAME = "toyfaces"
FFHQ512 = "ffhq512"
# The FFHQ-512 generator of StyleGAN2-ADA (config "paper512"/"stylegan2"), random weights: timing and memory
# depend on the architecture only.
FFHQ512_CONFIG = dict(z_dim=512, w_dim=512, img_resolution=512, channel_base=32768, channel_max=512,
                      mapping_layers=8, conv_clamp=256)
SOAK_MAX_STEP_S = 1.0  # the soak is skipped for models whose step takes longer (FFHQ-512: an hour per back-end)
GOALS = {  # issue 9: name -> (ratio key, upper limit, models it applies to or None = every model)
    "ort step <= 0.8 x torch step": ("ort_step_over_torch_step", 0.8, None),
    "torch step <= 1.5 x torch forward": ("torch_step_over_torch_forward", 1.5, (FFHQ512,)),
    "ort step <= 1.5 x ort forward": ("ort_step_over_ort_forward", 1.5, (FFHQ512,)),
    # The ORT drag through the public session API on the artifact folder (torch never imported); the in-process
    # ratio with torch loaded (ort_rss_over_torch_rss) is reported beside it.
    "peak RSS ort <= torch": ("ort_session_artifacts_rss_over_torch_rss", 1.0, None),
    "cached start <= 10% of first drag": ("cached_start_over_first_drag", 0.10, None),
    "soak RSS growth <= 5% (torch)": ("soak_torch_rss_growth", 0.05, None),
    "soak RSS growth <= 5% (ort)": ("soak_ort_rss_growth", 0.05, None),
    "soak open-file growth = 0 (torch)": ("soak_torch_fd_growth", 0, None),
    "soak open-file growth = 0 (ort)": ("soak_ort_fd_growth", 0, None),
}


# ----------------------------------------------------------------------------
# Machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU model, logical / usable cores, memory, load average, OS and Python."""
    info = {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    with contextlib.suppress(AttributeError):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return info


def versions() -> dict:
    import onnx
    import torch

    from .ort_runtime import import_onnxruntime

    onnxruntime = import_onnxruntime()

    from .. import __version__

    return {"dragnb": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


# ----------------------------------------------------------------------------
# Models


def load_model(spec: str):
    """(generator, description) for ``spec``: "toyfaces" (the bundled model; a random stand-in with its
    architecture while the weights are not bundled yet), "ffhq512" (random weights) or a checkpoint path."""
    import torch

    from ..checkpoints import BUNDLED, load_generator
    from ..stylegan.networks import Generator, GeneratorConfig

    if spec == BUNDLED_NAME:
        if BUNDLED[BUNDLED_NAME].exists():
            return load_generator(BUNDLED_NAME), "bundled toyfaces weights"
        from ..toy.train import TrainConfig

        torch.manual_seed(0)
        G = Generator(TrainConfig().generator_config())
        return G.eval().requires_grad_(False), "toyfaces architecture, random weights (weights not bundled yet)"
    if spec == FFHQ512:
        torch.manual_seed(0)
        G = Generator(GeneratorConfig(**FFHQ512_CONFIG))
        return G.eval().requires_grad_(False), "FFHQ-512 architecture (StyleGAN2-ADA), random weights"
    return load_generator(spec).eval().requires_grad_(False), f"checkpoint {spec}"


def drag_params(G) -> dict:
    """Feature block, layers, r1, r2 and lr of a DragSession on ``G``: the model's tuned ``drag_defaults`` (the
    bundled model has them), else the rules for its resolution (``core.default_radii``, block 5, 6 layers)."""
    from ..drag import core

    r1, r2, _ = core.default_radii(G.img_resolution)
    p = {"feature_block": max(0, min(5, G.num_blocks - 2)), "num_layers": min(6, G.num_ws), "r1": r1, "r2": r2,
         "lr": 2e-3}
    tuned = G.drag_defaults
    p.update({k: v for k, v in tuned.items() if k in p and v is not None})
    return p


def default_feature_block(G) -> int:
    return int(drag_params(G)["feature_block"])


class Drag:
    """The drag every measurement runs: seed 0 (psi 0.7), W+ with the session's layer count, r1, r2 and lr
    (:func:`drag_params`), two points moving 1/8 of the image, optionally a mask (bottom quarter fixed)."""

    def __init__(self, G, seed: int = 0, mask: bool = False):
        import torch

        p = drag_params(G)
        self.h, self.w = G.img_resolution, G.img_width
        with torch.no_grad():
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
            self.ws0 = G.mapping(z, truncation_psi=0.7).numpy().astype(np.float32)
        self.num_layers, self.r1, self.r2, self.lr = int(p["num_layers"]), float(p["r1"]), int(p["r2"]), p["lr"]
        self.handles = np.array([[self.h // 3, self.w // 3], [2 * self.h // 3, self.w // 2]], np.int64)
        self.targets = (self.handles + [[self.h // 8, 0], [0, self.w // 8]]).astype(np.float32)
        self.fixed = None
        if mask:
            self.fixed = np.zeros((self.h, self.w), np.float32)
            self.fixed[3 * self.h // 4:] = 1

    def begin(self, backend) -> dict:
        """start + F0 + reference features; returns the per-drag step arguments."""
        backend.start(self.ws0, "w+", self.num_layers, self.lr)
        _, f0 = backend.features()
        ref = np.ascontiguousarray(f0[:, self.handles[:, 0], self.handles[:, 1]].T)
        f0_fixed = None if self.fixed is None else (f0 * self.fixed).astype(np.float32)
        return {"ref": ref, "f0_fixed": f0_fixed, "handles": self.handles}

    def step(self, backend, state: dict, render: bool = False):
        # tolerance -1: never converged, so every step does its update
        out = backend.step(state["handles"], self.targets, state["ref"], self.fixed, state["f0_fixed"], 10.0,
                           self.r1, self.r2, -1.0, False, self.lr, render)
        state["handles"] = out.tracked_rc
        return out


def make_backend(name: str, G, feature_block: int, threads: int, artifacts_root, **ort_kw):
    from .base import load_backend

    cls = load_backend(name)
    if name == "ort":
        return cls(G, feature_block, artifacts_root=artifacts_root, threads=threads, progress=False, **ort_kw)
    return cls(G, feature_block)


# ----------------------------------------------------------------------------
# Measurements


def _ms(ts) -> dict:
    ts = sorted(1000 * t for t in ts)
    return {"median_ms": statistics.median(ts), "min_ms": ts[0], "n": len(ts)}


def time_interleaved(fns: dict, n: int, warmup: int) -> dict:
    """Call each function of ``fns`` in turn, ``warmup + n`` rounds; per name: median / min ms of the last n."""
    times = {k: [] for k in fns}
    for i in range(warmup + n):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: _ms(v) for k, v in times.items()}


def ort_inference_session(path, threads: int):
    from .ort_runtime import import_onnxruntime, session_options

    ort = import_onnxruntime()

    return ort.InferenceSession(os.fspath(path), session_options(threads), providers=["CPUExecutionProvider"])


def conv_peak_gflops(threads: int, seconds: float = 2.0) -> dict:
    """GFLOP/s of a large 3x3 convolution in PyTorch (512 -> 512 channels, 64 x 64, batch 1): the machine's
    practical peak for the work a generator does."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, 512, 64, 64)
    w = torch.randn(512, 512, 3, 3)
    flops = 2 * 512 * 512 * 9 * 64 * 64
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
        ts, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(ts) < 3:
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            ts.append(time.perf_counter() - t0)
    best = min(ts)
    return {"gflops": flops / best / 1e9, "median_gflops": flops / statistics.median(ts) / 1e9,
            "conv": "3x3, 512->512 channels, 64x64, batch 1", "threads": threads}


def count_flops(G, feature_block: int, drag: Drag) -> dict:
    """Conv/matmul FLOPs (multiply-add = 2) of one PyTorch drag step (forward + backward) and of one full
    forward, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .torch_backend import TorchBackend

    b = TorchBackend(G, feature_block)
    state = drag.begin(b)
    with FlopCounterMode(display=False) as fc:
        drag.step(b, state)
    step = fc.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        G.synthesis(torch.from_numpy(drag.ws0), noise_mode="const")
    return {"step": int(step), "forward": int(fc.get_total_flops())}


def _child(job: dict) -> dict:
    """Run ``job`` in a fresh interpreter (python -m dragnb.backends.bench --child JSON); its JSON result."""
    cmd = [sys.executable, "-m", "dragnb.backends.bench", "--child", json.dumps(job)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=job.get("timeout", 3600))
    if p.returncode != 0:
        raise RuntimeError(f"bench child {job['kind']}/{job.get('backend')} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM (``ru_maxrss`` would include the parent's RSS at fork on Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_drag(job: dict) -> dict:
    """(fresh process) One drag of ``job["steps"]`` steps, the last one rendering; peak RSS and timings."""
    import torch

    torch.set_num_threads(job["threads"])
    if job["backend"] == "ort":  # module imports are the process's start, not the drag's
        from . import ort_backend  # noqa: F401
        from .ort_cache import export_settings

        export_settings(0, "const")
    G, _ = load_model(job["model"])
    fb = job["feature_block"]
    drag = Drag(G, mask=job.get("mask", False))
    base = _rss_mb()
    t0 = time.perf_counter()
    kw = {"options": job["options"]} if job.get("options") and job["backend"] == "ort" else {}
    b = make_backend(job["backend"], G, fb, job["threads"], job["artifacts_root"], **kw)
    start_s = time.perf_counter() - t0  # the back-end ready to drag (cached artifacts: key, verify, sessions)
    state = drag.begin(b)
    drag.step(b, state)
    first_step_s = time.perf_counter() - t0  # ... + start + F0 + the first step
    for i in range(job["steps"] - 1):
        drag.step(b, state, render=(i == job["steps"] - 2))
    return {"peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base, "end_rss_mb": _rss_mb(), "start_s": start_s,
            "first_step_s": first_step_s}


# The torch-free runtime's drag, run by ``python -c`` in a process where torch and dragnb cannot be imported
# (onnxruntime-training imports torch whenever it is installed): the memory of the on-device loop alone.
_RUNTIME_CHILD = UNIMPORTABLE_SRC + r"""
make_unimportable("torch", "dragnb")
import importlib.util, json, os, time
import numpy as np

job = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("ort_runtime", job["runtime_file"])
R = importlib.util.module_from_spec(spec)
spec.loader.exec_module(R)
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
    """The same drag through the torch-free runtime file alone (numpy + onnxruntime), in a fresh process."""
    job = {**job, "runtime_file": str(Path(__file__).with_name("ort_runtime.py"))}
    p = subprocess.run([sys.executable, "-c", _RUNTIME_CHILD, json.dumps(job)], capture_output=True, text=True,
                       timeout=job.get("timeout", 3600))
    if p.returncode != 0:
        raise RuntimeError(f"bench child runtime failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def child_session(job: dict) -> dict:
    """(fresh process, torch and onnx unimportable) The same drag through ``DragSession`` on the artifact folder
    alone (``ArtifactModel``): the public API's torch-free ORT drag. Peak RSS and timings as :func:`child_drag`.

    The session's own rules differ from :class:`Drag` in two details that do not change the memory: the
    tolerance must be > 0 (1e-6: the handles reach integer targets only by landing on them exactly), and the
    seed's image is rendered when the drag starts (F0).
    """
    make_unimportable("torch", "onnx")  # the meta-path finders see every import from here on
    from ..drag import geometry
    from ..drag.session import DragSession
    from .ort_model import ArtifactModel
    from .ort_runtime import import_onnxruntime

    import_onnxruntime()  # module imports are the process's start, not the drag's
    base = _rss_mb()
    t0 = time.perf_counter()
    model = ArtifactModel(job["folder"], threads=job["threads"])
    s = DragSession(model, seed=0, truncation_psi=0.7, backend="ort", num_layers=job["num_layers"], r1=job["r1"],
                    r2=job["r2"], lr=job["lr"], tolerance=1e-6, render_every=job["steps"])
    start_s = time.perf_counter() - t0  # the session ready to drag: manifest, hashes, sessions, the seed's ws
    for h, t in zip(geometry.rc_to_xy(job["handles"]), geometry.rc_to_xy(job["targets"])):  # (row, col) -> (x, y)
        s.add_point(handle=tuple(h), target=tuple(t))
    steps = sum(1 for _ in s.run(max_steps=job["steps"]))  # the last step renders the image
    return {"peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base, "end_rss_mb": _rss_mb(), "start_s": start_s,
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
        rss.append(_rss_mb())
        fds.append(_open_files())
    warm = min(job["warmup"], len(rss) - 1)
    after = rss[warm:]
    return {"steps": job["steps"], "warmup": warm, "rss_mb_after_warmup": rss[warm], "rss_mb_end": rss[-1],
            "rss_mb_max_after_warmup": max(after), "rss_growth": (max(after) - rss[warm]) / rss[warm],
            "fd_after_warmup": fds[warm], "fd_end": fds[-1], "fd_growth": max(fds[warm:]) - fds[warm],
            "rss_mb_samples": rss[:: max(1, len(rss) // 50)]}


# ----------------------------------------------------------------------------
# One model


def bench(G, feature_block: int | None = None, steps: int = 20, warmup: int = 3, threads: int = 1,
          backends=("torch", "ort"), seed: int = 0, artifacts_root=None, model: str | None = None,
          memory: bool = False, soak: int = 0, forward: bool = True, flops: bool = False,
          latency: bool = True, mask_step: bool = True) -> dict:
    """Measure one generator (see the module docstring); returns a JSON-able dict.

    Args:
        G: the generator (``model`` names it for the child processes: "toyfaces", "ffhq512" or a path;
            memory and soak need it, since a fresh process must rebuild the same generator).
        feature_block: default as DragSession (min(5, blocks - 2)).
        steps, warmup: timed steps (and untimed warm-up steps) per back-end, interleaved.
        threads: intra-op threads of both back-ends (``torch.set_num_threads`` and the ORT sessions).
        artifacts_root: ORT artifact cache; None = a temporary folder (so "first drag" really exports).
        memory: peak RSS of the drag in fresh processes; soak: steps of the soak per back-end (0 = none).
        forward: time the full inference forward (exports the ORT inference graph once).
        flops: count FLOPs and measure the convolution peak.
        latency: first-drag (cold) vs cached start; mask_step: also time a step with a mask.
    """
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    tmp = None
    if artifacts_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="dragnb-bench-")
        artifacts_root = tmp.name
    try:
        return _bench(G, feature_block, steps, warmup, threads, backends, seed, Path(artifacts_root), model,
                      memory, soak, forward, flops, latency, mask_step)
    finally:
        torch.set_num_threads(old_threads)
        if tmp is not None:
            tmp.cleanup()


def _bench(G, feature_block, steps, warmup, threads, backends, seed, root, model, memory, soak, forward, flops,
           latency, mask_step) -> dict:
    import torch

    fb = default_feature_block(G) if feature_block is None else int(feature_block)
    drag = Drag(G, seed)
    c, fh, fw = G.feature_shape(fb)
    r = {
        "model": model, "generator": G.cfg.to_dict(), "parameters": sum(p.numel() for p in G.parameters()),
        "feature_block": fb, "block_shape": [c, fh, fw], "image": [G.img_resolution, G.img_width],
        "threads": threads, "steps": steps, "warmup": warmup,
    }

    # First drag (cold: nothing cached) - export, artifacts, sessions, F0, one step.
    bk = {}
    if "ort" in backends:
        t0 = time.perf_counter()
        from .ort_cache import ensure_artifacts

        folder = ensure_artifacts(G, fb, "const", root, progress=False)
        t_art = time.perf_counter() - t0
        bk["ort"] = make_backend("ort", G, fb, threads, root)
        t_sess = time.perf_counter() - t0 - t_art
        st = drag.begin(bk["ort"])
        drag.step(bk["ort"], st)
        if latency:  # first drag: the back-end ready to drag with nothing cached (export, artifacts, sessions)
            r["latency"] = {"first_drag_s": t_art + t_sess, "artifacts_s": t_art, "sessions_s": t_sess,
                            "first_step_s": time.perf_counter() - t0,  # ... + start + F0 + the first step
                            "artifact_mb": sum(p.stat().st_size for p in folder.iterdir()) / 2**20}
    if "torch" in backends:
        bk["torch"] = make_backend("torch", G, fb, threads, root)

    # Steps, interleaved.
    states = {k: drag.begin(b) for k, b in bk.items()}
    res = time_interleaved({k: (lambda k=k: drag.step(bk[k], states[k])) for k in bk}, steps, warmup)
    for k in bk:
        r[k] = {"step_ms": res[k]["median_ms"], "step_ms_min": res[k]["min_ms"]}
    n_small = max(2, steps // 4)
    res = time_interleaved({k: (lambda k=k: drag.step(bk[k], states[k], render=True)) for k in bk}, n_small, 1)
    for k in bk:
        r[k]["render_step_ms"] = res[k]["median_ms"]
    if mask_step:
        mdrag = Drag(G, seed, mask=True)
        mstates = {k: mdrag.begin(b) for k, b in bk.items()}
        res = time_interleaved({k: (lambda k=k: mdrag.step(bk[k], mstates[k])) for k in bk}, n_small, 1)
        for k in bk:
            r[k]["mask_step_ms"] = res[k]["median_ms"]
        mstates.clear()
    for k, b in bk.items():
        t0 = time.perf_counter()
        b.start(drag.ws0, "w+", drag.num_layers, drag.lr)
        b.features()
        r[k]["start_features_ms"] = 1000 * (time.perf_counter() - t0)

    # Full inference forward, interleaved.
    if forward:
        ws = torch.from_numpy(drag.ws0)
        fns = {"torch": lambda: G.synthesis(ws, noise_mode="const")}
        if "ort" in backends:
            from ..export import export_synthesis

            t0 = time.perf_counter()
            path = export_synthesis(G, root / f"synthesis-{os.getpid()}-{id(G)}.onnx")
            sess = ort_inference_session(path, threads)
            r["ort"]["inference_export_s"] = time.perf_counter() - t0
            fns["ort"] = lambda: sess.run(None, {"ws": drag.ws0})
        with torch.no_grad():
            res = time_interleaved(fns, max(3, steps // 4), 1)
        for k in fns:
            r.setdefault(k, {})["forward_ms"] = res[k]["median_ms"]
        r["forward_ms"] = res["torch"]["median_ms"]
        if "ort" in backends:
            del sess
            path.unlink()
    bk.clear()  # free the back-ends before the child processes run
    states.clear()

    if memory and model is not None:
        job = {"model": model, "feature_block": fb, "threads": threads, "artifacts_root": str(root),
               "steps": max(3, min(steps, 10))}
        r["memory"] = {k: _child({**job, "kind": "drag", "backend": k}) for k in backends}
        if "ort" in backends:
            djob = {**job, "folder": str(folder), "handles": drag.handles.tolist(), "targets": drag.targets.tolist(),
                    "num_layers": drag.num_layers, "r1": drag.r1, "r2": drag.r2, "lr": drag.lr}
            r["memory"]["ort_session_artifacts"] = _child({**djob, "kind": "session"})
            r["memory"]["ort_runtime"] = child_runtime(djob)
            lat = r.setdefault("latency", {})
            lat["cached_start_s"] = r["memory"]["ort"]["start_s"]
            lat["cached_first_step_s"] = r["memory"]["ort"]["first_step_s"]
    slow = r.get("torch", {}).get("step_ms", 0) > 1000 * SOAK_MAX_STEP_S
    if soak and model is not None and slow:
        r["soak_skipped"] = (f"{soak} steps at {r['torch']['step_ms'] / 1000:.1f} s per step per back-end would take "
                             f"too long; soak the bundled model")
    elif soak and model is not None:
        job = {"model": model, "feature_block": fb, "threads": threads, "artifacts_root": str(root),
               "steps": int(soak), "warmup": min(100, int(soak) // 5), "kind": "soak"}
        r["soak"] = {k: _child({**job, "backend": k}) for k in backends}
    if flops:
        r["flops"] = count_flops(G, fb, drag)
        r["conv_peak"] = conv_peak_gflops(threads)
        peak = r["conv_peak"]["gflops"]
        for k in backends:
            if k in r:
                g = r["flops"]["step"] / (r[k]["step_ms"] / 1000) / 1e9
                r[k]["step_gflops"] = g
                r[k]["step_fraction_of_peak"] = g / peak
                if "forward_ms" in r[k]:
                    g = r["flops"]["forward"] / (r[k]["forward_ms"] / 1000) / 1e9
                    r[k]["forward_gflops"] = g
                    r[k]["forward_fraction_of_peak"] = g / peak
    r["ratios"] = ratios(r)
    r["goals"] = goals(r)
    return r


def ratios(r: dict) -> dict:
    out = {}
    t, o = r.get("torch", {}), r.get("ort", {})
    if "step_ms" in t and "step_ms" in o:
        out["ort_step_over_torch_step"] = o["step_ms"] / t["step_ms"]
    for k, d in (("torch", t), ("ort", o)):
        if "step_ms" in d and "forward_ms" in d:
            out[f"{k}_step_over_{k}_forward"] = d["step_ms"] / d["forward_ms"]
    if "forward_ms" in t and "forward_ms" in o:
        out["ort_forward_over_torch_forward"] = o["forward_ms"] / t["forward_ms"]
    mem = r.get("memory", {})
    if "torch" in mem:
        # ort: OrtBackend with torch loaded; ort_session_artifacts: DragSession on the artifacts, torch never
        # imported; ort_runtime: the runtime file alone.
        for k in ("ort", "ort_session_artifacts", "ort_runtime"):
            if k in mem:
                out[f"{k}_rss_over_torch_rss"] = mem[k]["peak_rss_mb"] / mem["torch"]["peak_rss_mb"]
    lat = r.get("latency", {})
    if "first_drag_s" in lat and "cached_start_s" in lat:
        out["cached_start_over_first_drag"] = lat["cached_start_s"] / lat["first_drag_s"]
    for k, s in r.get("soak", {}).items():
        out[f"soak_{k}_rss_growth"] = s["rss_growth"]
        out[f"soak_{k}_fd_growth"] = s["fd_growth"]
    return out


def goals(r: dict) -> dict:
    """Issue 9's goals that this result can judge: {goal: {"value", "limit", "met"}}."""
    out = {}
    for name, (key, limit, only) in GOALS.items():
        if key in r["ratios"] and (only is None or r.get("model") in only):
            v = r["ratios"][key]
            out[name] = {"value": v, "limit": limit, "met": bool(v <= limit)}
    return out


# ----------------------------------------------------------------------------
# The command


def _new_doc(threads: int) -> dict:
    """The header of a ``dragnb bench`` JSON document (machine, versions, threads), no models yet."""
    return {"format": "dragnb-bench", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine_info(), "versions": versions(), "threads": threads, "models": {}}


def run_bench(models=(BUNDLED_NAME, FFHQ512), threads: int | None = None, steps: int | None = None,
              soak: int = 0, memory: bool = True, flops: bool = True, artifacts_root=None, progress=print) -> dict:
    """The whole ``dragnb bench`` document: machine, versions and one :func:`bench` result per model."""
    import torch

    threads = threads or torch.get_num_threads()
    doc = _new_doc(threads)
    for spec in models:
        G, desc = load_model(spec)
        n = steps if steps is not None else (5 if G.img_resolution >= 256 else 40)
        progress(f"[bench] {spec}: {desc}; {n} steps per back-end, {threads} thread(s)")
        t0 = time.perf_counter()
        r = bench(G, steps=n, warmup=1 if G.img_resolution >= 256 else 3, threads=threads, model=spec,
                  artifacts_root=artifacts_root, memory=memory, soak=soak, flops=flops)
        r["description"] = desc
        r["bench_seconds"] = time.perf_counter() - t0
        doc["models"][spec] = r
        del G
    doc["machine"]["loadavg_end"] = machine_info().get("loadavg")
    return doc


def run_soak(models, threads: int | None = None, steps: int = 500, artifacts_root=None, progress=print) -> dict:
    """Only the soak (``dragnb bench --soak-only``), for any model however slow its step: a document of the
    same format as :func:`run_bench` whose model results hold "soak", "ratios" and "goals"."""
    import torch

    from .ort_cache import ensure_artifacts

    threads = threads or torch.get_num_threads()
    doc = _new_doc(threads)
    with tempfile.TemporaryDirectory(prefix="dragnb-soak-") as tmp:
        root = Path(artifacts_root or tmp)
        for spec in models:
            G, desc = load_model(spec)
            fb = default_feature_block(G)
            progress(f"[soak] {spec}: {desc}; {steps} steps per back-end, {threads} thread(s)")
            t0 = time.perf_counter()
            ensure_artifacts(G, fb, "const", root, progress=False)  # the export is not part of the soak
            job = {"model": spec, "feature_block": fb, "threads": threads, "artifacts_root": str(root),
                   "steps": int(steps), "warmup": min(100, int(steps) // 5), "kind": "soak",
                   "timeout": 6 * 3600}
            r = {"model": spec, "description": desc, "feature_block": fb, "block_shape": list(G.feature_shape(fb)),
                 "image": [G.img_resolution, G.img_width], "threads": threads,
                 "soak": {k: _child({**job, "backend": k}) for k in ("torch", "ort")}}
            r["ratios"] = ratios(r)
            r["goals"] = goals(r)
            r["bench_seconds"] = time.perf_counter() - t0
            doc["models"][spec] = r
            del G
    doc["machine"]["loadavg_end"] = machine_info().get("loadavg")
    return doc


def _fmt(v, unit="") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return (f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}") + unit
    return f"{v}{unit}"


def format_table(doc: dict) -> str:
    """The measurements and the issue-9 goals as a plain-text table."""
    m = doc["machine"]
    lines = [f"dragnb bench: {m['cpu']}, {m.get('usable_cores', m['logical_cores'])} cores, "
             f"{doc['threads']} thread(s); load {m.get('loadavg')} -> {m.get('loadavg_end')}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()), ""]
    row = "{:<38} {:>12} {:>12} {:>9}"
    for name, r in doc["models"].items():
        lines.append(f"== {name}: {r.get('description', '')}; feature block {r['feature_block']} "
                     f"{r['block_shape']}, image {r['image'][0]}x{r['image'][1]}")
        t, o = r.get("torch", {}), r.get("ort", {})
        if t or o:
            lines.append(row.format("", "torch", "ort", "ort/torch"))

        def line(label, key, unit="", t=t, o=o):
            a, b = t.get(key), o.get(key)
            ratio = b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None
            lines.append(row.format(label, _fmt(a, unit), _fmt(b, unit), _fmt(ratio)))

        if t or o:
            line("step (median)", "step_ms", " ms")
            line("step (min)", "step_ms_min", " ms")
            line("step + image", "render_step_ms", " ms")
            line("step with a mask", "mask_step_ms", " ms")
            line("full inference forward", "forward_ms", " ms")
            line("start + F0", "start_features_ms", " ms")
        if "step_gflops" in t:
            line("step GFLOP/s", "step_gflops")
            line("forward GFLOP/s", "forward_gflops")
        mem = r.get("memory", {})
        if mem:
            line("peak RSS of a drag (ort: torch loaded)", "peak_rss_mb", " MB", mem.get("torch", {}),
                 mem.get("ort", {}))
            lines.append(row.format("  the drag alone (peak - base)", _fmt(
                mem["torch"]["peak_rss_mb"] - mem["torch"]["base_rss_mb"], " MB") if "torch" in mem else "-", _fmt(
                mem["ort"]["peak_rss_mb"] - mem["ort"]["base_rss_mb"], " MB") if "ort" in mem else "-", ""))
            for k, label in (("ort_session_artifacts", "  DragSession on artifacts, no torch"),
                             ("ort_runtime", "  torch-free ORT runtime file")):
                if k in mem:
                    ratio = r["ratios"].get(f"{k}_rss_over_torch_rss")
                    lines.append(row.format(label, "", _fmt(mem[k]["peak_rss_mb"], " MB"), _fmt(ratio)))
        lat = r.get("latency", {})
        if lat:
            lines.append(f"first drag: back-end ready in {_fmt(lat.get('first_drag_s'), ' s')} (export + artifacts "
                         f"{_fmt(lat.get('artifacts_s'), ' s')}, {_fmt(lat.get('artifact_mb'), ' MB')}), first step "
                         f"done at {_fmt(lat.get('first_step_s'), ' s')}")
            lines.append(f"cached start (fresh process): back-end ready in {_fmt(lat.get('cached_start_s'), ' s')}, "
                         f"first step done at {_fmt(lat.get('cached_first_step_s'), ' s')}")
        if "flops" in r:
            fl = r["flops"]
            lines.append(f"FLOPs: step {fl['step'] / 1e9:.3g} G, forward {fl['forward'] / 1e9:.3g} G; conv peak "
                         f"{r['conv_peak']['gflops']:.3g} GFLOP/s")
        if "soak_skipped" in r:
            lines.append(f"soak skipped: {r['soak_skipped']}")
        for k, s in r.get("soak", {}).items():
            lines.append(f"soak {k}: {s['steps']} steps, RSS {s['rss_mb_after_warmup']:.0f} -> max "
                         f"{s['rss_mb_max_after_warmup']:.0f} MB ({100 * s['rss_growth']:+.1f} %), open files "
                         f"{s['fd_after_warmup']} -> {s['fd_end']}")
        for goal, g in r["goals"].items():
            lines.append(f"  [{'met ' if g['met'] else 'MISS'}] {goal}: {_fmt(g['value'])} (limit {g['limit']})")
        lines.append("")
    return "\n".join(lines)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the PyTorch and ORT back-ends side by side; print ratios, write JSON")
    p.add_argument("--model", action="append", default=None,
                   help=f"{BUNDLED_NAME}, {FFHQ512} (random weights) or a checkpoint path; repeat for several "
                        f"(default: {BUNDLED_NAME} and {FFHQ512})")
    p.add_argument("--threads", type=int, default=None, help="threads of both back-ends (default: torch's default)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per back-end (default 40; 5 for models of 256 px and more)")
    p.add_argument("--soak", nargs="?", type=int, const=500, default=0, metavar="STEPS",
                   help="also run a soak of STEPS steps per back-end (default 500) in fresh processes")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--soak-only", action="store_true",
                   help="run only the soak (--soak steps, default 500), also for models whose step is slow")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be >= 1")
    models = args.model or [BUNDLED_NAME, FFHQ512]
    progress = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if args.soak_only:
        doc = run_soak(models, args.threads, args.soak or 500, progress=progress)
    else:
        doc = run_bench(models, args.threads, args.steps, args.soak, memory=not args.no_memory, progress=progress)
    print(format_table(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="dragnb bench child process (internal)")
    ap.add_argument("--child", required=True)
    job = json.loads(ap.parse_args(argv).child)
    fn = {"drag": child_drag, "session": child_session, "soak": child_soak}[job["kind"]]
    print(json.dumps(fn(job)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
