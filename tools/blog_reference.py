"""Regenerate the reference data of dragnb's ``compat="blog"`` mode from the Microsoft DragGAN sample.

The sample is the one published with the blog post "Exploring DragGAN implementation using ONNX Runtime"
(microsoft/onnxruntime-training-examples, folder ``DragGAN/``; the committed data come from its commit ef9a7777,
recorded with ``--sample-commit``). This script builds a small random StyleGAN2 with NVIDIA's own code (as
``official_reference.py`` does, perturbed with its ``perturb`` so that every weight matters), pickles it as NVIDIA
does, converts the pickle with the sample's own converter functions (``checkpoint_converter.build_old_dict`` on
the pickle read through the sample's stub ``torch_utils.persistence``, then ``get_generator_checkpoint`` /
``get_mapper_checkpoint``) and runs drags with the sample's PyTorch DragGAN (``draggan_demo.py``:
``DragGANLearningForONNX``, ``motion_supervision``, ``point_tracking``), driven as its ``main()`` drives them.
Nothing of the sample is copied here: this script imports the folder given by ``--sample`` and calls it.

How it is driven (``main()`` of ``draggan_demo.py``): seed -> z = RandomState(seed).randn(1, 512), normalised in
float64 (z / sqrt(mean(z^2) + 1e-8)); ws = StyleMapper(z) repeated to 18 ws (the sample's fixed count; a 512 px
network reads the first 16, the rest are unused); the model's ``load_weights(generator state, ws)`` (the first 6
ws trainable); ``pre_optimization``; one forward whose F is the tracking reference F0; Adam(lr 0.002) over the
model's parameters with only ``latent_trainable`` requiring grad. Per iteration: the stop test
``torch.allclose(handle_points, target_points, atol=2)`` on the handle tensor the PREVIOUS step used (main()
rebuilds the handle tensor from the tracked points only after the test, so the test lags one step); the handle
tensor rebuilt from the tracked points; ``loss, img, F = model(handles, targets, F0)``; backward; step;
``point_tracking(F, F0, handles, handles_0, r2)`` on the pre-update F. main() drives one point; drag D calls the
same functions with two points (the loop is the same with N rows).

The sample hard-codes CUDA. To run it on the CPU, this script (only) makes ``torch.nn.Module.cuda`` return the
module while the sample's model is built, passes ``device=cpu`` where there is a device argument, and replaces
``torch.device("cuda")`` in the default arguments of the sample's functions (``create_circular_mask`` is called
without one) by the CPU. ``draggan_demo.py`` imports ``cv2``, ``onnx`` and ``onnxruntime.training`` at its top,
for image files and ONNX export only: empty stand-in modules are put in ``sys.modules`` before importing it (none
of their functions is ever called). Importing ``checkpoint_converter`` turns gradients off globally
(``torch.set_grad_enabled(False)`` at its top): they are turned back on after it.

Run it in a throwaway environment, outside dragnb's, with NVIDIA's StyleGAN2 code at NVIDIA (e.g. an official
DragGAN checkout: ``training/networks_stylegan2.py``, ``dnnlib``, ``torch_utils``, ``legacy.py``) and the
sample's ``DragGAN`` folder at SAMPLE::

    python -m venv /tmp/blog-venv
    /tmp/blog-venv/bin/pip install torch==2.13.0 numpy scipy click requests pillow setuptools
    /tmp/blog-venv/bin/python tools/blog_reference.py --sample SAMPLE --nvidia NVIDIA --out /tmp/blog-ref \\
        --sample-commit ef9a7777304b8ce86433e75d290cdd10ff01a966

then, in dragnb's environment, convert the network, check it against the reference (writes
``/tmp/blog-ref/dragnb_check.json``) and copy the trajectories into the test data::

    dragnb convert /tmp/blog-ref/blog512.pkl tests/data/blog_small512.safetensors
    python tools/blog_reference.py --check-dragnb tests/data/blog_small512.safetensors --out /tmp/blog-ref
    cp /tmp/blog-ref/blog_drags_small512.npz tests/data/

Runs on the CPU in float32, one thread by default, in under a minute. The network and the trajectories are
deterministic: the same torch version gives the same arrays (the pickle's bytes differ from run to run, its
tensors do not).

The network: NVIDIA's StyleGAN2 generator, 512 px, z_dim = w_dim = 512 (the sample requires 512), 16 ws,
channel_base 4096, channel_max 16 (16 channels up to 256 px, 8 at 512 px), a 2-layer mapping, conv_clamp 256 (the
sample has no clamp: the largest activation is recorded, ``max_abs_activation``, and must stay below it). The
features are block 6's output (256 px) resized bilinearly to 512 px, so the sample's resize is exercised.

Measured on the committed data (torch 2.13.0, CPU): the sample's image against NVIDIA's, same ws, max |diff|
2.5e-6; largest activation 4.3 (conv_clamp 256 never acts); dragnb's conversion (``--check-dragnb``): image
1.8e-6 from NVIDIA's, block 6 output 3.7e-6 and its bilinear resize 3.4e-6 from the sample's, mapping 1.2e-6 from
the sample's ws (the sample normalises z in float64). Drag A's tracked handle is within tolerance after step 7
(h_8), the lagged test stops it at the start of iteration 9 (9 steps run, h_9 3 px off the target); B, C, D run
30 steps. The smallest relative tracking margin, (second - best) / second: A 0.012, B 0.0093, C 0.34, D 0.023
(D was picked among 14 two-point candidates for that margin: the features of this random network are
texture-like, and a drag whose decisions are closer parts from any other float32 implementation after 20 steps).

Output ``blog_drags_small512.npz``: per drag (key prefix ``A_`` .. ``D_``; points in the sample's (row, col),
int32; ``steps`` = the steps run):

* ``handles`` [steps + 1, N, 2]: h_0 (the start) .. h_steps; h_k is the handle the loss of step k used,
  h_{k+1} the tracking result after step k; ``targets`` [N, 2];
* ``loss`` [steps] float64 (the loss of step k, at the ws before its update), ``loss_point`` [steps, N] (each
  point's ``l1_loss`` term; ``loss`` is their sum);
* ``stop`` [steps + 1] bool: the sample's stop test at the start of iteration k (on h_{k-1}, h_0 for k = 0; the
  last entry: the test the iteration after the last step would make, on h_{steps - 1}); ``stop_tracked``
  [steps + 1]: the same test on h_k (what a test without the lag would say); ``steps_run`` (< ``steps_max`` only
  when the sample's test fired);
* ``ws_first6`` [steps + 1, 6, 512] float32: the trainable ws before step k (the last: after the last update);
  ``w0`` [1, 16, 512] float32 (the sample's ws of the seed: mapper output repeated; the sample's 2 extra ws are
  the same vector, unused); ``z`` [1, 512] float64 (normalised, before the float32 cast);
* ``track_best`` / ``track_second`` [steps, N] float64: the smallest and second smallest L1 feature distance in
  each tracking search window (recomputed here; the smallest is asserted to be the sample's choice);
* ``image_init`` (the image of w0) and ``image_last`` (the image the last step's forward returned), uint8 HWC
  RGB, converted as the sample does (``np.clip(x * 127.5 + 127.5, 0, 255).astype(np.uint8)``), every 8th row and
  column (``[::8, ::8]``: 64 x 64);
* settings: ``seed``, ``r1``, ``r2``, ``tolerance``, ``lr``, ``multiplier``, ``feature_block`` (6),
  ``num_trainable`` (6), ``steps_max``.

Plus ``max_abs_activation`` (over every forward of every drag and of w0, the largest |output| of a conv layer
after its activation and of a ToRGB layer: what NVIDIA's conv_clamp would clamp), ``conv_clamp``,
``check_image_nvidia_maxdiff`` (the sample's image against NVIDIA's ``G.synthesis(ws, noise_mode="const",
force_fp32=True)``, same ws, at the first drag's seed) and ``_meta_*`` strings (torch version, device, sample
commit, network). ``blog_check.npz`` (not committed) holds that comparison's tensors (ws, both images, the
sample's block 6 output and F) for ``--check-dragnb``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import pickle
import sys
import tempfile
import types

import numpy as np
import torch

RES = 512
NUM_WS = 16  # NVIDIA's count for 512 px (2 * 8 blocks)
SYN_KW = dict(channel_base=4096, channel_max=16)
MAP_KW = dict(num_layers=2)  # layer_features = w_dim = 512, as the sample's StyleMapper requires
CONV_CLAMP = 256
# The images are kept at every 8th pixel of each axis (64 x 64 of 512 x 512): enough to check the conversion and the
# picture, at 1/64 of the size (this random network's images are noise-like and do not compress).
IMAGE_STRIDE = 8

# The sample's settings (main() of draggan_demo.py and DragGANLearningForONNX's defaults).
SAMPLE = dict(num_ws=18, r1=3, r2=12, tolerance=2, lr=0.002, multiplier=1.0, feature_block=6, num_trainable=6)

# The drags: (seed, [(handle, target) in (row, col)]). The handles were picked among a few candidates each for the
# largest smallest tracking margin over the drag (the features of this random network are texture-like, so every
# pixel is distinct, but later decisions get close). A reaches its target and the sample's stop test ends it
# early, like the sample's own nose drag; C's handle is 15 px above the bottom edge, so the tracking window
# (r2 = 12) stays inside (a handle tracked to within 12 px of an edge makes the sample raise ValueError).
DRAGS = {
    "A": (71, [((300, 230), (300, 255))]),                       # one point, 25 px to the right
    "B": (71, [((300, 100), (282, 118))]),                       # one point, diagonal (up right)
    "C": (5, [((496, 330), (484, 342))]),                        # one point near the bottom border
    "D": (5, [((256, 120), (236, 120)), ((256, 390), (276, 390))]),  # two points, up and down
}


# ----------------------------------------------------------------------------
# The network (NVIDIA's code)


def build_network(conv_clamp, seed: int = 0) -> dict:
    """NVIDIA's network pickle dict {G, D, G_ema, augment_pipe, training_set_kwargs}, built by the checkout's
    ``dnnlib`` as its training loop builds one and perturbed by ``official_reference.perturb``."""
    import dnnlib
    from official_reference import perturb

    common = dict(c_dim=0, img_resolution=RES, img_channels=3)
    g_kwargs = dnnlib.EasyDict(class_name="training.networks_stylegan2.Generator", z_dim=512, w_dim=512,
                               mapping_kwargs=dnnlib.EasyDict(MAP_KW), num_fp16_res=4, conv_clamp=conv_clamp,
                               **SYN_KW)
    d_kwargs = dnnlib.EasyDict(class_name="training.networks_stylegan2.Discriminator", num_fp16_res=4,
                               conv_clamp=conv_clamp, channel_base=4 * RES, channel_max=16)
    torch.manual_seed(seed)
    G = dnnlib.util.construct_class_by_name(**g_kwargs, **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**d_kwargs, **common).train().requires_grad_(False)
    perturb(G, torch.Generator().manual_seed(seed + 1))
    G_ema = copy.deepcopy(G).eval()
    return dict(G=G_ema, D=copy.deepcopy(D).eval().requires_grad_(False), G_ema=G_ema, augment_pipe=None,
                training_set_kwargs=None)


def nvidia_activation_max(G, ws) -> float:
    """Largest |output| of NVIDIA's SynthesisLayer / ToRGBLayer (after bias, activation, gain and clamp)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(float(o.detach().abs().max())))
             for m in G.synthesis.modules() if type(m).__name__ in ("SynthesisLayer", "ToRGBLayer")]
    try:
        with torch.no_grad():
            G.synthesis(ws, noise_mode="const", force_fp32=True)
    finally:
        for h in hooks:
            h.remove()
    return max(seen)


