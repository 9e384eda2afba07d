"""Regenerate the StyleGAN3 parity data of ``tests/test_stylegan3.py`` from NVIDIA's own code.

    python tools/stylegan3_reference.py --nvidia PATH/TO/stylegan3 --pickles /tmp/sg3nets [--out tests/data/sg3]

``--nvidia`` is a checkout of NVIDIA's stylegan3 release (its ``dnnlib``, ``torch_utils``, ``training`` and
``legacy.py`` are imported from there, never copied); the Python running this needs what that code imports
(torch, numpy, scipy) plus dragnb's own dependencies (safetensors). On a CPU NVIDIA's custom ops fall back to
their plain PyTorch reference implementations, in fp32.

For each small network (configs T and R, 64 and 128 px, random NON-trivial weights: biases, ``magnitude_ema``,
``w_avg``, the input affine perturbed after NVIDIA's initialisation) this

1. builds it the way NVIDIA's training script does and pickles ``{G, D, G_ema, ...}`` into ``--pickles``
   (outside the repository: no NVIDIA pickle enters it);
2. reloads the pickle with NVIDIA's ``legacy.load_network_pkl`` and renders seeds at psi 1.0 and 0.7 and with a
   non-identity input ``transform``, plus (first seed, 8 channels) the output of layer 5 (DragGAN's features);
3. converts the pickle with dragnb's own loader (the allowlist unpickler) and writes our safetensors, and the
   latents and NVIDIA's images as numbers (``<name>.npz``) into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

# name: (config letter, resolution, z = w dim, channel_base, channel_max, seeds)
NETS = {
    "sg3t64": ("T", 64, 64, 1024, 16, (0, 1)),
    "sg3r64": ("R", 64, 64, 2048, 32, (0, 1)),
    "sg3t128": ("T", 128, 64, 1024, 16, (0,)),
}
TRANSFORM = dict(translate=(0.13, -0.07), angle=11.0)  # degrees
FEATURE_LAYER = 5


def build(name: str, seed: int = 0):
    import dnnlib

    cfg, res, zw, cbase, cmax, _ = NETS[name]
    # As NVIDIA's train.py sets up --cfg=stylegan3-t / -r (R: 1x1 convs, radial filters, twice the channels).
    g_kwargs = dnnlib.EasyDict(class_name="training.networks_stylegan3.Generator", z_dim=zw, w_dim=zw,
                               mapping_kwargs=dnnlib.EasyDict(num_layers=2), channel_base=cbase, channel_max=cmax,
                               magnitude_ema_beta=0.5 ** (32 / 20e3), num_fp16_res=4, conv_clamp=256)
    if cfg == "R":
        g_kwargs.conv_kernel = 1
        g_kwargs.use_radial_filters = True
    torch.manual_seed(seed)
    G = dnnlib.util.construct_class_by_name(**g_kwargs, c_dim=0, img_resolution=res, img_channels=3)
    G = G.eval().requires_grad_(False)
    perturb(G, torch.Generator().manual_seed(seed + 1))
    G_ema = copy.deepcopy(G)
    # A tiny D: NVIDIA's loader insists on one. 'G' is the very object 'G_ema' (the pickle holds it once).
    D = dnnlib.util.construct_class_by_name(class_name="training.networks_stylegan2.Discriminator", c_dim=0,
                                            img_resolution=res, img_channels=3, channel_base=4 * res,
                                            channel_max=16, num_fp16_res=4, conv_clamp=256)
    return dict(G=G_ema, D=D.eval().requires_grad_(False), G_ema=G_ema, augment_pipe=None, training_set_kwargs=None)


@torch.no_grad()
def perturb(G, gen):
    """Every parameter and buffer non-trivial, with activations kept in a sane range."""
    def rn(t, s):
        return torch.randn(t.shape, generator=gen) * s

    for name, p in list(G.named_parameters()) + list(G.named_buffers()):
        if name.endswith(("up_filter", "down_filter", "freqs", "phases", "transform")):
            continue  # designed filters and drawn frequencies: kept as NVIDIA made them
        if name == "synthesis.input.affine.weight":
            p.copy_(rn(p, 0.3))  # NVIDIA initialises it to 0: the learned rotation / translation then vary with w
        elif name == "synthesis.input.affine.bias":
            p.add_(rn(p, 0.2))
        elif name.startswith("mapping.") and name.endswith(".weight"):
            p.mul_(1 + rn(p, 0.1))
        elif name.startswith("mapping.") and name.endswith(".bias"):
            p.copy_(rn(p, 10.0))  # x bias_gain 0.01
        elif name.endswith("affine.weight"):
            p.mul_(1 + rn(p, 0.1))
        elif name.endswith("affine.bias"):
            p.copy_(1 + rn(p, 0.1))
        elif name.endswith("magnitude_ema"):
            p.copy_(torch.exp(rn(p, 0.5)))
        elif name.endswith(".weight"):
            p.mul_(1 + rn(p, 0.1))
        elif name.endswith(".bias"):
            p.copy_(rn(p, 0.1))
        elif name.endswith("w_avg"):
            p.copy_(rn(p, 0.3))
        else:
            raise RuntimeError(f"unhandled {name} {tuple(p.shape)}")


def make_transform(translate, angle):
    """The image-space transform (rotate by ``angle`` degrees, then translate), 3x3, as a user would give it."""
    s, c = np.sin(np.radians(angle)), np.cos(np.radians(angle))
    return np.array([[c, s, translate[0]], [-s, c, translate[1]], [0, 0, 1]], dtype=np.float64)


@torch.no_grad()
def render(G, seeds):
    """z, ws and NVIDIA's images / layer-5 features for ``seeds`` (one at a time: batch statistics stay per image)."""
    out = {"seeds": np.array(seeds), "transform": make_transform(**TRANSFORM).astype(np.float32)}
    zs, ims = [], {"img_psi1": [], "img_psi07": [], "img_transform": [], "feat5": []}
    for s in seeds:
        z = torch.from_numpy(np.random.RandomState(s).randn(1, G.z_dim)).float()
        zs.append(z.numpy()[0])
        c = torch.zeros([1, 0])
        G.synthesis.input.transform.copy_(torch.eye(3))
        ws = G.mapping(z, c, truncation_psi=1.0)
        img, feats = run_with_features(G, ws)
        ims["img_psi1"].append(img)
        ims["feat5"].append(feats)
        ims["img_psi07"].append(run_with_features(G, G.mapping(z, c, truncation_psi=0.7))[0])
        # NVIDIA's gen_images.py stores the INVERSE of the user's image transform in the buffer.
        G.synthesis.input.transform.copy_(torch.from_numpy(np.linalg.inv(out["transform"].astype(np.float64))))
        ims["img_transform"].append(run_with_features(G, ws)[0])
        G.synthesis.input.transform.copy_(torch.eye(3))
    out["z"] = np.stack(zs).astype(np.float32)
    out.update({k: np.stack(v).astype(np.float32) for k, v in ims.items()})
    out["feat5"] = out["feat5"][:1, :8]  # first seed, 8 channels: enough to pin the layer and its margins down
    return out


