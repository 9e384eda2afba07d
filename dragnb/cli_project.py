"""``dragnb project IMAGE --model M --out DIR [--tune] [--backend ort]``: a picture into a drag session.

Writes into DIR the session (``session.json`` / ``session.npz`` and, after tuning, the weights delta), the
projected image (``projected.png``), the picture as the model sees it (``target.png``: cropped and resized) and
``projection.json`` (PSNR of the projection, and after tuning, of the tuned generator; the loss that ran; times).
``dragnb drag``-style drags then continue from the session (``DragSession.load(DIR)``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def add_project_parser(sub) -> None:
    p = sub.add_parser("project", help="project a picture into the model (optionally pivotal-tune it); writes a "
                                       "session, projected.png and projection.json")
    p.add_argument("image", type=Path, help="the picture (PNG, JPEG, WebP, ...; any size, centre-cropped)")
    p.add_argument("--model", default=None, help="bundled name or checkpoint path (default: toyfaces)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--tune", action="store_true", help="pivotal tuning of the synthesis weights after projecting")
    p.add_argument("--backend", choices=("torch", "ort"), default="torch",
                   help="back-end of the tuning and of later drags (ort: ONNX Runtime training)")
    p.add_argument("--latent-space", choices=("w+", "w"), default="w+")
    p.add_argument("--steps", type=int, default=200, help="projection iterations (default 200)")
    p.add_argument("--tune-steps", type=int, default=300, help="tuning iterations (default 300)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(func=cmd_project)


def cmd_project(args) -> int:
    from tqdm import tqdm

    from .fileio import writable_folder_for
    from .projection import load_image
    from .session import DragSession

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    writable_folder_for(args.out / "session.json", "--out")
    load_image(args.image, 8)  # a picture that cannot be used fails before the model loads
    if args.steps < 1 or args.tune_steps < 1:
        raise ValueError("--steps and --tune-steps must be >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    total = args.steps + (args.tune_steps if args.tune else 0)
    t0 = time.perf_counter()
    with tqdm(total=total, desc="project", unit="it", file=sys.stderr) as bar:
        def progress(phase, step):
            bar.set_description(phase)
            bar.set_postfix(psnr=f"{step.psnr:.2f}dB")
            bar.update()

        s = DragSession.from_image(args.model, args.image, tune=args.tune, backend=args.backend,
                                   latent_space=args.latent_space, projection_steps=args.steps,
                                   tuning_steps=args.tune_steps, callback=progress)
    seconds = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    s.export_png(args.out / "projected.png")
    from PIL import Image

    Image.fromarray(load_image(args.image, s.W, s.H)).save(args.out / "target.png")
    s.save(args.out)
    report = {**s.picture, "seconds": round(seconds, 2), "image": str(args.image), "size": [s.H, s.W]}
    (args.out / "projection.json").write_text(json.dumps(report, indent=1))
    line = f"projection PSNR {s.picture['projection_psnr']:.2f} dB"
    if s.picture["tuned"]:
        line += f", after tuning ({s.picture['tuning_backend']}) {s.picture['psnr']:.2f} dB"
    elif "tuned_psnr" in s.picture:
        line += f"; tuning reached {s.picture['tuned_psnr']:.2f} dB only (more --tune-steps?): kept the projection"
    line += f"; loss {s.picture['loss']}"  # says which perceptual term ran (lpips-vgg or ms-ssim)
    print(f"{line} ({seconds:.1f} s); wrote {args.out}/projected.png, target.png, projection.json, session.json")
    return 0
