"""Regenerate the official DragGAN reference data of ``tests/test_official_compat.py`` from an official checkout.

Builds a small random StyleGAN2 with NVIDIA's own code (as its training loop constructs one, then perturbed so that
every weight matters), pickles it as NVIDIA does, and runs four drags on it with the official DragGAN renderer,
driven as its gradio app drives it (``visualizer_drag_gradio.py``: the app's parameters, one
``Renderer._render_drag_impl`` call per step). Nothing of the official code is copied here: this script imports the
checkout given by ``--official`` and calls it. It records what each step returns, plus two pass-through observers on
the renderer's module globals (``F.l1_loss`` to split the loss into its terms, ``torch.where`` for the motion
disk's pixels, ``F.interpolate`` for the features); every call is forwarded unchanged.

Run it in a throwaway environment, outside dragnb's (the official code needs its own imports), on a checkout of
the official code (XingangPan/DragGAN; the committed data come from its commit 336f120c) at OFFICIAL::

    python -m venv /tmp/official-venv
    /tmp/official-venv/bin/pip install torch==2.13.0 numpy scipy click requests pillow matplotlib setuptools
    /tmp/official-venv/bin/python tools/official_reference.py --official OFFICIAL --out /tmp/official-ref

then, in dragnb's environment, convert the network and copy the trajectories into the test data::

    dragnb convert /tmp/official-ref/small128.pkl tests/data/official_small128.safetensors
    cp /tmp/official-ref/official_drags_small128.npz tests/data/

The 256 px data of the same tests (features resized 2x by the official code): ``--nets small256 --record-on
small256 --drags D,B`` writes ``small256.pkl`` and ``official_drags_small256.npz``.

Runs on the CPU in float32 (on CUDA the official 128 px block runs in fp16: other numbers), one thread by default,
in about a minute. The network and the trajectories are deterministic: the same torch version gives the same files.

Output ``official_drags_small128.npz``: per drag (key prefix ``A_`` .. ``D_``; points in the renderer's (row, col)):
``handles_before`` / ``handles_after`` [steps, N, 2] (before / after the step's tracking), ``targets`` [N, 2],
``loss`` [steps] (total, at the step's ws), ``loss_motion`` [steps, N] (each point's term, NaN without one),
``loss_mask`` / ``loss_reg`` [steps] (unweighted), ``stop`` [steps], ``disk_size`` [steps, N], ``disk_step0_p{j}``
(row, col pixels of the first step's disks), ``track_best`` / ``track_second`` [steps, N] (the smallest and second
smallest tracking distance: how close each tracking decision was), ``ws_first6`` [steps + 1, 6, 512] (the optimised
ws at each step; the last after the last update), ``w0`` [1, num_ws, 512], ``image_init``, ``image_last_step`` (the
image step ``steps - 1`` returned), ``image_final`` (of the last ws), uint8 HWC; the app's and the renderer's masks,
and the settings (``r1_px``, ``r2_px``, ``lr``, ``lambda_mask``, ``feature_idx``, ``psi``, ``seed``, ``w_plus``,
``reg``, ...).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import os
import pickle
import shutil
import sys
import tempfile
import time
import types

import numpy as np
import torch

# name: (resolution, synthesis kwargs, mapping kwargs, discriminator kwargs). small128 is the test network; the
# others (default channels) are for timing against the official code.
NETS = {
    "small128": (128, dict(channel_base=2048, channel_max=64), dict(num_layers=4, layer_features=64),
                 dict(channel_base=256, channel_max=16)),
    "small256": (256, dict(channel_base=4096, channel_max=64), dict(num_layers=4, layer_features=64),
                 dict(channel_base=256, channel_max=16)),
    "full256": (256, dict(channel_base=32768, channel_max=512), dict(num_layers=8),
                dict(channel_base=256, channel_max=16)),
    "full512": (512, dict(channel_base=32768, channel_max=512), dict(num_layers=8),
                dict(channel_base=256, channel_max=16)),
}

# The drags, in the app's click convention (x, y): (list of (handle, target), movable rectangle x0, y0, x1, y1
# (exclusive) or None).
DRAGS = {
    "A": ([((60, 50), (72, 59))], None),                                                  # one point
    "B": ([((40, 40), (52, 49)), ((88, 60), (88, 45)), ((60, 95), (49, 105))], None),     # three directions
    "C": ([((126, 125), (114, 116))], None),                                              # near the corner
    "D": ([((50, 50), (62, 58)), ((80, 70), (70, 81))], (30, 30, 100, 90)),               # with a mask
}

# The gradio app's defaults (global_state['params']) and what its start button passes.
APP = dict(seed=0, motion_lambda=20, r1_in_pixels=3, r2_in_pixels=12, latent_space="w+", trunc_psi=0.7,
           trunc_cutoff=None, lr=0.001, feature_idx=5, reg=0)


# ----------------------------------------------------------------------------
# The network


@torch.no_grad()
def perturb(G, gen: torch.Generator) -> None:
    """Every parameter and buffer non-trivial (NVIDIA initialises biases to 0, noise strengths to 0, ...), with
    activations kept in a sane range."""
    def rn(t, s):
        return torch.randn(t.shape, generator=gen) * s

    for name, p in list(G.named_parameters()) + list(G.named_buffers()):
        if name.endswith("resample_filter"):
            continue  # a derived constant
        if name.startswith("mapping.") and name.endswith(".weight"):
            p.mul_(1 + rn(p, 0.1))
        elif name.startswith("mapping.") and name.endswith(".bias"):
            p.copy_(rn(p, 10.0))  # times the bias gain 0.01
        elif name.endswith("affine.weight"):
            p.mul_(1 + rn(p, 0.1))
        elif name.endswith("affine.bias"):
            p.copy_(1 + rn(p, 0.1))  # styles about 1
        elif name.endswith("torgb.weight"):
            p.mul_(0.3)
        elif name.endswith("torgb.bias"):
            p.copy_(rn(p, 0.1))
        elif name.endswith(".weight"):
            p.mul_(1 + rn(p, 0.1))
        elif name.endswith(".bias"):
            p.copy_(rn(p, 0.1))
        elif name.endswith("noise_strength"):
            p.copy_(0.1 + rn(p, 0.05))
        elif name.endswith("noise_const"):
            p.copy_(rn(p, 1.0))
        elif name.endswith(".const"):
            p.mul_(1 + rn(p, 0.1))
        elif name.endswith("w_avg"):
            p.copy_(rn(p, 0.3))
        else:
            raise RuntimeError(f"no rule for {name} {tuple(p.shape)}")


def build_network(name: str, seed: int = 0) -> dict:
    """NVIDIA's network pickle dict {G, D, G_ema, augment_pipe, training_set_kwargs} for ``NETS[name]``, built by
    the checkout's ``dnnlib`` as its training loop builds one. ``G`` is the ``G_ema`` object (one copy in the file)."""
    import dnnlib

    res, syn_kw, map_kw, d_kw = NETS[name]
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    g_kwargs = dnnlib.EasyDict(class_name="training.networks_stylegan2.Generator", z_dim=512, w_dim=512,
                               mapping_kwargs=dnnlib.EasyDict(map_kw), num_fp16_res=4, conv_clamp=256, **syn_kw)
    d_kw = dict(d_kw, channel_base=max(d_kw["channel_base"], 4 * res))  # >= 4 channels at full resolution
    d_kwargs = dnnlib.EasyDict(class_name="training.networks_stylegan2.Discriminator", num_fp16_res=4,
                               conv_clamp=256, **d_kw)
    torch.manual_seed(seed)
    G = dnnlib.util.construct_class_by_name(**g_kwargs, **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**d_kwargs, **common).train().requires_grad_(False)
    perturb(G, torch.Generator().manual_seed(seed + 1))
    G_ema = copy.deepcopy(G).eval()
    return dict(G=G_ema, D=copy.deepcopy(D).eval().requires_grad_(False), G_ema=G_ema, augment_pipe=None,
                training_set_kwargs=None)


