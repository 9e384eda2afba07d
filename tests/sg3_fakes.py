"""NVIDIA-structured StyleGAN3 pickles made from our own StyleGAN3Generator, for the loader's tests (no NVIDIA code).

``sg3_network_dict(G)`` gives the object tree NVIDIA's training code pickles for a StyleGAN3 ``G_ema``: persistent
records with the module attributes NVIDIA's modules carry (sizes as numpy [w, h] arrays, rates, cutoffs,
half-widths, factors, taps, padding) and the constructor arguments, written with ``nvidia_fakes.dump``.
"""

from __future__ import annotations

import numpy as np
from nvidia_fakes import EasyDict, Rec, discriminator_record, module_state

from dragnb.stylegan import networks as nw
from dragnb.stylegan import sg3


def _fc(m: nw.FullyConnectedLayer) -> Rec:
    out_f, in_f = m.weight.shape
    attrs = dict(in_features=in_f, out_features=out_f, activation="lrelu" if m.lrelu else "linear",
                 weight_gain=np.float64(m.bias_gain) / np.sqrt(in_f), bias_gain=m.bias_gain)
    return Rec("FullyConnectedLayer", module_state(dict(m._parameters), {}, {}, attrs))


def _layer(m: sg3.SynthesisLayer, w_dim: int) -> Rec:
    s = m.spec
    attrs = dict(
        w_dim=w_dim, is_torgb=s.is_torgb, is_critically_sampled=False, use_fp16=False,
        in_channels=s.in_channels, out_channels=s.out_channels, in_size=np.array([s.in_size] * 2),
        out_size=np.array([s.out_size] * 2), in_sampling_rate=s.in_rate, out_sampling_rate=s.out_rate,
        tmp_sampling_rate=s.in_rate * s.up, in_cutoff=np.float64(s.in_cutoff), out_cutoff=np.float64(s.out_cutoff),
        in_half_width=np.float64(s.in_half_width), out_half_width=np.float64(s.out_half_width),
        conv_kernel=s.conv_kernel, conv_clamp=m.conv_clamp, magnitude_ema_beta=0.999, up_factor=s.up,
        up_taps=s.up_taps, down_factor=s.down, down_taps=s.down_taps, down_radial=s.down_radial,
        padding=list(s.padding),
    )
    buffers = {k: v for k, v in m._buffers.items() if v is not None}
    return Rec("SynthesisLayer", module_state(dict(m._parameters), buffers, {"affine": _fc(m.affine)}, attrs))


def g_ema_record(G: sg3.StyleGAN3Generator) -> Rec:
    cfg = G.cfg
    fcs = {f"fc{i}": _fc(getattr(G.mapping, f"fc{i}")) for i in range(cfg.mapping_layers)}
    mapping = Rec("MappingNetwork", module_state({}, dict(G.mapping._buffers), fcs, dict(
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws, num_layers=cfg.mapping_layers,
        w_avg_beta=0.998, embed=None)))
    syn = G.synthesis
    inp = syn.input
    inp_rec = Rec("SynthesisInput", module_state(dict(inp._parameters), dict(inp._buffers), {"affine": _fc(inp.affine)},
                                                 dict(w_dim=cfg.w_dim, channels=inp.channels,
                                                      size=np.array([inp.size] * 2), sampling_rate=np.float64(inp.rate),
                                                      bandwidth=np.float64(inp.bandwidth))))
    kids = {"input": inp_rec, **{n: _layer(syn.layer(i), cfg.w_dim) for i, n in enumerate(syn.layer_names)}}
    syn_rec = Rec("SynthesisNetwork", module_state({}, {}, kids, dict(
        w_dim=cfg.w_dim, num_ws=cfg.num_ws, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
        num_layers=cfg.num_layers, num_critical=cfg.num_critical, margin_size=cfg.margin_size,
        output_scale=cfg.output_scale, num_fp16_res=4, layer_names=list(syn.layer_names))))
    kw = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
              channel_base=cfg.channel_base, channel_max=cfg.channel_max, magnitude_ema_beta=0.999, num_fp16_res=4,
              conv_clamp=cfg.conv_clamp, c_dim=cfg.c_dim, img_resolution=cfg.img_resolution,
              img_channels=cfg.img_channels)
    if cfg.conv_kernel == 1:
        kw.update(conv_kernel=1, use_radial_filters=cfg.use_radial_filters)
    return Rec("Generator", module_state({}, {}, {"mapping": mapping, "synthesis": syn_rec}, dict(
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels, num_ws=cfg.num_ws), kw))


def sg3_network_dict(G: sg3.StyleGAN3Generator) -> dict:
    ema = g_ema_record(G)
    return {"G": ema, "D": discriminator_record(), "G_ema": ema, "augment_pipe": None,
            "training_set_kwargs": EasyDict(resolution=G.cfg.img_resolution)}
