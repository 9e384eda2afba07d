"""Writers of pickles with the structure of NVIDIA's network pickles, for tests (no NVIDIA code).

``network_dict(G)`` turns one of our Generators into the object tree NVIDIA's training code pickles:
``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}`` whose networks are persistent-object
records (a REDUCE of ``torch_utils.persistence._reconstruct_persistent_obj`` with a meta dict holding
``module_src``, ``class_name`` and ``state``), parameters as ``torch.nn.Parameter`` (pickled by torch
itself: ``_rebuild_parameter`` / ``_rebuild_tensor_v2`` / ``_load_from_bytes`` of a LEGACY
``torch.save`` blob), kwargs as ``dnnlib.util.EasyDict``, gains as numpy float64. ``dump`` writes it
with a pickler that names the fake globals by their NVIDIA module/name.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from dragnb.stylegan import networks as nw

FAKES: set = set()


def fake_global(module: str, qualname: str, base=object):
    """A class that pickles as the global ``module.qualname`` (never importable here)."""
    cls = type(qualname, (base,), {})
    cls.__module__, cls.__qualname__ = module, qualname
    FAKES.add(cls)
    return cls


PERSIST = fake_global("torch_utils.persistence", "_reconstruct_persistent_obj")
EasyDict = fake_global("dnnlib.util", "EasyDict", dict)
TFNetwork = fake_global("dnnlib.tflib.network", "Network")

MODULE_SRC = "import torch\nfrom torch_utils import persistence\n\nclass Generator(torch.nn.Module):\n    pass\n"


class Rec:
    """A persistent-object record: pickles as ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, state: dict, module_src: str = MODULE_SRC):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    @property
    def state(self):
        return self.meta["state"]

    def __reduce__(self):
        return (PERSIST, (self.meta,))


class Call:
    """Pickles as ``func(*args)`` (used for hostile REDUCEs)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class FakePickler(pickle._Pickler):
    """Python pickler that writes FAKES as GLOBAL/STACK_GLOBAL by their module and qualname."""

    def save_global(self, obj, name=None):
        if obj in FAKES:
            if self.proto >= 4:
                self.save(obj.__module__)
                self.save(obj.__qualname__)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__qualname__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump(obj, protocol: int = 4) -> bytes:
    buf = io.BytesIO()
    FakePickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def module_state(params: dict, buffers: dict, modules: dict, attrs: dict, init_kwargs: dict | None = None) -> dict:
    """The ``__dict__`` of a torch module as NVIDIA's pickles hold it."""
    return {
        "training": False,
        "_parameters": OrderedDict(
            (k, nn.Parameter(v.detach().clone(), requires_grad=False)) for k, v in params.items()
        ),
        "_buffers": OrderedDict((k, v.detach().clone()) for k, v in buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_backward_pre_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_hooks_with_kwargs": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(modules),
        **attrs,
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
    }


def _attrs(m: nn.Module, cfg: nw.GeneratorConfig) -> tuple[str, dict]:
    """NVIDIA class name and attributes (as in stylegan2-ada-pytorch) for one of our modules."""
    if isinstance(m, nw.FullyConnectedLayer):
        out_f, in_f = m.weight.shape
        return "FullyConnectedLayer", dict(
            in_features=in_f, out_features=out_f, activation="lrelu" if m.lrelu else "linear",
            weight_gain=np.float64(m.bias_gain) / np.sqrt(in_f), bias_gain=m.bias_gain,
        )
    if isinstance(m, nw.MappingNetwork):
        return "MappingNetwork", dict(z_dim=m.z_dim, c_dim=m.c_dim, w_dim=m.w_dim, num_ws=m.num_ws,
                                      num_layers=m.num_layers, w_avg_beta=0.995)
    if isinstance(m, nw.SynthesisLayer):
        return "SynthesisLayer", dict(
            resolution=m.noise_const.shape[0], up=2 if m.up else 1, use_noise=True, activation="lrelu",
            conv_clamp=m.conv_clamp, padding=1, act_gain=np.sqrt(2.0),
        )
    if isinstance(m, nw.ToRGBLayer):
        return "ToRGBLayer", dict(conv_clamp=m.conv_clamp, weight_gain=np.float64(m.weight_gain))
    if isinstance(m, nw.SkipLayer):
        return "Conv2dLayer", dict(activation="linear", up=2, down=1, conv_clamp=None, padding=0,
                                   weight_gain=np.float64(m.weight_gain), act_gain=1.0)
    if isinstance(m, nw.SynthesisBlock):
        return "SynthesisBlock", dict(
            in_channels=m.in_channels, w_dim=cfg.w_dim, resolution=m.res, img_channels=cfg.img_channels,
            is_last=m.is_last, architecture=m.architecture, use_fp16=False, channels_last=False,
            num_conv=m.num_conv, num_torgb=m.num_torgb,
        )
    if isinstance(m, nw.SynthesisNetwork):
        return "SynthesisNetwork", dict(
            w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_resolution_log2=int(math.log2(cfg.img_resolution)),
            img_channels=cfg.img_channels, block_resolutions=list(cfg.block_resolutions), num_ws=cfg.num_ws,
        )
    if isinstance(m, nw.Generator):
        return "Generator", dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim,
                                 img_resolution=cfg.img_resolution, img_channels=cfg.img_channels, num_ws=cfg.num_ws)
    raise TypeError(type(m))


