"""Where does an eye drag on toyfaces lose ground? The tracked point against what the image shows.

    .venv/bin/python tools/eye_drag_lag.py [--model toyfaces] [--seeds 0-5]

For the eye drags of ``dragnb.toy.dragcheck.eye`` (6% of W sideways, to convergence with the model's defaults),
prints how far the tracked point moved and how far the eye's region moved in the image and in its two
components: the last block's toRGB (a 1x1 projection of the dragged features) and the upsampled RGB of the
lower blocks. Horizontal shifts by cross-correlation of the column profile of the eye's rows, sub-pixel by a
parabola through the peak. Pixels; the drag is negative to the left.

Also: how far the tracked features themselves (all channels of the feature block) moved, by the same
cross-correlation, and the nearest-feature distances ||F(handle + k) - F0(handle)|| along the drag, k = 0..4 px,
after the drag (what the tracker chose from).

Measured on the 64 px model bundled before the 128 px one, seeds 0-8 (docs/models.md): the last toRGB moves as the image
does (1.1-2.8 px); the feature maps move about as far (-0.2 to +0.9 px more); the tracked point 2.8-3.5 px.
After the drag, the distances at the two candidate offsets nearest the target nearly tie (0.18 vs 0.21,
0.37 vs 0.38, ...): the eye's parts are flat, so its features hardly change across a pixel, and motion
supervision, which makes F(q + d) look like F(q) at every step, tips such ties forward.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def components(G, ws) -> tuple[np.ndarray, np.ndarray]:
    """(full image, upsampled RGB of the blocks before the last), float [3, H, W] each (skip architecture)."""
    from dragnb.stylegan import ops

    S = G.synthesis
    n = len(S.block_resolutions)
    with torch.no_grad():
        ws = torch.as_tensor(ws)
        x, img = S.run_blocks(ws, 0, n - 1, None, None, "const")
        _, full = S.run_blocks(ws, n - 1, n, x, img, "const")
        low = ops.upsample2d(img, S.block(n - 1).resample_filter)
    return full[0].numpy(), low[0].numpy()


def shift_x(a: np.ndarray, b: np.ndarray, rows, cols, max_lag: int = 6) -> float:
    """Horizontal shift of b against a (pixels) in the box rows x cols of [C, H, W] images."""
    pa, pb = (im[:, rows][:, :, cols].mean((0, 1)) for im in (a, b))
    pa, pb = pa - pa.mean(), pb - pb.mean()
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.array([np.sum(pa[max(0, -k): len(pa) - max(0, k)] * pb[max(0, k): len(pb) - max(0, -k)]) for k in lags])
    i = int(np.argmax(cc))
    frac = 0.0
    if 0 < i < len(cc) - 1:
        den = cc[i - 1] - 2 * cc[i] + cc[i + 1]
        frac = 0.5 * (cc[i - 1] - cc[i + 1]) / den if den else 0.0
    return float(lags[i] + frac)


def nn_distances(feat, ref, x, y, d, k_max: int = 4) -> list[float]:
    """||feat[:, row, col + k * sign(d)] - ref|| for k = 0..k_max at the rounded handle (row, col) = (y, x)."""
    r, c, step = int(round(y)), int(round(x)), 1 if d > 0 else -1
    w = feat.shape[2]
    return [round(float(np.linalg.norm(feat[:, r, c + k * step] - ref)), 2) for k in range(k_max + 1)
            if 0 <= c + k * step < w]


def main(argv=None) -> int:
    import dragnb
    from dragnb.toy import dragcheck

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toyfaces")
    ap.add_argument("--seeds", default="0-5", help="a-b")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    G = dragnb.load_generator(a.model)
    lo, hi = (int(v) for v in a.seeds.split("-"))
    for seed in range(lo, hi + 1):
        s = dragnb.DragSession(G, seed=seed, render_every=10**6)
        key = ("left", "right")[seed % 2]
        ex, ey = dragcheck.eyes(s.image)[key]
        d = 0.06 * s.image.shape[1] * (-1 if key == "left" else 1) * (1 if seed < 4 else -1)
        ws0 = s.ws.copy()
        s.add_point(handle=(ex, ey), target=(ex + d, ey))
        feat0, ref = s.tracking_features()
        last = list(s.run(max_steps=dragcheck.MAX_STEPS))[-1]
        feat1, _ = s.tracking_features()
        (f0, l0), (f1, l1) = components(G, ws0), components(G, s.ws)
        w = f0.shape[2]
        rows, cols = np.arange(int(ey) - 4, int(ey) + 5), np.arange(max(0, int(ex) - 10), min(w, int(ex) + 11))
        print(f"seed {seed} {key} eye: drag {d:+.2f}, tracked {last.handle_points[0][0] - ex:+.2f}, image "
              f"{shift_x(f0, f1, rows, cols):+.2f}, last toRGB {shift_x(f0 - l0, f1 - l1, rows, cols):+.2f}, "
              f"lower blocks' RGB {shift_x(l0, l1, rows, cols):+.2f}, "
              f"features {shift_x(feat0, feat1, rows, cols):+.2f}; "
              f"nearest-feature distances at +0..4 px: {nn_distances(feat1, ref[0], ex, ey, d)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