def run_with_features(G, ws):
    feats = {}
    name = G.synthesis.layer_names[FEATURE_LAYER]
    hook = getattr(G.synthesis, name).register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    try:
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
    finally:
        hook.remove()
    return img[0].numpy(), feats["x"][0].numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvidia", required=True, help="a checkout of NVIDIA's stylegan3 repository")
    ap.add_argument("--pickles", required=True, help="folder for the network pickles (outside the repository)")
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "sg3"))
    ap.add_argument("--which", default=",".join(NETS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(a.nvidia).resolve()))
    sys.path.insert(0, str(ROOT))
    import legacy  # NVIDIA's loader, from --nvidia

    from dragnb.checkpoints import load_generator
    from dragnb.checkpoints.native import save_generator

    os.makedirs(a.pickles, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    for name in a.which.split(","):
        pkl = Path(a.pickles) / f"{name}.pkl"
        with open(pkl, "wb") as f:
            pickle.dump(build(name), f)
        with open(pkl, "rb") as f:
            G = legacy.load_network_pkl(f)["G_ema"].eval()
        data = render(G, NETS[name][-1])
        np.savez_compressed(Path(a.out) / f"{name}.npz", **data)
        save_generator(load_generator(pkl), Path(a.out) / f"{name}.safetensors", drag_defaults={})
        img = data["img_psi1"]
        print(f"{name}: {pkl.stat().st_size / 1e6:.2f} MB pickle, num_ws={G.num_ws}, layers={G.synthesis.layer_names}, "
              f"img mean={img.mean():.3f} std={img.std():.3f} min={img.min():.3f} max={img.max():.3f}", flush=True)


if __name__ == "__main__":
    main()
