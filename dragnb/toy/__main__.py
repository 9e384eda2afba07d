"""``python -m dragnb.toy {train,export,eval,dragcheck}``: train, export and evaluate the bundled toyfaces model.

    python -m dragnb.toy train --out artifacts/toy_train --minutes 60     # resumes from --out if it has checkpoints
    python -m dragnb.toy export --ckpt artifacts/toy_train --out dragnb/models/toyfaces.safetensors
    python -m dragnb.toy eval --model dragnb/models/toyfaces.safetensors  # PSNR, part stats, contact sheet
    python -m dragnb.toy dragcheck --seeds 0-19 --set num_layers=8       # the model-card drags (dragcheck.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from . import train as T


def _checkpoint_path(p: str) -> Path:
    path = Path(p)
    if path.is_dir():
        found = T.latest_checkpoint(path)
        if found is None:
            raise SystemExit(f"no ckpt-*.pt in {path}")
        return found
    return path


def _load_model(p: str):
    if p.endswith(".pt") or Path(p).is_dir():
        return T.generator_from_checkpoint(_checkpoint_path(p))
    import dragnb

    return dragnb.load_generator(p)


def main(argv=None):
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dragcheck"]:  # its own parser (dragnb/toy/dragcheck.py)
        from .dragcheck import _main

        return _main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m dragnb.toy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    tr = sub.add_parser("train", help="train (or resume) for a number of minutes")
    tr.add_argument("--out", default="artifacts/toy_train", help="checkpoint folder (resumed if not empty)")
    tr.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this run")
    for f in dataclasses.fields(T.TrainConfig):
        tr.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                        help=f"default {f.default}" + (" (may change on resume)" if f.name in T.RESUME_OVERRIDABLE
                                                        else " (fixed once a run exists)"))

    ex = sub.add_parser("export", help="write the EMA generator of a checkpoint as safetensors (config and the "
                                       "tuned DragGAN defaults train.DRAG_DEFAULTS in its metadata)")
    ex.add_argument("--ckpt", default="artifacts/toy_train", help="checkpoint file, or folder (newest)")
    ex.add_argument("--out", default="dragnb/models/toyfaces.safetensors")

    ev = sub.add_parser("eval", help="PSNR and part statistics on 256 held-out seeds; contact sheet")
    ev.add_argument("--model", default="dragnb/models/toyfaces.safetensors",
                    help="safetensors file, name, checkpoint file or checkpoint folder")
    ev.add_argument("--seeds", type=int, default=256)
    ev.add_argument("--sheet", default="docs/toyfaces_contact_sheet.png")
    ev.add_argument("--json", default=None, help="also write the figures here")

    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.cmd == "train":
        given = {f.name: getattr(a, f.name) for f in dataclasses.fields(T.TrainConfig)
                 if getattr(a, f.name) is not None}
        T.train(a.out, a.minutes, overrides=given, log=lambda s: print(s, flush=True))
    elif a.cmd == "export":
        import dragnb

        G = T.generator_from_checkpoint(_checkpoint_path(a.ckpt))
        dragnb.save_generator(G, a.out, drag_defaults=T.DRAG_DEFAULTS)
        print(f"wrote {a.out} (drag_defaults {T.DRAG_DEFAULTS})")
    elif a.cmd == "eval":
        from PIL import Image

        G = _load_model(a.model)
        res = T.evaluate(G, range(a.seeds))
        print(json.dumps(res, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2))
        if a.sheet:
            Image.fromarray(T.contact_sheet(G)).save(a.sheet)
            print(f"wrote {a.sheet}")


if __name__ == "__main__":
    main()
