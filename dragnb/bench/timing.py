"""Timers and counters: interleaved medians, the ORT inference session, FLOPs and the machine's conv peak."""

from __future__ import annotations

import os
import statistics
import time


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
    from ..backends.ort_sessions import import_onnxruntime, session_options

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


def count_flops(G, feature_block: int, drag) -> dict:
    """Conv/matmul FLOPs (multiply-add = 2) of one PyTorch drag step (forward + backward) and of one full
    forward, counted by ``torch.utils.flop_counter``; ``drag`` is a :class:`~dragnb.bench.workload.Drag`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..backends.torch_backend import TorchBackend

    b = TorchBackend(G, feature_block)
    state = drag.begin(b)
    with FlopCounterMode(display=False) as fc:
        drag.step(b, state)
    step = fc.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        G.synthesis(torch.from_numpy(drag.ws0), noise_mode="const")
    return {"step": int(step), "forward": int(fc.get_total_flops())}
