"""Real-picture checks on a toyfaces model, where the truth is known: pictures drawn by the procedural renderer.

- In-distribution pictures: renders of random parameter draws (each parameter uniform in its ``faces.PARAMS``
  range: the training distribution, but not the renders of any seed).
- Out-of-distribution pictures (:data:`OOD`): parameters outside the training ranges (colours, sizes), and a part
  the data never has (a green square painted on the cheek).

One implementation shared by ``tests/test_projection_quality.py`` (the bars) and
``python -m dragnb.toy.picturecheck`` (the numbers in docs/projection.md). Everything goes through the public
API: ``dragnb.projection`` and ``DragSession.from_image``.
"""

from __future__ import annotations

import json
import time

import numpy as np

from . import faces

# Out-of-distribution pictures: parameter changes from a random draw, and an optional painted patch
# (rows, cols as fractions of the size, colour). Training ranges are in faces.PARAMS.
OOD = {
    "patch": {"params": {"skin_tone": 1.5, "hair_tone": -0.6, "head_ry": 0.36},
              "patch": ((0.61, 0.69), (0.28, 0.375), (40, 170, 60))},
    "colours": {"params": {"skin_tone": 2.2, "hair_tone": -1.5}},
    "big_head": {"params": {"skin_tone": 1.8, "hair_tone": -1.0, "head_ry": 0.38, "head_aspect": 1.05,
                            "mouth_width": 0.6}},
}
# Settings the acceptance numbers were measured with.
PROJECTION_STEPS = 200
TUNING = {"num_steps": 300, "lr": 1e-2, "locality_weight": 0.1}


def random_params(rng: np.random.Generator) -> dict:
    """One face: every parameter uniform in its training range."""
    return {name: float(lo + (hi - lo) * rng.random()) for name, lo, hi, _ in faces.PARAMS}


def in_distribution(n: int = 16, seed: int = 2026, size: int = 128) -> list[np.ndarray]:
    """``n`` renders of random parameter draws, uint8 [size, size, 3]."""
    rng = np.random.default_rng(seed)
    return [faces.render(random_params(rng), size) for _ in range(n)]


def ood_picture(name: str, size: int = 128, seed: int = 7) -> np.ndarray:
    """The out-of-distribution picture ``name`` (a key of :data:`OOD`), uint8 [size, size, 3]."""
    case = OOD[name]
    p = random_params(np.random.default_rng(seed))
    p.update(case["params"])
    img = faces.render(p, size).copy()
    if "patch" in case:
        (r0, r1), (c0, c1), colour = case["patch"]
        img[round(r0 * size):round(r1 * size), round(c0 * size):round(c1 * size)] = colour
    return img


def projection_psnr(G, pictures, steps: int = PROJECTION_STEPS, latent_space: str = "w+") -> list[float]:
    """W+ (or W) projection PSNR of each picture, dB."""
    from ..projection import project

    return [project(G, img, latent_space=latent_space, num_steps=steps).psnr for img in pictures]


def ood_projection(G, name: str, steps: int = PROJECTION_STEPS):
    """The W+ ``Projection`` of the out-of-distribution picture ``name`` (what ``from_image`` starts from)."""
    from ..projection import project

    return project(G, ood_picture(name), num_steps=steps)


def tuned_psnr(G, projection, backend: str = "torch", tuning: dict | None = None) -> float:
    """PSNR (dB) of the pivot's image against the picture after tuning ``projection`` on ``backend`` ("torch" or
    "ort", 1 thread) with :data:`TUNING` (updated by ``tuning``)."""
    from ..projection import PivotalTuner
    from ..projection.losses import psnr

    t = {**TUNING, **(tuning or {})}
    if backend == "ort":
        from ..projection.ort_tune import OrtPivotalTuner

        tuner = OrtPivotalTuner(G, projection.ws, projection.target, projection.noise, threads=1, **t)
    else:
        tuner = PivotalTuner(G, projection.ws, projection.target, projection.noise, **t)
    for _ in tuner.run():
        pass
    return psnr(tuner.render(), projection.target)


def tuned_session(G, picture, backend: str = "torch", steps: int = PROJECTION_STEPS, tuning: dict | None = None):
    """``DragSession.from_image`` with tuning, on PyTorch or ONNX Runtime (the drags then run on PyTorch)."""
    from ..session import DragSession

    t = {**TUNING, **(tuning or {})}
    n = t.pop("num_steps")
    return DragSession.from_image(G, picture, tune=True, tuning_backend=backend, projection_steps=steps,
                                  tuning_steps=n, tuning=t)


def mouth_drag(session, side: int = 1, fraction: float = 0.08, max_steps: int = 200) -> dict:
    """The mouth corner ``side`` (0 left, 1 right) dragged ``fraction`` x W outward in ``session``. Returns
    {"widen": change of the mouth's width / W (colour segmentation), "steps", "converged"}."""
    before = session.image
    corners = faces.mouth_corners(before)
    assert corners is not None, "the mouth must be found by segmentation"
    x, y = corners[side]
    w = before.shape[1]
    session.add_point(handle=(x, y), target=(x + fraction * w * (1 if side else -1), y))
    steps = list(session.run(max_steps=max_steps))
    after = faces.mouth_corners(session.image)
    assert after is not None, "the mouth must still be found after the drag"
    widen = ((after[1][0] - after[0][0]) - (corners[1][0] - corners[0][0])) / w
    return {"widen": float(widen), "steps": len(steps), "converged": bool(steps[-1].converged)}


