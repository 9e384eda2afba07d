"""One model measured in this process (:func:`bench`), and the whole document over several models
(:func:`run_bench`, :func:`run_soak`). The module docstring of :mod:`dragnb.bench` says what is measured."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .children import child_job, child_runtime, run_child, run_each, soak_job
from .config import BACKENDS, BUNDLED_NAME, FFHQ512, SOAK_MAX_STEP_S, BenchConfig
from .report import finish_doc, goals, new_doc, ratios
from .timing import conv_peak_gflops, count_flops, ort_inference_session, time_interleaved
from .workload import Drag, default_feature_block, load_model, make_backend


def bench(G, feature_block: int | None = None, **options) -> dict:
    """Measure one generator with ``BenchConfig(feature_block, **options)``; returns a JSON-able dict."""
    return measure(G, BenchConfig(feature_block=feature_block, **options))


def measure(G, cfg: BenchConfig) -> dict:
    """Measure one generator as ``cfg`` says, with torch's thread count set to ``cfg.threads`` meanwhile."""
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    tmp = None
    root = cfg.artifacts_root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="dragnb-bench-")
        root = tmp.name
    try:
        return _measure(G, cfg, Path(root))
    finally:
        torch.set_num_threads(old_threads)
        if tmp is not None:
            tmp.cleanup()


def _measure(G, cfg: BenchConfig, root: Path) -> dict:
    fb = default_feature_block(G) if cfg.feature_block is None else int(cfg.feature_block)
    drag = Drag(G, cfg.seed)
    c, fh, fw = G.feature_shape(fb)
    r = {
        "model": cfg.model, "generator": G.cfg.to_dict(), "parameters": sum(p.numel() for p in G.parameters()),
        "feature_block": fb, "block_shape": [c, fh, fw], "image": [G.img_resolution, G.img_width],
        "threads": cfg.threads, "steps": cfg.steps, "warmup": cfg.warmup,
    }
    bk, folder = {}, None
    if "ort" in cfg.backends:
        bk["ort"], folder = _first_drag(G, cfg, fb, root, drag, r)
    if "torch" in cfg.backends:
        bk["torch"] = make_backend("torch", G, fb, cfg.threads, root)
    _time_steps(G, cfg, drag, bk, r)
    if cfg.forward:
        _time_forward(G, cfg, drag, root, r)
    bk.clear()  # free the back-ends before the child processes run
    if cfg.memory and cfg.model is not None:
        _memory(cfg, fb, root, folder, drag, r)
    if cfg.soak and cfg.model is not None:
        _soak(cfg, fb, root, r)
    if cfg.flops:
        _flops(G, cfg, fb, drag, r)
    r["ratios"] = ratios(r)
    r["goals"] = goals(r)
    return r


def _first_drag(G, cfg: BenchConfig, fb: int, root: Path, drag: Drag, r: dict):
    """(ORT back-end, artifact folder) made with nothing cached: export, artifacts, sessions, F0, one step."""
    t0 = time.perf_counter()
    from ..backends.ort_cache import ensure_artifacts  # its first import is part of a cold start

    folder = ensure_artifacts(G, fb, "const", root, progress=False)
    t_art = time.perf_counter() - t0
    b = make_backend("ort", G, fb, cfg.threads, root)
    t_sess = time.perf_counter() - t0 - t_art
    drag.step(b, drag.begin(b))
    if cfg.latency:  # first drag: the back-end ready to drag with nothing cached (export, artifacts, sessions)
        r["latency"] = {"first_drag_s": t_art + t_sess, "artifacts_s": t_art, "sessions_s": t_sess,
                        "first_step_s": time.perf_counter() - t0,  # ... + start + F0 + the first step
                        "artifact_mb": sum(p.stat().st_size for p in folder.iterdir()) / 2**20}
    return b, folder


def _time_drag(drag: Drag, bk: dict, states: dict, n: int, warmup: int, render: bool = False) -> dict:
    """Steps of ``drag`` on every back-end of ``bk`` (each with its state from ``drag.begin``), interleaved."""
    return time_interleaved({k: (lambda k=k: drag.step(bk[k], states[k], render)) for k in bk}, n, warmup)


