"""``dragnb bench``: its arguments (:func:`add_bench_parser`, cheap to import) and :func:`cmd_bench`, which imports
the measurement code only when the command runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import BUNDLED_NAME, FFHQ512, SG3T512, check_at_least


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the PyTorch and ORT back-ends side by side; print ratios, write JSON")
    p.add_argument("--model", action="append", default=None,
                   help=f"{BUNDLED_NAME}, {FFHQ512}, {SG3T512} (random weights) or a checkpoint path; repeat for "
                        f"several (default: {BUNDLED_NAME} and {FFHQ512})")
    p.add_argument("--threads", type=int, default=None, help="threads of both back-ends (default: torch's default)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per back-end (default 40; 5 for models of 256 px and more)")
    p.add_argument("--soak", nargs="?", type=int, const=500, default=0, metavar="STEPS",
                   help="also run a soak of STEPS steps per back-end (default 500) in fresh processes")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--soak-only", action="store_true",
                   help="run only the soak (--soak steps, default 500), also for models whose step is slow")
    p.add_argument("--device", default="cpu",
                   help="where the PyTorch back-end runs: cpu (default), auto, cuda, cuda:N or mps; off the CPU only "
                        "the PyTorch step is timed (ORT, memory, soak and FLOPs are CPU measurements)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    check_at_least("--threads", args.threads)
    check_at_least("--steps", args.steps)
    from ..devices import resolve_device

    resolve_device(args.device)  # before anything is measured: an unknown or missing device is exit 2
    from .report import format_table
    from .run import run_bench, run_soak

    models = args.model or [BUNDLED_NAME, FFHQ512]
    progress = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if args.soak_only:
        doc = run_soak(models, args.threads, args.soak or 500, progress=progress)
    else:
        doc = run_bench(models, args.threads, args.steps, args.soak, memory=not args.no_memory, progress=progress,
                        device=args.device)
    print(format_table(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0