def record(m: nn.Module, cfg: nw.GeneratorConfig, module_src: str = MODULE_SRC) -> Rec:
    """Our module -> NVIDIA persistent record; ``resample_filter`` buffers become persistent, as in NVIDIA's."""
    class_name, attrs = _attrs(m, cfg)
    params = {k: v for k, v in m._parameters.items() if v is not None}
    buffers = {k: v for k, v in m._buffers.items() if v is not None}
    if isinstance(m, nw.SynthesisLayer) and "resample_filter" not in buffers:
        buffers["resample_filter"] = nw.ops.fir_filter_2d()
    kids = {k: record(c, cfg, module_src) for k, c in m._modules.items()}
    kw = None
    if isinstance(m, nw.Generator):
        kw = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                  img_channels=cfg.img_channels, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                  synthesis_kwargs=EasyDict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                            num_fp16_res=0, conv_clamp=cfg.conv_clamp))
    return Rec(class_name, module_state(params, buffers, kids, attrs, kw), module_src)


def discriminator_record() -> Rec:
    fc = Rec("FullyConnectedLayer", module_state({"weight": torch.randn(4, 8), "bias": torch.zeros(4)}, {}, {},
                                                 dict(activation="lrelu", weight_gain=np.float64(0.35))))
    return Rec("Discriminator", module_state({}, {}, {"b4": fc}, dict(c_dim=0, img_resolution=32)))


def network_dict(G: nw.Generator, module_src: str = MODULE_SRC) -> dict:
    """The dict NVIDIA's training loop pickles, with ``G_ema`` (and ``G``) made from our ``G``."""
    ema = record(G, G.cfg, module_src)
    aug = Rec("AugmentPipe", module_state({}, {"p": torch.tensor(0.2)}, {}, dict(xflip=1.0, rotate90=1.0)))
    return {
        "G": record(G, G.cfg, module_src),
        "D": discriminator_record(),
        "G_ema": ema,
        "augment_pipe": aug,
        "training_set_kwargs": EasyDict(class_name="training.dataset.ImageFolderDataset", path="~/data.zip",
                                        use_labels=bool(G.cfg.c_dim), max_size=100, xflip=False,
                                        resolution=G.cfg.img_resolution),
    }


def random_generator(seed: int = 0, **cfg_kwargs) -> nw.Generator:
    """A small Generator with every parameter and buffer random (non-zero noise strengths and biases)."""
    torch.manual_seed(seed)
    kw = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16)
    kw.update(cfg_kwargs)
    G = nw.Generator(nw.GeneratorConfig(**kw)).eval().requires_grad_(False)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith(("bias", "noise_strength", "w_avg")):
                t.copy_(torch.randn_like(t) * 0.3 + (1.0 if name.endswith("affine.bias") else 0.0))
    return G


def tf_pickle_tuple(G: nw.Generator) -> tuple:
    """(G, D, Gs) TF-era network objects holding our G's weights under TF names/layouts (numpy float32)."""
    sd = {k: v.numpy().astype(np.float32) for k, v in G.state_dict().items()}
    cfg = G.cfg

    def conv(w, flip=False):  # ours [O, I, kh, kw] -> TF [kh, kw, I, O]
        a = w.transpose(2, 3, 1, 0)
        return np.ascontiguousarray(a[::-1, ::-1] if flip else a)

    def layer(ours, tf, flip=False, noise=True):
        v = [(f"{tf}/weight", conv(sd[f"{ours}.weight"], flip)), (f"{tf}/bias", sd[f"{ours}.bias"]),
             (f"{tf}/mod_weight", np.ascontiguousarray(sd[f"{ours}.affine.weight"].T)),
             (f"{tf}/mod_bias", sd[f"{ours}.affine.bias"] - 1)]
        if noise:
            v.append((f"{tf}/noise_strength", sd[f"{ours}.noise_strength"]))
        return v

    mapping = [(f"Dense{i}/{p}", np.ascontiguousarray(sd[f"mapping.fc{i}.{p}"].T if p == "weight" else
                                                      sd[f"mapping.fc{i}.{p}"]))
               for i in range(cfg.mapping_layers) for p in ("weight", "bias")]
    syn = [("4x4/Const/const", sd["synthesis.b4.const"][None]),
           ("noise0", sd["synthesis.b4.conv1.noise_const"][None, None])]
    syn += layer("synthesis.b4.conv1", "4x4/Conv")
    noise_i = 1
    for r in cfg.block_resolutions:
        if r > 4:
            syn += layer(f"synthesis.b{r}.conv0", f"{r}x{r}/Conv0_up", flip=True)
            syn += layer(f"synthesis.b{r}.conv1", f"{r}x{r}/Conv1")
            for c in ("conv0", "conv1"):
                syn.append((f"noise{noise_i}", sd[f"synthesis.b{r}.{c}.noise_const"][None, None]))
                noise_i += 1
            if f"synthesis.b{r}.skip.weight" in sd:
                syn.append((f"{r}x{r}/Skip/weight", conv(sd[f"synthesis.b{r}.skip.weight"], flip=True)))
        if f"synthesis.b{r}.torgb.weight" in sd:
            syn += layer(f"synthesis.b{r}.torgb", f"{r}x{r}/ToRGB", noise=False)

    def net(name, variables, components=None, **static_kwargs):
        n = TFNetwork()
        n.__dict__.update(version=4, name=name, static_kwargs=static_kwargs, components=components or {},
                          build_module_src="import os\nos.system('echo never run')\n",
                          build_func_name="G_main", variables=variables)
        return n

    comps = {"mapping": net("G_mapping", mapping, mapping_lrmul=cfg.mapping_lr_multiplier),
             "synthesis": net("G_synthesis", syn, architecture=cfg.architecture)}
    Gs = net("G", [("dlatent_avg", sd["mapping.w_avg"])], comps, mapping_lrmul=cfg.mapping_lr_multiplier)
    D = net("D", [("4x4/Dense0/weight", np.ones((4, 4), np.float32))])
    return (Gs, D, Gs)