# ----------------------------------------------------------------------------
# The sample


@contextlib.contextmanager
def stub_modules():
    """Stand-ins for the modules draggan_demo.py imports at its top for image files and ONNX export only, in
    ``sys.modules`` while it is imported (then removed: torch looks for the real ones later)."""
    names = ("cv2", "onnx", "onnxruntime", "onnxruntime.training")
    assert not any(n in sys.modules for n in names)
    stubs = {n: types.ModuleType(n) for n in names}
    stubs["onnxruntime"].training = stubs["onnxruntime.training"]
    stubs["onnxruntime.training"].artifacts = types.ModuleType("onnxruntime.training.artifacts")
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for n in names:
            del sys.modules[n]


def switch_to_sample(sample_dir: str, nvidia_dir: str) -> types.SimpleNamespace:
    """Forget NVIDIA's ``dnnlib`` / ``torch_utils`` (the sample has stub packages of the same names, which its
    converter needs to read an NVIDIA pickle), put the sample folder first on the path and import its modules."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("dnnlib", "torch_utils"):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.abspath(nvidia_dir)]
    sys.path.insert(0, os.path.abspath(sample_dir))
    import checkpoint_converter
    torch.set_grad_enabled(True)  # the converter module turns gradients off at import
    with stub_modules():
        import draggan_demo
    import style_mapper

    cpu = torch.device("cpu")
    for fn in vars(draggan_demo).values():  # the sample's default devices: CUDA -> CPU
        fn = getattr(fn, "__init__", fn) if isinstance(fn, type) else fn
        if isinstance(fn, types.FunctionType) and fn.__defaults__:
            fn.__defaults__ = tuple(cpu if isinstance(d, torch.device) and d.type == "cuda" else d
                                    for d in fn.__defaults__)
    return types.SimpleNamespace(converter=checkpoint_converter, demo=draggan_demo, mapper=style_mapper)


@contextlib.contextmanager
def cuda_is_cpu():
    """``Module.cuda()`` returns the module unchanged while the sample builds its model."""
    real = torch.nn.Module.cuda
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.nn.Module.cuda = real


def sample_weights(sm, pkl: str):
    """The sample's converter on the pickle: (generator state dict, mapper state dict, feature list, map layers)."""
    with open(pkl, "rb") as f:
        ckpt = pickle.load(f)
    old = sm.converter.build_old_dict(ckpt)
    gen_sd, gen_params = sm.converter.get_generator_checkpoint(old)
    map_sd, map_params = sm.converter.get_mapper_checkpoint(old)
    return gen_sd, map_sd, gen_params["genFeatureList"], map_params["mapLayers"]


