"""``dragnb convert IN OUT``: any supported checkpoint -> the project's own safetensors format."""

from __future__ import annotations

import os
from pathlib import Path

from ..fileio import writable_folder_for
from .foreign import load_any, sniff
from .native import save_generator


def check_output_file(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """Refuse (``ValueError``) an output path that cannot be written, before any work is done: a folder, a
    path under a file, a folder we may not write, or (with ``suffix``) the wrong extension. Missing parent
    folders are fine (they are created when writing)."""
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise ValueError(f"output must be a {suffix} file, got {path.name or path}")
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name")
    writable_folder_for(path)
    return path


def summarize(G) -> dict:
    """Resolution, num_ws, per-block (StyleGAN3: per-layer) channels and architecture of a Generator (JSON)."""
    cfg = G.cfg
    return {
        "resolution": [cfg.img_resolution, cfg.width],  # [height, width]
        "num_ws": cfg.num_ws,
        "z_dim": cfg.z_dim,
        "w_dim": cfg.w_dim,
        "c_dim": cfg.c_dim,
        # StyleGAN2: per block resolution; StyleGAN3: per synthesis layer (its name says size and channels).
        "channels": ({sp.name: sp.out_channels for sp in cfg.layer_specs()} if cfg.architecture == "stylegan3"
                     else {r: cfg.channels(r) for r in cfg.block_resolutions}),
        "architecture": cfg.architecture,
        "mapping_layers": cfg.mapping_layers,
        "conv_clamp": cfg.conv_clamp,
    }


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike, progress: bool = True) -> dict:
    """Load ``in_path`` safely, write ``out_path`` (.safetensors), return :func:`summarize` + paths/format.

    The output path is checked before the input is read; the output is written atomically, so a failed
    load leaves no output file. Raises ``ValueError`` for an unusable output path, ``FileNotFoundError``
    for a missing input and :class:`~.errors.CheckpointError` for an input it cannot load.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    check_output_file(out_path, ".safetensors")
    if in_path.resolve() == out_path.resolve():
        raise ValueError("input and output are the same file")
    fmt = sniff(in_path)
    G = load_any(in_path, progress=progress)
    save_generator(G, out_path)
    return {"input": str(in_path), "format": fmt, "output": str(out_path), **summarize(G)}


def format_summary(s: dict) -> str:
    h, w = s["resolution"]
    chans = ", ".join(f"{r}: {c}" for r, c in s["channels"].items())
    return "\n".join([
        f"converted {s['input']} ({s['format']}) -> {s['output']}",
        f"  resolution   {h}x{w} (height x width)",
        f"  num_ws       {s['num_ws']}  (z_dim {s['z_dim']}, w_dim {s['w_dim']}, c_dim {s['c_dim']})",
        f"  channels     {chans}",
        f"  architecture {s['architecture']}  (mapping layers {s['mapping_layers']}, conv_clamp {s['conv_clamp']})",
    ])


def add_convert_parser(subparsers) -> None:
    """Register ``convert IN OUT`` on an ``argparse`` sub-parsers object (handler in ``func``)."""
    p = subparsers.add_parser(
        "convert", help="convert an NVIDIA .pkl / rosinality .pt checkpoint to dragnb's .safetensors",
        description="Read a checkpoint without executing code from it and write dragnb's own format.",
    )
    p.add_argument("input", help="NVIDIA network pickle, rosinality .pt, or safetensors file")
    p.add_argument("output", help="output .safetensors path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_convert)


def _run_convert(args) -> int:
    print(format_summary(convert(args.input, args.output, progress=not args.no_progress)))
    return 0
