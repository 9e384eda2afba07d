"""``dragnb convert IN OUT``: any supported checkpoint -> the project's own safetensors format."""

from __future__ import annotations

import os
from pathlib import Path

from .foreign import load_any, sniff
from .native import save_generator


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

    The output is written atomically; a failed load leaves no output file.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file, got {out_path.name}")
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