def sample_ws(mapper, seed: int):
    """main()'s seed -> (z float64 [1, 512], ws float32 [1, 18, 512])."""
    z = np.random.RandomState(seed=seed).randn(1, 512)
    z = z / np.sqrt(np.mean(z ** 2, axis=1, keepdims=True) + 1e-8)
    with torch.no_grad():
        w = mapper(torch.from_numpy(z.astype(np.float32)))
    return z, w.repeat(1, SAMPLE["num_ws"], 1)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """The sample's image conversion (save_image, without its colour swap): [1, 3, H, W] -> uint8 HWC RGB."""
    a = np.clip(img.detach().numpy() * 127.5 + 127.5, 0, 255).astype(np.uint8)
    return np.transpose(a[0], (1, 2, 0))


class ActivationMeter:
    """Largest |output| of the sample generator's conv layers (after activation and gain) and ToRGB layers (the
    RGB output minus the upsampled incoming image; block 0's image), over every forward: what NVIDIA's
    conv_clamp would clamp."""

    def __init__(self, generator):
        self.max = 0.0
        for m in generator.modules():
            kind = type(m).__name__
            if kind in ("Conv0Layer", "Conv1Layer"):
                m.register_forward_hook(self._conv)
            elif kind == "RGBLayer":
                m.register_forward_hook(self._rgb)
            elif kind == "FirstBlock":
                m.register_forward_hook(self._first)

    def _note(self, t):
        self.max = max(self.max, float(t.detach().abs().max()))

    def _conv(self, m, inputs, out):
        self._note(out)

    def _rgb(self, m, inputs, out):
        with torch.no_grad():
            self._note(out - m.upsample(inputs[2].permute(1, 0, 2, 3)).permute(1, 0, 2, 3))

    def _first(self, m, inputs, out):
        self._note(out[1])