def _time_steps(G, cfg: BenchConfig, drag: Drag, bk: dict, r: dict) -> None:
    """A step, a step that renders, a step with a mask, and start + F0; per back-end."""
    states = {k: drag.begin(b) for k, b in bk.items()}
    res = _time_drag(drag, bk, states, cfg.steps, cfg.warmup)
    for k in bk:
        r[k] = {"step_ms": res[k]["median_ms"], "step_ms_min": res[k]["min_ms"]}
    n_small = max(2, cfg.steps // 4)
    res = _time_drag(drag, bk, states, n_small, 1, render=True)
    for k in bk:
        r[k]["render_step_ms"] = res[k]["median_ms"]
    if cfg.mask_step:
        mdrag = Drag(G, cfg.seed, mask=True)
        res = _time_drag(mdrag, bk, {k: mdrag.begin(b) for k, b in bk.items()}, n_small, 1)
        for k in bk:
            r[k]["mask_step_ms"] = res[k]["median_ms"]
    for k, b in bk.items():
        t0 = time.perf_counter()
        b.start(drag.ws0, "w+", drag.num_layers, drag.lr)
        b.features()
        r[k]["start_features_ms"] = 1000 * (time.perf_counter() - t0)


def _time_forward(G, cfg: BenchConfig, drag: Drag, root: Path, r: dict) -> None:
    """The full inference forward, PyTorch and (an ``InferenceSession`` of the exported graph) ORT, interleaved."""
    import torch

    ws = torch.from_numpy(drag.ws0)
    fns = {"torch": lambda: G.synthesis(ws, noise_mode="const")}
    path = None
    if "ort" in cfg.backends:
        from ..backends.onnx_export import export_synthesis

        t0 = time.perf_counter()
        path = export_synthesis(G, root / f"synthesis-{os.getpid()}-{id(G)}.onnx")
        sess = ort_inference_session(path, cfg.threads)
        r["ort"]["inference_export_s"] = time.perf_counter() - t0
        fns["ort"] = lambda: sess.run(None, {"ws": drag.ws0})
    with torch.no_grad():
        res = time_interleaved(fns, max(3, cfg.steps // 4), 1)
    for k in fns:
        r.setdefault(k, {})["forward_ms"] = res[k]["median_ms"]
    r["forward_ms"] = res["torch"]["median_ms"]
    if path is not None:
        fns.clear()  # the session before its file
        del sess
        path.unlink()


def _memory(cfg: BenchConfig, fb: int, root: Path, folder, drag: Drag, r: dict) -> None:
    """Peak RSS of the drag in fresh processes, and the cached start (the ORT child's start)."""
    job = child_job(cfg.model, fb, cfg.threads, root, max(3, min(cfg.steps, 10)))
    r["memory"] = run_each({**job, "kind": "drag"}, cfg.backends)
    if "ort" in cfg.backends:
        djob = {**job, "folder": str(folder), **drag.job()}
        r["memory"]["ort_session_artifacts"] = run_child({**djob, "kind": "session"})
        r["memory"]["ort_runtime"] = child_runtime(djob)
        lat = r.setdefault("latency", {})
        lat["cached_start_s"] = r["memory"]["ort"]["start_s"]
        lat["cached_first_step_s"] = r["memory"]["ort"]["first_step_s"]


def _soak(cfg: BenchConfig, fb: int, root: Path, r: dict) -> None:
    """The soak in fresh processes, skipped for a model whose PyTorch step is slow."""
    if r.get("torch", {}).get("step_ms", 0) > 1000 * SOAK_MAX_STEP_S:
        r["soak_skipped"] = (f"{cfg.soak} steps at {r['torch']['step_ms'] / 1000:.1f} s per step per back-end "
                             f"would take too long; soak the bundled model")
    else:
        r["soak"] = run_each(soak_job(cfg.model, fb, cfg.threads, root, cfg.soak), cfg.backends)


def _flops(G, cfg: BenchConfig, fb: int, drag: Drag, r: dict) -> None:
    """FLOPs of a step and a forward, the machine's conv peak, and each back-end's GFLOP/s and share of it."""
    r["flops"] = count_flops(G, fb, drag)
    r["conv_peak"] = conv_peak_gflops(cfg.threads)
    peak = r["conv_peak"]["gflops"]
    for k in cfg.backends:
        if k in r:
            g = r["flops"]["step"] / (r[k]["step_ms"] / 1000) / 1e9
            r[k]["step_gflops"] = g
            r[k]["step_fraction_of_peak"] = g / peak
            if "forward_ms" in r[k]:
                g = r["flops"]["forward"] / (r[k]["forward_ms"] / 1000) / 1e9
                r[k]["forward_gflops"] = g
                r[k]["forward_fraction_of_peak"] = g / peak


def _each_model(models, threads: int, progress, message, measure_one, device: str = "cpu") -> dict:
    """A document with ``measure_one(spec, G, desc)`` for each model spec, timed; ``message(spec, G, desc)`` goes to
    ``progress`` before each."""
    doc = new_doc(threads)
    doc["device"] = device
    for spec in models:
        G, desc = load_model(spec, device)
        progress(message(spec, G, desc))
        t0 = time.perf_counter()
        r = measure_one(spec, G, desc)
        r["bench_seconds"] = time.perf_counter() - t0
        doc["models"][spec] = r
        del G
    return doc


def run_bench(models=(BUNDLED_NAME, FFHQ512), threads: int | None = None, steps: int | None = None,
              soak: int = 0, memory: bool = True, flops: bool = True, artifacts_root=None, progress=print,
              device: str = "cpu") -> dict:
    """The whole ``dragnb bench`` document: machine, versions and one :func:`bench` result per model.

    ``steps`` None: 40 timed steps per back-end, 5 for models of 256 px and more; ``threads`` None: torch's.
    ``device`` (resolved first: ValueError when unknown or unavailable) other than the CPU times the PyTorch
    back-end alone there (ONNX Runtime, the memory children, the soak and the FLOP count are CPU measurements)."""
    import torch

    from ..devices import resolve_device

    device = resolve_device(device)
    on_cpu = device == "cpu"

    threads = threads or torch.get_num_threads()

    def n_steps(G) -> int:
        return steps if steps is not None else (5 if G.img_resolution >= 256 else 40)

    def message(spec, G, desc) -> str:
        return f"[bench] {spec}: {desc}; {n_steps(G)} steps per back-end, {threads} thread(s)"

    def measure_one(spec, G, desc) -> dict:
        cpu_only = {} if on_cpu else dict(backends=("torch",), latency=False, forward=False)
        cfg = BenchConfig(steps=n_steps(G), warmup=1 if G.img_resolution >= 256 else 3, threads=threads, model=spec,
                          artifacts_root=artifacts_root, memory=memory and on_cpu, soak=soak if on_cpu else 0,
                          flops=flops and on_cpu, **cpu_only)
        return {**measure(G, cfg), "description": desc, "device": device}

    return finish_doc(_each_model(models, threads, progress, message, measure_one, device))


def run_soak(models, threads: int | None = None, steps: int = 500, artifacts_root=None, progress=print) -> dict:
    """Only the soak (``dragnb bench --soak-only``), for any model however slow its step: a document of the
    same format as :func:`run_bench` whose model results hold "soak", "ratios" and "goals"."""
    import torch

    from ..backends.ort_cache import ensure_artifacts

    threads = threads or torch.get_num_threads()

    def message(spec, G, desc) -> str:
        return f"[soak] {spec}: {desc}; {steps} steps per back-end, {threads} thread(s)"

    def measure_one(spec, G, desc) -> dict:
        fb = default_feature_block(G)
        ensure_artifacts(G, fb, "const", root, progress=False)  # the export is not part of the soak
        job = soak_job(spec, fb, threads, root, steps, timeout=6 * 3600)
        r = {"model": spec, "description": desc, "feature_block": fb, "block_shape": list(G.feature_shape(fb)),
             "image": [G.img_resolution, G.img_width], "threads": threads, "soak": run_each(job, BACKENDS)}
        r["ratios"] = ratios(r)
        r["goals"] = goals(r)
        return r

    with tempfile.TemporaryDirectory(prefix="dragnb-soak-") as tmp:
        root = Path(artifacts_root or tmp)
        doc = _each_model(models, threads, progress, message, measure_one)
    return finish_doc(doc)