def write_network(name: str, out_dir: str) -> str:
    path = os.path.join(out_dir, f"{name}.pkl")
    with open(path, "wb") as f:
        pickle.dump(build_network(name), f)
    import legacy  # the official loader must read it back

    with open(path, "rb") as f:
        G = legacy.load_network_pkl(f)["G_ema"]
    z = torch.from_numpy(np.random.RandomState(0).randn(1, 512))
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, torch.zeros([1, 0]), truncation_psi=0.7), noise_mode="const", force_fp32=True)
    print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, num_ws {G.num_ws}, image mean {img.mean():.3f} "
          f"std {img.std():.3f}", flush=True)
    return path


# ----------------------------------------------------------------------------
# The drags


class Recorder:
    """What the pass-through observers saw during one renderer call."""

    def __init__(self):
        self.l1, self.where, self.interp = [], [], []

    def reset(self):
        self.l1.clear()
        self.where.clear()
        self.interp.clear()


def install_observers(renderer_module, rec: Recorder) -> None:
    """Replace the renderer module's globals ``F`` and ``torch`` by proxies that record and forward unchanged."""
    real_F, real_torch = renderer_module.F, renderer_module.torch

    def l1_loss(a, b, *args, **kwargs):
        out = real_F.l1_loss(a, b, *args, **kwargs)
        if a.dim() == 4:
            kind = "mask"      # F.l1_loss(feat_resize * mask, feat0_resize * mask)
        elif a.dim() == 3 and not a.requires_grad and b.requires_grad:
            kind = "motion"    # F.l1_loss(features at the disk, detached; the shifted samples)
        elif a.dim() == 3 and a.requires_grad and not b.requires_grad:
            kind = "reg"       # F.l1_loss(ws, w0)
        else:
            kind = "other"
        rec.l1.append((kind, float(out.detach())))
        return out

    def interpolate(*args, **kwargs):
        out = real_F.interpolate(*args, **kwargs)
        rec.interp.append(out.detach().clone())
        return out

    def where(*args, **kwargs):
        out = real_torch.where(*args, **kwargs)
        if len(args) == 1 and not kwargs:
            rec.where.append(tuple(o.clone().cpu().numpy() for o in out))
        return out

    class Proxy(types.ModuleType):
        def __init__(self, name, real):
            super().__init__(name)
            self._real = real

        def __getattr__(self, name):
            return getattr(self._real, name)

    f_proxy, t_proxy = Proxy("F_proxy", real_F), Proxy("torch_proxy", real_torch)
    f_proxy.l1_loss, f_proxy.interpolate, t_proxy.where = l1_loss, interpolate, where
    renderer_module.F, renderer_module.torch = f_proxy, t_proxy


