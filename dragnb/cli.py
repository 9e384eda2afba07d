"""The ``dragnb`` command line (also ``python -m dragnb``).

    dragnb generate --seed 3 --out face.png
    dragnb drag --seed 3 --points "30,32->38,32; 20,20->20,14" --steps 200 --out runs/face3
    dragnb drag --model net.safetensors --compat official --points "60,50->72,59" --out runs/as_official
    dragnb project photo.png --model toyfaces --out runs/photo --tune   # a picture into a session (cli_project)
    dragnb bench --model toyfaces --json bench.json       # PyTorch vs ONNX Runtime, side by side

Each command is one ``add_<name>_parser(subparsers)`` function that registers its arguments and sets
``func`` (a ``cmd_<name>(args) -> int``); ``PARSERS`` lists them. To add a command (``convert``,
``bench``, ...), write the pair and append the ``add_`` function to ``PARSERS``. Commands use the same
public API as the notebooks (``DragSession``); points are (x, y) image pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .backends.ort_files import ArtifactError
from .bench.cli import add_bench_parser  # the measurement code is imported only when `dragnb bench` runs
from .checkpoints import CheckpointError
from .checkpoints.convert import add_convert_parser, check_output_file
from .checkpoints.download import add_download_parser
from .cli_project import add_project_parser
from .drag.params import COMPAT_MODES
from .fileio import writable_folder_for

# ----------------------------------------------------------------------------
# Shared argument helpers


def parse_points(text: str) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """``"x,y->x,y; x,y->x,y"`` -> [((hx, hy), (tx, ty)), ...]; ValueError with the offending part."""
    pairs = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        try:
            handle, target = part.split("->")
            h = tuple(float(v) for v in handle.split(","))
            t = tuple(float(v) for v in target.split(","))
            if len(h) != 2 or len(t) != 2:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad point pair {part!r}: expected 'x,y->x,y'") from None
        pairs.append((h, t))
    if not pairs:
        raise ValueError("--points holds no 'x,y->x,y' pair")
    return pairs


def load_mask(path, size: tuple[int, int]) -> np.ndarray:
    """A mask image (white/bright = keep fixed) -> bool [H, W]; it must have the generated image's size.

    The size is checked from the file's header before any pixel is decoded, so a decompression bomb costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mask {path} is not a file")
    try:
        with Image.open(path) as im:
            if (im.height, im.width) != tuple(size):
                raise ValueError(f"mask {path} is {im.width}x{im.height}, the image is {size[1]}x{size[0]}")
            img = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"mask {path} is not a readable image ({type(e).__name__})") from None
    return img > 127


