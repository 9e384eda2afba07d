"""The model-card drags (eye, mouth corner, head top) on a toyfaces model, measured on the generated image by
colour segmentation.

One implementation shared by ``tests/test_toy_drags.py`` (the bars, on seeds 0-5) and
``python -m dragnb.toy dragcheck`` (the same drags on more seeds or other parameters: how the model's
``drag_defaults`` were chosen, and what an outside check of "other drags of the same kind" sees).

Every drag runs through the public ``DragSession`` API and every effect is measured by ``faces`` segmentation
of the images, never by the tracker alone. Distances are fractions of the image width W. Points are
``(x, y)`` image pixels, the UI convention.
"""

from __future__ import annotations

import math

import numpy as np

from . import faces

MAX_STEPS = 200


def drag(G, seed: int, handle, target, mask=None, max_steps: int = MAX_STEPS, **params) -> dict:
    """One single-point drag from ``seed``'s image to convergence (or ``max_steps``) with G's defaults
    (overridden by ``params``). Returns {"before", "after" (uint8 [H, W, 3]), "steps", "converged",
    "distance" (px), "tracked" ((x, y)), "tolerance" (px)}."""
    from ..session import DragSession

    s = DragSession(G, seed=seed, render_every=max_steps, **params)  # render only the last step
    before = s.image
    s.add_point(handle=handle, target=target)
    if mask is not None:
        s.set_mask(mask)
    steps = list(s.run(max_steps=max_steps))
    last = steps[-1]
    return {"before": before, "after": s.image, "steps": len(steps), "converged": last.converged,
            "distance": last.distance[0], "tracked": last.handle_points[0], "tolerance": s.params["tolerance"]}


def seed_image(G, seed: int, **params) -> np.ndarray:
    """The image a drag from ``seed`` starts on, uint8 [H, W, 3] (where the handles are measured)."""
    from ..session import DragSession

    return DragSession(G, seed=seed, **params).image


def eyes(image) -> dict:
    """{"left": (x, y), "right": (x, y)} eye centres (white + pupil); AssertionError unless both are found."""
    e = faces.eye_centres(image)
    assert len(e) == 2, "both eyes must be found by segmentation"
    return e


def eyes_moved(a, b) -> float:
    """Largest displacement of either eye centre between images a and b, pixels."""
    ea, eb = eyes(a), eyes(b)
    return max(math.hypot(eb[k][0] - ea[k][0], eb[k][1] - ea[k][1]) for k in ("left", "right"))


def mouth_corner(G, seed: int, side: int | None = None, fraction: float = 0.08, **params) -> dict:
    """A mouth corner (left if side 0, right if 1; default: by the seed's parity) dragged ``fraction`` x W
    outward. Returns {"widen": mouth width change / W, "eyes": largest eye movement / W, "steps", "converged"}."""
    img = seed_image(G, seed, **params)
    corners = faces.mouth_corners(img)
    side = seed % 2 if side is None else side
    x, y = corners[side]
    w = img.shape[1]
    d = fraction * w * (1 if side else -1)
    r = drag(G, seed, (x, y), (x + d, y), **params)
    after = faces.mouth_corners(r["after"])
    width0, width1 = corners[1][0] - corners[0][0], after[1][0] - after[0][0]
    return {"widen": (width1 - width0) / w, "eyes": eyes_moved(img, r["after"]) / w, "steps": r["steps"],
            "converged": r["converged"]}


def head_top(G, seed: int, fraction: float = 0.06, **params) -> dict:
    """The top of the head dragged ``fraction`` x W up. Returns {"rise": rise / W, "steps", "converged"}."""
    img = seed_image(G, seed, **params)
    hx, hy = faces.head_top(img)
    w = img.shape[1]
    r = drag(G, seed, (hx, hy), (hx, hy - fraction * w), **params)
    return {"rise": (hy - faces.head_top(r["after"])[1]) / w, "steps": r["steps"], "converged": r["converged"]}


def eye(G, seed: int, key: str | None = None, outward: bool | None = None, fraction: float = 0.06,
        **params) -> dict:
    """An eye ("left"/"right"; default alternating with the seed) dragged ``fraction`` x W sideways from its
    centre, outward (default for seeds < 4) or inward. Returns {"eye", "fraction": the eye centre's movement
    along the drag / the drag, "steps", "converged"}."""
    img = seed_image(G, seed, **params)
    key = ("left", "right")[seed % 2] if key is None else key
    outward = seed < 4 if outward is None else outward
    ex, ey = eyes(img)[key]
    d = fraction * img.shape[1] * (-1 if key == "left" else 1) * (1 if outward else -1)
    r = drag(G, seed, (ex, ey), (ex + d, ey), **params)
    return {"eye": key, "fraction": (eyes(r["after"])[key][0] - ex) / d, "steps": r["steps"],
            "converged": r["converged"]}


def summary(G, seeds, **params) -> dict:
    """The three drags on ``seeds`` (min/max of each measure, and the bars they meet) with ``params``."""
    rows = {"mouth": [mouth_corner(G, s, **params) for s in seeds],
            "head": [head_top(G, s, **params) for s in seeds],
            "eye": [eye(G, s, **params) for s in seeds]}
    rng = lambda k, key: [round(min(r[key] for r in rows[k]), 4), round(max(r[key] for r in rows[k]), 4)]  # noqa: E731
    out = {"widen": rng("mouth", "widen"), "mouth_eyes": rng("mouth", "eyes"), "rise": rng("head", "rise"),
           "eye_fraction": rng("eye", "fraction"),
           "steps_max": max(r["steps"] for k in rows for r in rows[k]),
           "all_converged": all(r["converged"] for k in rows for r in rows[k])}
    out["bars_met"] = {"widen >= 4%": out["widen"][0] >= 0.04, "eyes < 1.2%": out["mouth_eyes"][1] < 0.012,
                       "rise >= 4%": out["rise"][0] >= 0.04, "eye >= 60%": out["eye_fraction"][0] >= 0.60}
    return {"params": params, "seeds": list(seeds), **out, "rows": rows}


def _main(argv=None) -> int:
    import argparse
    import json

    import torch

    from ..checkpoints import load_generator

    ap = argparse.ArgumentParser(prog="python -m dragnb.toy.dragcheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toyfaces")
    ap.add_argument("--seeds", default="0-5", help="a-b or a,b,c")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a drag parameter instead of the model's default (repeatable)")
    ap.add_argument("--rows", action="store_true", help="print every seed's numbers")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if "-" in a.seeds:
        lo, hi = (int(v) for v in a.seeds.split("-"))
        seeds = range(lo, hi + 1)
    else:
        seeds = [int(v) for v in a.seeds.split(",")]
    params = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        flag = {"true": True, "false": False}.get(v.lower())
        params[k] = flag if flag is not None else float(v) if any(c in v for c in ".e") else int(v)
    res = summary(load_generator(a.model), seeds, **params)
    if not a.rows:
        res.pop("rows")
    print(json.dumps(res, default=lambda o: np.asarray(o).tolist()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