def stylegan2_path(pkl: str) -> str:
    """The renderer picks the architecture from the pickle's path ('stylegan2' must occur in it): a link if not."""
    pkl = os.path.abspath(pkl)
    if "stylegan2" in pkl:
        return pkl
    folder = tempfile.mkdtemp(prefix="official_pkl_")
    atexit.register(shutil.rmtree, folder, True)
    link = os.path.join(folder, "stylegan2_" + os.path.basename(pkl))
    os.symlink(pkl, link)
    return link


def tracking_margins(feat, ref, point, r, h, w):
    """Our recomputation of one tracking search (a diagnostic): (best pixel, smallest and second smallest L2)."""
    up, down = max(point[0] - r, 0), min(point[0] + r + 1, h)
    left, right = max(point[1] - r, 0), min(point[1] + r + 1, w)
    d = torch.linalg.norm(feat[:, :, up:down, left:right] - ref.reshape(1, -1, 1, 1), dim=1).flatten()
    vals, idx = torch.sort(d, stable=True)
    best = int(idx[0])
    second = float(vals[1]) if len(vals) > 1 else np.inf
    return [best // (right - left) + up, best % (right - left) + left], float(vals[0]), second


def run_drag(Renderer, rec: Recorder, pkl: str, name: str, steps: int) -> dict:
    import dnnlib

    pairs_xy, rect = DRAGS[name]
    p = APP
    renderer = Renderer(disable_timing=True)
    res = dnnlib.EasyDict()
    # The app's init_images(): init_network positionally, then one render of the start image.
    renderer.init_network(res, pkl, p["seed"], None, p["latent_space"] == "w+", "const", p["trunc_psi"],
                          p["trunc_cutoff"], None, p["lr"])
    renderer._render_drag_impl(res, is_drag=False, to_pil=True)
    image_init = np.array(res.image)
    h = renderer.G.img_resolution

    # The app's mask is 1 on the painted movable area (all ones when none is painted); the renderer gets 1 - mask.
    app_mask = np.ones((h, h), dtype=np.uint8)
    if rect is not None:
        x0, y0, x1, y1 = rect
        app_mask[:] = 0
        app_mask[y0:y1, x0:x1] = 1
    drag_mask = 1 - torch.tensor(app_mask).float()

    # The app reverses (x, y) clicks to (row, col) before calling the renderer.
    points = [[hxy[1], hxy[0]] for hxy, _ in pairs_xy]
    targets = [[txy[1], txy[0]] for _, txy in pairs_xy]
    r2_px = round(p["r2_in_pixels"] / 512 * h)

    w0 = renderer.w0.detach().cpu().numpy().astype(np.float32)
    keys = ("handles_before", "handles_after", "loss", "loss_motion", "loss_mask", "loss_reg", "stop", "ws_first6",
            "disk_size", "step_seconds", "track_best", "track_second")
    rows = {k: [] for k in keys}
    disks_step0, feat_refs, image_last = [], None, None
    for k in range(steps):
        rec.reset()
        before = [list(map(int, pt)) for pt in points]
        w = renderer.w if renderer.w.dim() == 3 else renderer.w.unsqueeze(1).repeat(1, 6, 1)
        ws_used = torch.cat([w[:, :6], renderer.w0[:, 6:]], dim=1).detach().cpu().numpy()
        t0 = time.perf_counter()
        renderer._render_drag_impl(res, points, targets, drag_mask, p["motion_lambda"], reg=p["reg"],
                                   feature_idx=p["feature_idx"], r1=p["r1_in_pixels"], r2=p["r2_in_pixels"],
                                   trunc_psi=p["trunc_psi"], is_drag=True, to_pil=True)
        rows["step_seconds"].append(time.perf_counter() - t0)
        if "error" in res:
            raise RuntimeError(res.error)
        assert np.array_equal(res.w, ws_used), "the step returns the ws before its update"
        after = [list(map(int, pt)) for pt in res.points]
        feat = rec.interp[0]
        if k == 0:
            feat0 = rec.interp[1]
            feat_refs = [feat0[:, :, round(pt[0]), round(pt[1])] for pt in before]
            disks_step0 = [np.stack([wh[0], wh[1]], 1).astype(np.int16) for wh in rec.where]
        margins = [tracking_margins(feat, feat_refs[j], pt, r2_px, h, h) for j, pt in enumerate(before)]
        assert [m[0] for m in margins] == after, "our recomputation of the tracking must agree"
        terms = {kind: [v for kd, v in rec.l1 if kd == kind] for kind in ("motion", "mask", "reg", "other")}
        assert not terms["other"], rec.l1
        total = (sum(terms["motion"]) + p["motion_lambda"] * sum(terms["mask"][:1])
                 + p["reg"] * sum(terms["reg"][:1]))
        rows["handles_before"].append(before)
        rows["handles_after"].append(after)
        rows["loss"].append(total)
        rows["loss_motion"].append(terms["motion"] + [np.nan] * (len(pairs_xy) - len(terms["motion"])))
        rows["loss_mask"].append(terms["mask"][0] if terms["mask"] else np.nan)
        rows["loss_reg"].append(terms["reg"][0] if terms["reg"] else np.nan)
        rows["stop"].append(bool(res.stop))
        rows["ws_first6"].append(ws_used[0, :6].astype(np.float32))
        rows["disk_size"].append([len(wh[0]) for wh in rec.where] + [0] * (len(pairs_xy) - len(rec.where)))
        rows["track_best"].append([m[1] for m in margins])
        rows["track_second"].append([m[2] for m in margins])
        image_last = np.array(res.image)
        print(f"[{name}] step {k:2d} {before} -> {after} loss {total:.6f} stop {res.stop} "
              f"margins {['%.1e' % (m[2] - m[1]) for m in margins]} {rows['step_seconds'][-1] * 1e3:.0f} ms",
              flush=True)
    ws_final = torch.cat([renderer.w[:, :6], renderer.w0[:, 6:]], dim=1).detach().cpu().numpy()
    rows["ws_first6"].append(ws_final[0, :6].astype(np.float32))
    renderer._render_drag_impl(res, is_drag=False, to_pil=True)
    assert np.array_equal(res.w, ws_final)

    dtypes = {"handles_before": np.int32, "handles_after": np.int32, "loss": np.float64, "loss_motion": np.float64,
              "loss_mask": np.float64, "loss_reg": np.float64, "track_best": np.float64,
              "track_second": np.float64, "stop": bool, "disk_size": np.int32, "step_seconds": np.float64}
    out = {k: (np.stack(v) if k == "ws_first6" else np.array(v, dtypes[k])) for k, v in rows.items()}
    out.update({
        "targets": np.array(targets, np.int32), "w0": w0, "image_init": image_init, "image_last_step": image_last,
        "image_final": np.array(res.image), "mask_app": app_mask,
        "mask_renderer": drag_mask.numpy().astype(np.uint8),
        "r1_px": np.int32(round(p["r1_in_pixels"] / 512 * h)), "r2_px": np.int32(r2_px),
        "r1_in_pixels": np.int32(p["r1_in_pixels"]), "r2_in_pixels": np.int32(p["r2_in_pixels"]),
        "lr": np.float64(p["lr"]), "feature_idx": np.int32(p["feature_idx"]), "psi": np.float64(p["trunc_psi"]),
        "seed": np.int32(p["seed"]), "w_plus": np.bool_(p["latent_space"] == "w+"),
        "lambda_mask": np.float64(p["motion_lambda"]), "reg": np.float64(p["reg"]),
        "mask_term_active": np.bool_(bool(drag_mask.min() == 0 and drag_mask.max() == 1)),
        "rect_xyxy": np.array(rect if rect is not None else (-1, -1, -1, -1), np.int32),
    })
    for j, disk in enumerate(disks_step0):
        out[f"disk_step0_p{j}"] = disk
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, help="path of an official DragGAN checkout")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--nets", default="small128", help=f"networks to build, comma-separated, of {sorted(NETS)}")
    ap.add_argument("--record-on", default="small128", help="the built network the drags run on")
    ap.add_argument("--pkl", help="record the drags on this pickle instead of a network just built")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--drags", default="A,B,C,D")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if torch.cuda.is_available():  # the renderer would take the GPU, whose fp16 blocks give other numbers
        ap.error("a GPU is visible: run with CUDA_VISIBLE_DEVICES= so that the official code runs on the CPU")
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    sys.path.insert(0, os.path.abspath(a.official))
    built = {name: write_network(name, a.out) for name in a.nets.split(",") if name}
    pkl = a.pkl or built.get(a.record_on)
    if pkl is None:
        return 0
    import viz.renderer as renderer_module

    rec = Recorder()
    install_observers(renderer_module, rec)
    pkl = stylegan2_path(pkl)
    out = {"_meta_official_point_convention": np.array("row_col_yx"),
           "_meta_device": np.array("cpu"), "_meta_torch": np.array(torch.__version__)}
    for name in a.drags.split(","):
        for k, v in run_drag(renderer_module.Renderer, rec, pkl, name, a.steps).items():
            out[f"{name}_{k}"] = v
    tag = os.path.splitext(os.path.basename(a.pkl))[0] if a.pkl else a.record_on
    path = os.path.join(a.out, f"official_drags_{tag}.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