def check_output_dir(path: Path) -> Path:
    """ValueError unless ``path`` is, or can be made as, a writable folder: checked before any work, so that a bad
    ``--out`` fails at once instead of after the drag (nothing is created here)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a folder")
    writable_folder_for(path / "x", "--out")
    return path


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="bundled name, checkpoint path, user model name or ORT artifact folder (default: toyfaces)")
    p.add_argument("--seed", type=int, default=0, help="image seed (default 0)")
    p.add_argument("--truncation-psi", type=float, default=0.7, help="truncation toward the mean w (default 0.7)")
    p.add_argument("--class", dest="label", type=int, default=None,
                   help="class index of a conditional model (default: the all-zeros label, as the official DragGAN)")
    p.add_argument("--device", default="auto",
                   help="auto (a working CUDA GPU, else the CPU), cpu, cuda, cuda:N or mps (default auto); "
                        "an ORT artifact folder takes auto only")


# ----------------------------------------------------------------------------
# generate


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="write the image of a seed as PNG")
    _add_model_args(p)
    p.add_argument("--out", required=True, type=Path, help="output PNG file")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from .session import DragSession

    check_output_file(args.out)  # before the model load: a bad path must not cost the load
    s = DragSession(args.model, seed=args.seed, truncation_psi=args.truncation_psi, c=args.label,
                    device=args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    s.export_png(args.out)
    print(f"wrote {args.out} ({s.W}x{s.H}, seed {args.seed})")
    return 0


# ----------------------------------------------------------------------------
# drag


def add_drag_parser(sub) -> None:
    p = sub.add_parser("drag", help="run a DragGAN drag headless; writes final.png, drag.gif, session.json")
    _add_model_args(p)
    p.add_argument("--points", required=True, help='handle->target pairs, "x,y->x,y; x,y->x,y" (image pixels)')
    p.add_argument("--mask", type=Path, default=None, help="PNG of the image's size, white = keep fixed")
    p.add_argument("--steps", type=int, default=None, help="maximum steps (default: the session's max_steps)")
    p.add_argument("--backend", choices=("torch", "ort"), default=None,
                   help="default: ort for an ORT artifact folder as --model, else torch")
    p.add_argument("--latent-space", choices=("w+", "w"), default="w+")
    p.add_argument("--compat", choices=COMPAT_MODES, default=None,
                   help="official: the official DragGAN code's step, defaults and Adam; blog: the blog sample's "
                        "loop (docs/compat.md); default: dragnb's (an ORT artifact folder: the mode it was "
                        "exported in)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    p.add_argument("--r1", type=float, default=None, help="motion-supervision radius, pixels")
    p.add_argument("--feature-block", type=int, default=None, help="synthesis block of the features (0 = 4x4)")
    p.add_argument("--mp4", action="store_true", help="also write drag.mp4")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=cmd_drag)


def cmd_drag(args) -> int:
    from tqdm import tqdm

    from .session import DragSession

    pairs = parse_points(args.points)  # before the model load: fail fast on a typo
    check_output_dir(args.out)  # and on an output that cannot be written, before the drag runs
    given = {"lr": args.lr, "r1": args.r1, "feature_block": args.feature_block, "compat": args.compat}
    params = {k: v for k, v in given.items() if v is not None}
    s = DragSession(args.model, seed=args.seed, truncation_psi=args.truncation_psi, backend=args.backend,
                    latent_space=args.latent_space, c=args.label, device=args.device, **params)
    for h, t in pairs:
        s.add_point(handle=h, target=t)
    if args.mask is not None:
        s.set_mask(load_mask(args.mask, (s.H, s.W)))
    steps = args.steps if args.steps is not None else s.params["max_steps"]
    run = s.run(steps)  # validates steps before the progress bar shows
    results = []
    with tqdm(total=steps, desc="drag", unit="step", file=sys.stderr) as bar:
        for r in run:
            results.append(r)
            bar.set_postfix(loss=f"{r.loss:.4f}", dist=f"{max(r.distance):.1f}px")
            bar.update()
    args.out.mkdir(parents=True, exist_ok=True)
    s.export_png(args.out / "final.png")
    s.export_gif(args.out / "drag.gif")
    if args.mp4:
        s.export_mp4(args.out / "drag.mp4")
    s.save(args.out)
    last = results[-1]
    ms = np.mean([r.ms for r in results])
    print(f"steps: {len(results)} ({'converged' if last.converged else 'not converged'}, "
          f"tolerance {s.params['tolerance']:g} px), {ms:.1f} ms/step ({s.backend_name} on {s.device}, "
          f"{s.params['compat']} mode)")
    for i, (h, t, d) in enumerate(zip(last.handle_points, last.target_points, last.distance)):
        print(f"  point {i}: handle ({h[0]:g}, {h[1]:g}) -> target ({t[0]:g}, {t[1]:g}): {d:.2f} px")
    print(f"wrote {args.out}/final.png, drag.gif, session.json")
    return 0


# ----------------------------------------------------------------------------

# One function per command; add yours here (e.g. add_convert_parser, add_bench_parser).
PARSERS = [add_generate_parser, add_drag_parser, add_project_parser, add_convert_parser, add_download_parser,
           add_bench_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dragnb", description="StyleGAN2 / DragGAN workbench, headless")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


MAX_ERROR_CHARS = 500


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report bad input (arguments, files, paths) rather than a bug in dragnb."""
    return (ValueError, TypeError, OSError, ImportError, CheckpointError, ArtifactError)


def error_line(e: BaseException) -> str:
    """The first line of an error's message, bounded: library messages can carry C++ stack dumps."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input: one line on stderr, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _user_error_types() as e:
        print(f"dragnb {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