def _loss_gap(a, b) -> dict:
    """Per-step relative loss difference of two runs: largest, median, first step beyond 0.5 %."""
    r = np.abs(np.asarray(a) / np.asarray(b) - 1)
    beyond = np.nonzero(r > 0.005)[0]
    return {"max": float(r.max()), "median": float(np.median(r)),
            "first_beyond_0.5%": int(beyond[0]) if len(beyond) else None}


def _free_runs(G, r, t: dict, control: bool) -> dict:
    import torch

    from ..projection import PivotalTuner
    from ..projection.losses import psnr
    from ..projection.ort_tune import OrtPivotalTuner

    o = OrtPivotalTuner(G, r.ws, r.target, r.noise, threads=1, **t)
    p = PivotalTuner(G, r.ws, r.target, r.noise, **t)
    a, b = [s.loss for s in o.run()], [s.loss for s in p.run()]
    out = {"loss": _loss_gap(a, b), "psnr_ort": psnr(o.render(), r.target), "psnr_torch": psnr(p.render(), r.target)}
    if control:  # PyTorch against itself, every weight moved by ~1e-7 of itself: how fast does rounding grow?
        q = PivotalTuner(G, r.ws, r.target, r.noise, **t)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for w in q._params:
                w.mul_(1 + 1e-7 * torch.randn(w.shape, generator=g))
        out["control_loss"] = _loss_gap([s.loss for s in q.run()], b)
        out["psnr_control"] = psnr(q.render(), r.target)
    return out


def _resynced_run(G, r, t: dict) -> dict:
    from ..projection import PivotalTuner
    from ..projection.ort_tune import OrtPivotalTuner

    o = OrtPivotalTuner(G, r.ws, r.target, r.noise, threads=1, **t)
    p = PivotalTuner(G, r.ws, r.target, r.noise, **t)
    params = {f"synthesis.{n}": w for n, w in p.tuned.synthesis.named_parameters()}
    names = o.runtime.config["trainable"]
    runs, losses, updates = (o.run(), p.run()), [], []
    for _ in range(p.settings.num_steps):
        before = {n: params[n].detach().numpy().copy() for n in names}
        o.load_weights(before)
        losses.append([next(run).loss for run in runs])
        updates.append(max(float(np.abs(o.runtime.trainer.get(n) - params[n].detach().numpy()).max())
                           for n in names))
    a, b = np.array(losses).T
    return {"loss": _loss_gap(a, b), "update_max_over_lr": max(updates) / p.settings.lr}


def tuning_agreement(G, projection, tuning: dict | None = None, control: bool = False) -> dict:
    """ONNX Runtime against PyTorch pivotal tuning of one projection (1 thread each), two ways:

    - ``free``: each back-end tunes on its own. ``loss``: per-step relative loss difference (max, median, first
      step beyond 0.5 %); the final PSNRs (dB). With ``control``, also PyTorch against PyTorch started from
      weights moved by ~1e-7 of themselves (how fast float rounding grows in the tuning itself).
    - ``resynced``: before every step ORT's weights are set to PyTorch's, so both take that step from the same
      weights (each with its own Adam moments, built from the same gradients up to rounding). ``loss`` as
      above; ``update_max_over_lr``: the largest difference of one weight's update, as a fraction of the peak
      learning rate.
    """
    t = {**TUNING, **(tuning or {})}
    return {"free": _free_runs(G, projection, t, control), "resynced": _resynced_run(G, projection, t)}


def summary(G, n: int = 16) -> dict:
    """Every measured number: in-distribution PSNR, OOD projection vs tuning (``from_image`` on PyTorch, and
    ``psnr_ort``: the same projection tuned on ONNX Runtime), the drag, times."""
    t0 = time.perf_counter()
    ind = projection_psnr(G, in_distribution(n))
    out = {"in_distribution": {"psnr_mean": float(np.mean(ind)), "psnr_min": float(np.min(ind)), "n": n,
                               "seconds_each": (time.perf_counter() - t0) / n}}
    for name in OOD:
        t0 = time.perf_counter()
        s = tuned_session(G, ood_picture(name))
        out[name] = {**s.picture, "gain": s.picture["psnr"] - s.picture["projection_psnr"],
                     "seconds": time.perf_counter() - t0, "mouth": mouth_drag(s)}
        out[name]["psnr_ort"] = tuned_psnr(G, ood_projection(G, name), "ort")
    return out


def _main(argv=None) -> int:
    import argparse

    import torch

    from ..checkpoints import load_generator

    ap = argparse.ArgumentParser(prog="python -m dragnb.toy.picturecheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toyfaces")
    ap.add_argument("-n", type=int, default=16, help="in-distribution pictures")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(summary(load_generator(a.model), a.n), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
