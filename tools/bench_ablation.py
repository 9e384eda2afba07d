"""What each ORT optimisation buys: the same drag through ORT back-ends that each lack one optimisation, and the
PyTorch back-end, alternating step by step in one process (docs/performance.md).

    .venv/bin/python tools/bench_ablation.py --model toyfaces --threads 1 --steps 60
    .venv/bin/python tools/bench_ablation.py --model ffhq512 --threads 1 --steps 3 --variants default,no_conv_grad

Export-time variants get their own artifact folder (under --root); session-option variants share the default
artifacts. Prints median / min step times and the ratio to the PyTorch step; --json writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from dragnb import bench as B
from dragnb.backends import ort_export
from dragnb.stylegan import ops

VARIANTS = {
    # name: (export_step keyword overrides, session option overrides); "zero_insertion" also adds PyTorch that way
    "default": ({}, {}),
    "no_conv_grad": ({"conv_gradient": False}, {}),    # ORT's own ConvGrad kernel
    "no_fold": ({"fold": False}, {}),                   # weight flips, gains, demodulation sums at every step
    "zero_insertion": ({"polyphase": False}, {}),       # up-sampling conv as zero insertion + conv (both back-ends)
    "session_arena": ({}, {"arena": "session"}),        # one power-of-two arena per session (ORT's default)
    "no_arena": ({}, {"arena": "off"}),                 # malloc / free
    "all": ({}, {"optimization": "all"}),               # + NCHWc layout transformation
    "spinning": ({}, {"spinning": True}),               # idle worker threads spin
}


class _ZeroInsertion:
    """Runs a back-end's steps with ``ops.UP_CONV = "zero_insertion"``: PyTorch computes the up-sampling conv as
    zero insertion + conv."""

    def __init__(self, backend):
        self.b = backend

    def __getattr__(self, name):
        attr = getattr(self.b, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            ops.UP_CONV = "zero_insertion"
            try:
                return attr(*a, **kw)
            finally:
                ops.UP_CONV = "auto"
        return call


def make(G, fb, threads, root: Path, name: str):
    export_kw, options = VARIANTS[name]
    export_kw = dict(export_kw)
    polyphase = export_kw.pop("polyphase", True)
    real = ort_export.export_step
    if export_kw:
        ort_export.export_step = lambda *a, **kw: real(*a, **{**kw, **export_kw})
    ops.UP_CONV = "auto" if polyphase else "zero_insertion"
    try:
        folder = root / ("default" if not (export_kw or not polyphase) else name)
        return B.make_backend("ort", G, fb, threads, folder, options=options or None)
    finally:
        ort_export.export_step = real
        ops.UP_CONV = "auto"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=B.BUNDLED_NAME)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--root", type=Path, default=None, help="artifact folders (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = None
    if a.root is None:
        tmp = tempfile.TemporaryDirectory(prefix="dragnb-ablation-")
        a.root = Path(tmp.name)
    G, desc = B.load_model(a.model)
    fb = B.default_feature_block(G)
    drag = B.Drag(G)
    backends = {"torch": B.make_backend("torch", G, fb, a.threads, a.root)}
    if "zero_insertion" in a.variants.split(","):
        backends["torch_zero_insertion"] = _ZeroInsertion(B.make_backend("torch", G, fb, a.threads, a.root))
    for name in a.variants.split(","):
        print(f"[ablation] {name}", file=sys.stderr, flush=True)
        backends[name] = make(G, fb, a.threads, a.root, name)
    states = {k: drag.begin(b) for k, b in backends.items()}
    warmup = a.warmup if a.warmup is not None else (1 if G.img_resolution >= 256 else 3)
    res = B.time_interleaved({k: (lambda k=k: drag.step(backends[k], states[k])) for k in backends}, a.steps, warmup)
    ref = res["torch"]["median_ms"]
    print(f"{a.model} ({desc}), feature block {fb}, {a.threads} thread(s), {a.steps} steps each, interleaved")
    print(f"{'variant':16} {'median ms':>10} {'min ms':>10} {'/ torch':>8} {'/ default':>9}")
    for k, v in res.items():
        rel = v["median_ms"] / res["default"]["median_ms"] if "default" in res else float("nan")
        print(f"{k:16} {v['median_ms']:10.1f} {v['min_ms']:10.1f} {v['median_ms'] / ref:8.3f} {rel:9.3f}")
    if a.json:
        a.json.write_text(json.dumps({"model": a.model, "threads": a.threads, "steps": a.steps, "results": res,
                                      "machine": B.machine_info()}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