def window_distances(F, F0, point, point0, r2):
    """Our recomputation of one tracking search: L1 distances of the (2 r2 + 1)^2 window around ``point`` to the
    feature of ``point0`` in F0, and the window's top-left corner."""
    r, c = int(point[0]), int(point[1])
    ref = F0[0, :, int(point0[0]), int(point0[1])].detach()
    win = F.detach()[0, :, r - r2:r + r2 + 1, c - r2:c + r2 + 1]
    return (win - ref[:, None, None]).abs().sum(0), (r - r2, c - r2)


class LossRecorder:
    """Pass-through observer of the sample's ``l1_loss`` (one call per point in ``motion_supervision``)."""

    def __init__(self, demo):
        self.values, real = [], demo.l1_loss

        def l1_loss(x, y):
            out = real(x, y)
            self.values.append(float(out.detach()))
            return out

        demo.l1_loss = l1_loss


def run_drag(sm, rec: LossRecorder, meter_holder: list, gen_sd, feat_list, mapper, name: str, steps: int) -> dict:
    demo, p = sm.demo, SAMPLE
    seed, pairs = DRAGS[name]
    cpu = torch.device("cpu")
    z, ws = sample_ws(mapper, seed)
    with cuda_is_cpu():
        model = demo.DragGANLearningForONNX(features_count=512, features_list=feat_list, tolerance=p["tolerance"],
                                            multiplier=p["multiplier"], device=cpu,
                                            output_path=tempfile.gettempdir()).to(cpu)
    assert (model.r1, model.r2) == (p["r1"], p["r2"])
    meter = ActivationMeter(model.generator)
    meter_holder.append(meter)
    w0 = ws[:, :NUM_WS].clone()  # load_weights keeps views of ws: the optimiser then writes into it
    model.load_weights(gen_sd, ws.numpy())
    handles = torch.tensor([h for h, _ in pairs], dtype=torch.float32)  # main(): (row, col) float
    targets = torch.tensor([t for _, t in pairs], dtype=torch.float32)
    model.pre_optimization(ws.numpy())
    _, img0, F0 = model(handles, targets, model.F0_resized)  # main(): this forward's F is the tracking reference
    assert torch.equal(F0, model.F0)
    handles_0 = handles.clone()
    for pname, param in model.named_parameters():
        param.requires_grad = pname == "latent_trainable"
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])

    tested = handles  # the tensor main()'s stop test looks at: the one the previous step used
    tracked = handles  # the tracking result, from which main() rebuilds the handle tensor
    rows = {k: [] for k in ("handles", "loss", "loss_point", "stop", "stop_tracked", "ws_first6", "track_best",
                            "track_second")}
    img = None
    for k in range(steps + 1):
        rows["handles"].append(tracked.numpy().astype(np.int32))
        rows["ws_first6"].append(model.latent_trainable.detach()[0].numpy().copy())
        stop = torch.allclose(tested, targets, atol=model.tolerance)
        rows["stop"].append(stop)
        rows["stop_tracked"].append(torch.allclose(tracked, targets, atol=model.tolerance))
        if stop or k == steps:
            break
        opt.zero_grad()
        used = tracked.clone()
        rec.values.clear()
        loss, img, F = model(used, targets, model.F0_resized)
        loss.backward()
        opt.step()
        new = demo.point_tracking(F, F0, used, handles_0, model.r2, model.device)
        best, second = [], []
        for i in range(len(pairs)):
            d, (top, left) = window_distances(F.detach(), F0, used[i], handles_0[i], model.r2)
            vals, idx = torch.sort(d.flatten(), stable=True)
            at = (top + int(idx[0]) // d.shape[1], left + int(idx[0]) % d.shape[1])
            assert at == tuple(int(v) for v in new[i]), (name, k, i, at, new[i])
            best.append(float(vals[0]))
            second.append(float(vals[1]))
        assert len(rec.values) == len(pairs) and abs(sum(rec.values) - loss.item()) <= 1e-6 * loss.item()
        rows["loss"].append(loss.item())
        rows["loss_point"].append(list(rec.values))
        rows["track_best"].append(best)
        rows["track_second"].append(second)
        tested, tracked = used, new
        margin = min((s - b) / s for b, s in zip(best, second))
        print(f"[{name}] step {k:2d} {used.int().tolist()} -> {new.int().tolist()} loss {loss.item():.6f} "
              f"relative margin {margin:.3g}", flush=True)
    steps_run = len(rows["loss"])
    dt = {"handles": np.int32, "loss": np.float64, "loss_point": np.float64, "stop": bool, "stop_tracked": bool,
          "track_best": np.float64, "track_second": np.float64}
    out = {k: (np.stack(v).astype(np.float32) if k == "ws_first6" else np.array(v, dt[k])) for k, v in rows.items()}
    out["handles"] = out["handles"].reshape(steps_run + 1, len(pairs), 2)
    out["loss_point"] = out["loss_point"].reshape(steps_run, len(pairs))
    out["track_best"] = out["track_best"].reshape(steps_run, len(pairs))
    out["track_second"] = out["track_second"].reshape(steps_run, len(pairs))
    out.update({
        "targets": targets.numpy().astype(np.int32), "w0": w0.numpy().astype(np.float32),
        "z": z.astype(np.float64), "image_init": to_uint8(img0)[::IMAGE_STRIDE, ::IMAGE_STRIDE].copy(),
        "image_last": to_uint8(img)[::IMAGE_STRIDE, ::IMAGE_STRIDE].copy(),
        "seed": np.int32(seed), "r1": np.int32(model.r1), "r2": np.int32(model.r2),
        "tolerance": np.float64(model.tolerance), "lr": np.float64(p["lr"]),
        "multiplier": np.float64(model.multiplier), "feature_block": np.int32(p["feature_block"]),
        "num_trainable": np.int32(p["num_trainable"]), "steps_max": np.int32(steps),
        "steps_run": np.int32(steps_run),
    })
    return out


# ----------------------------------------------------------------------------
# dragnb's side (run in dragnb's environment)


def check_dragnb(safetensors: str, out_dir: str) -> dict:
    """dragnb's Generator from ``dragnb convert`` of the pickle against the reference tensors of blog_check.npz."""
    import torch.nn.functional as F

    from dragnb.checkpoints.loader import load_generator
    from dragnb.drag.core import ResizedFeatures

    ref = np.load(os.path.join(out_dir, "blog_check.npz"))
    G = load_generator(safetensors, device="cpu")
    ws = torch.from_numpy(ref["ws"])
    fb = int(SAMPLE["feature_block"])
    with torch.no_grad():
        w = G.mapping(torch.from_numpy(ref["z"].astype(np.float32)), None, truncation_psi=1.0)
        img = G.synthesis(ws, noise_mode="const")
        x, _ = G.synthesis.run_blocks(ws, 0, fb + 1, noise_mode="const", render_rgb=False)
        feat = F.interpolate(x, size=(RES, RES), mode="bilinear", align_corners=False)
        feat_rf = ResizedFeatures(x, (RES, RES)).full()

    def diff(a, b):
        return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())

    res = {
        "mapping_vs_sample_ws": diff(w[0], ref["ws"][0, 0]),
        "image_vs_nvidia": diff(img, ref["img_nvidia"]),
        "image_vs_sample": diff(img, ref["img_sample"]),
        "block6_vs_sample": diff(x, ref["block6_sample"]),
        "features_interpolate_vs_sample_F": diff(feat, ref["F_sample"]),
        "features_resized_full_vs_sample_F": diff(feat_rf[None], ref["F_sample"]),
    }
    print(json.dumps(res, indent=1))
    with open(os.path.join(out_dir, "dragnb_check.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


# ----------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", help="path of the sample's DragGAN folder")
    ap.add_argument("--nvidia", help="path of NVIDIA's StyleGAN2 code (dnnlib, torch_utils, training, legacy.py)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--sample-commit", default="unknown", help="the sample's commit, recorded in the npz")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--drags", default=",".join(DRAGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--conv-clamp", default=str(CONV_CLAMP), help="the NVIDIA network's conv_clamp, or 'none'")
    ap.add_argument("--check-dragnb", metavar="SAFETENSORS",
                    help="(in dragnb's environment) check dragnb's conversion of the pickle against blog_check.npz")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.check_dragnb:
        check_dragnb(a.check_dragnb, a.out)
        return 0
    if not (a.sample and a.nvidia):
        ap.error("--sample and --nvidia are required")
    os.makedirs(a.out, exist_ok=True)
    conv_clamp = None if a.conv_clamp.lower() == "none" else float(a.conv_clamp)

    # NVIDIA's side: build and pickle the network (NVIDIA's persistence), read it back with its own loader.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # official_reference
    sys.path.insert(0, os.path.abspath(a.nvidia))
    pkl = os.path.join(a.out, "blog512.pkl")
    with open(pkl, "wb") as f:
        pickle.dump(build_network(conv_clamp), f)
    import legacy

    with open(pkl, "rb") as f:
        G = legacy.load_network_pkl(f)["G_ema"].eval()
    assert (G.num_ws, G.z_dim, G.w_dim) == (NUM_WS, 512, 512)
    print(f"{pkl}: {os.path.getsize(pkl) / 1e6:.2f} MB, num_ws {G.num_ws}", flush=True)

    # The sample's side.
    sm = switch_to_sample(a.sample, a.nvidia)
    gen_sd, map_sd, feat_list, map_layers = sample_weights(sm, pkl)
    mapper = sm.mapper.StyleMapper(num_layers=map_layers, ws_feats=512).eval()
    mapper.load_state_dict(map_sd)
    print(f"feature list {feat_list}, mapping layers {map_layers}", flush=True)

    # (a), (b): the sample's generator against NVIDIA's at the first drag's seed.
    names = [n for n in a.drags.split(",") if n]
    seed = DRAGS[names[0]][0]
    z, ws = sample_ws(mapper, seed)
    with cuda_is_cpu():
        gen = sm.demo.StyleGenerator(feat_list, 512).eval()
    gen.load_state_dict(gen_sd)
    block6 = []
    gen.block_list[SAMPLE["feature_block"]].register_forward_hook(lambda m, i, o: block6.append(o[0].detach()))
    meter = ActivationMeter(gen)
    with torch.no_grad():
        img_s, F_s = gen(ws)
        img_n = G.synthesis(ws[:, :NUM_WS], noise_mode="const", force_fp32=True)
        w_n = G.mapping(torch.from_numpy(z.astype(np.float32)), None, truncation_psi=1.0)
    diff_a = float((img_s - img_n).abs().max())
    print(f"(a) sample vs NVIDIA image: max |diff| {diff_a:.3g} (image range {float(img_n.min()):.2f} .. "
          f"{float(img_n.max()):.2f}); mapping: {float((w_n[:, 0] - ws[:, 0]).abs().max()):.3g}", flush=True)
    nv_act = nvidia_activation_max(G, ws[:, :NUM_WS])
    np.savez(os.path.join(a.out, "blog_check.npz"), z=z, ws=ws[:, :NUM_WS].numpy(), img_nvidia=img_n.numpy(),
             img_sample=img_s.numpy(), block6_sample=block6[0].numpy(), F_sample=F_s.numpy())

    rec = LossRecorder(sm.demo)
    meters = [meter]
    out = {"_meta_torch": np.array(torch.__version__), "_meta_device": np.array("cpu"),
           "_meta_sample": np.array("microsoft/onnxruntime-training-examples DragGAN/draggan_demo.py"),
           "_meta_sample_commit": np.array(a.sample_commit),
           "_meta_network": np.array(json.dumps(dict(resolution=RES, z_dim=512, w_dim=512, num_ws=NUM_WS,
                                                     mapping=MAP_KW, conv_clamp=conv_clamp, feat_list=feat_list,
                                                     **SYN_KW))),
           "_meta_point_convention": np.array("row_col"),
           "check_image_nvidia_maxdiff": np.float64(diff_a),
           "conv_clamp": np.float64(np.nan if conv_clamp is None else conv_clamp)}
    for name in names:
        for k, v in run_drag(sm, rec, meters, gen_sd, feat_list, mapper, name, a.steps).items():
            out[f"{name}_{k}"] = v
    act = max(m.max for m in meters)
    out["max_abs_activation"] = np.float64(act)
    print(f"(b) largest |activation| {act:.3g} (NVIDIA's at w0: {nv_act:.3g}), conv_clamp {conv_clamp}")
    if conv_clamp is not None and act >= conv_clamp:
        raise SystemExit("an activation reaches conv_clamp: rerun with --conv-clamp none")
    path = os.path.join(a.out, "blog_drags_small512.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
