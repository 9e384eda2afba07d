"""Side-by-side timing of the DragGAN back-ends (the hook ``dragnb bench`` will print; see issue 9).

Both back-ends run the same drag from the same latent with the same thread count, one after the other in
one process; times are medians over ``steps`` steps after ``warmup`` steps, in milliseconds.
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench(G, feature_block: int | None = None, steps: int = 20, warmup: int = 3, threads: int = 1,
          backends=("torch", "ort"), seed: int = 0, artifacts_root=None) -> dict:
    """Median step time per back-end and one no-grad inference forward of the full generator (PyTorch).

    Returns ``{"machine": ..., "threads", "feature_block", "forward_ms", "<backend>": {"step_ms", "init_ms",
    "features_ms"}}``; ``init_ms`` of "ort" includes exporting the artifacts unless they are cached.
    The drag (two points moving 1/8 of the image, no mask) never converges within the steps timed.
    """
    import onnxruntime
    import torch

    from ..drag import core
    from .base import load_backend

    torch.set_num_threads(threads)
    fb = max(0, min(5, G.num_blocks - 2)) if feature_block is None else int(feature_block)
    h, w = G.img_resolution, G.img_width
    r1, r2, tol = core.default_radii(h)
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
        ws0 = G.mapping(z, truncation_psi=0.7).numpy()
        fwd = []
        for _ in range(warmup + max(3, steps // 4)):
            t0 = time.perf_counter()
            G.synthesis(torch.from_numpy(ws0), noise_mode="const")
            fwd.append(time.perf_counter() - t0)
    handles = np.array([[h // 3, w // 3], [2 * h // 3, w // 2]], np.int64)
    targets = (handles + [[h // 8, 0], [0, w // 8]]).astype(np.float32)
    result = {
        "machine": {"cpu": _cpu_model(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "threads": threads, "feature_block": fb, "image": [h, w], "steps": steps,
        "forward_ms": 1000 * statistics.median(fwd[warmup:]),
    }
    for name in backends:
        t0 = time.perf_counter()
        cls = load_backend(name)
        b = cls(G, fb, artifacts_root=artifacts_root, threads=threads) if name == "ort" else cls(G, fb)
        init = time.perf_counter() - t0
        b.start(ws0, "w+", min(6, G.num_ws), 2e-3)
        t0 = time.perf_counter()
        _, f0 = b.features()
        feat_ms = 1000 * (time.perf_counter() - t0)
        ref = np.ascontiguousarray(f0[:, handles[:, 0], handles[:, 1]].T)
        times, hs = [], handles
        for _ in range(warmup + steps):
            t0 = time.perf_counter()
            out = b.step(hs, targets, ref, None, None, 10.0, r1, r2, tol, False, 2e-3, False)
            times.append(time.perf_counter() - t0)
            hs = out.tracked_rc
        result[name] = {"step_ms": 1000 * statistics.median(times[warmup:]), "init_ms": 1000 * init,
                        "features_ms": feat_ms}
    return result
