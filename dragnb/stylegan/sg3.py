"""StyleGAN3 generator (configs T and R), written from the math of Karras et al. 2021, "Alias-Free Generative
Adversarial Networks", in plain PyTorch and fp32.

The synthesis network is a Fourier-feature input followed by ``num_layers + 1`` layers ``L0 .. L{num_layers}``
(the last one is the ToRGB layer). Every layer is a modulated convolution (3x3 in T, 1x1 in R) followed by the
filtered leaky ReLU of ``sg3_ops.py``; its sampling rate, cutoff, stopband and size follow the paper's flexible
layer specifications, a geometric progression (:meth:`StyleGAN3Config.layer_specs`). Parameter and buffer
names equal the G_ema names of NVIDIA's pickles (``synthesis.L3_52_16.weight``), so a checkpoint's tensors,
including its FIR filters and ``magnitude_ema``, load with a plain ``load_state_dict``.

For DragGAN a synthesis "block" is one layer: block ``i`` is ``L{i}``, whose output (margins included) are the
features; the official DragGAN takes those of layer 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import ops, sg3_ops
from .networks import DictConfig, FullyConnectedLayer, Generator, blocks_forward

ARCHITECTURE = "stylegan3"


@dataclass
class StyleGAN3Config(DictConfig):
    """Hyper-parameters of a StyleGAN3 generator (T: ``conv_kernel=3``; R: ``conv_kernel=1`` and radial filters)."""

    architecture: str = ARCHITECTURE      # tells the config formats apart (GeneratorConfig: "skip", ...)
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768             # channels of layer i: rint(min(channel_base / 2 / cutoff_i, channel_max))
    channel_max: int = 512
    num_layers: int = 14                  # layers before ToRGB
    num_critical: int = 2                 # critically sampled layers at the end
    first_cutoff: float = 2.0             # f_c of the first layer
    first_stopband: float = 2**2.1        # f_t of the first layer
    last_stopband_rel: float = 2**0.3     # f_t / f_c of the last layer
    margin_size: int = 10                 # pixels computed outside the image on each side
    output_scale: float = 0.25
    conv_kernel: int = 3                  # 3 (T) or 1 (R)
    filter_size: int = 6                  # FIR taps per factor of the up/down-sampling
    lrelu_upsampling: int = 2             # how much higher the rate of the nonlinearity is
    use_radial_filters: bool = False      # R: radially symmetric down-sampling filters (not in critical layers)
    conv_clamp: float | None = 256.0

    # The fields MappingNetwork reads (shared with StyleGAN2's config): no label embedding or hidden-size choice.
    mapping_embed_features = None
    mapping_layer_features = None
    normalize_z = True

    def __post_init__(self):
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"architecture must be {ARCHITECTURE!r}, got {self.architecture!r}")
        ints = {"z_dim": 1, "w_dim": 1, "c_dim": 0, "img_channels": 1, "mapping_layers": 1, "channel_base": 1,
                "channel_max": 1, "num_layers": 1, "num_critical": 0, "margin_size": 0, "filter_size": 1,
                "lrelu_upsampling": 1}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        for name in ("first_cutoff", "first_stopband", "last_stopband_rel", "output_scale", "mapping_lr_multiplier"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        res = self.img_resolution
        if isinstance(res, bool) or not isinstance(res, int) or res < 8 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {res!r}")
        if self.num_critical >= self.num_layers:
            raise ValueError(f"need num_critical < num_layers, got {self.num_critical}, {self.num_layers}")
        if self.conv_kernel not in (1, 3) or not isinstance(self.use_radial_filters, bool):
            raise ValueError("conv_kernel must be 1 or 3 and use_radial_filters a bool")
        if self.conv_clamp is not None and not (isinstance(self.conv_clamp, (int, float)) and self.conv_clamp > 0):
            raise ValueError(f"conv_clamp must be None or positive, got {self.conv_clamp!r}")
        try:
            specs = self.layer_specs()
        except (ArithmeticError, ValueError) as e:
            raise ValueError(f"these hyper-parameters give no layer geometry ({e})") from None
        for sp in specs:
            counts = (sp.in_rate, sp.out_rate, sp.in_size, sp.out_size, sp.in_channels, sp.out_channels, sp.up, sp.down)
            if min(counts) < 1 or sp.in_rate * sp.up != sp.out_rate * sp.down:
                raise ValueError(f"these hyper-parameters give an impossible layer {sp.name}")

    img_width = None  # square images (the Generator interface has a width)

    @property
    def width(self) -> int:
        return self.img_resolution

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2  # the input's, one per layer, ToRGB's


    def bands(self):
        """Per layer 0..num_layers: (cutoff f_c, sampling rate s, half-width f_h, size, channels)."""
        n, res = self.num_layers, self.img_resolution
        # Cutoff and minimum stopband grow geometrically to the last non-critical layer, then stay.
        e = np.minimum(np.arange(n + 1) / (n - self.num_critical), 1)
        last_cutoff = res / 2
        cutoffs = self.first_cutoff * (last_cutoff / self.first_cutoff) ** e
        stopbands = self.first_stopband * (last_cutoff * self.last_stopband_rel / self.first_stopband) ** e
        # Smallest power-of-two rate holding the stopband (at most the image's), the transition half-width it
        # allows, and the size with margins (none for the last two layers, which are the image).
        rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
        half_widths = np.maximum(stopbands, rates / 2) - cutoffs
        sizes = rates + 2 * self.margin_size
        sizes[-2:] = res
        channels = np.rint(np.minimum(self.channel_base / 2 / cutoffs, self.channel_max))
        channels[-1] = self.img_channels
        return cutoffs, rates, half_widths, sizes.astype(int), channels.astype(int)

    def layer_specs(self) -> list[LayerSpec]:
        cutoffs, rates, half_widths, sizes, channels = self.bands()
        specs = []
        for i in range(self.num_layers + 1):
            p = max(i - 1, 0)
            specs.append(LayerSpec.make(self, i, int(channels[p]), int(channels[i]), int(sizes[p]), int(sizes[i]),
                                        int(rates[p]), int(rates[i]), float(cutoffs[p]), float(cutoffs[i]),
                                        float(half_widths[p]), float(half_widths[i])))
        return specs


@dataclass(frozen=True)
class LayerSpec:
    """Everything about layer ``L{index}`` that is not a weight: sizes, rates, filter design, padding."""

    index: int
    is_torgb: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_rate: int
    out_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # (left, right, top, bottom) after zero insertion

    @classmethod
    def make(cls, cfg: StyleGAN3Config, i, cin, cout, in_size, out_size, in_rate, out_rate, in_cut, out_cut,
             in_hw, out_hw) -> LayerSpec:
        torgb = i == cfg.num_layers
        critical = i >= cfg.num_layers - cfg.num_critical
        k = 1 if torgb else cfg.conv_kernel
        tmp_rate = max(in_rate, out_rate) * (1 if torgb else cfg.lrelu_upsampling)  # rate of the nonlinearity
        up, down = tmp_rate // in_rate, tmp_rate // out_rate
        up_taps = cfg.filter_size * up if up > 1 and not torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not torgb else 1
        # Pad so that the output has out_size samples, with the sample grids of input and output centred on each
        # other (the paper's symmetric interpretation of the sample grid: the extra sample goes first, shifted by up).
        total = (out_size - 1) * down + 1 - (in_size + k - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        return cls(i, torgb, cin, cout, in_size, out_size, in_rate, out_rate, in_cut, out_cut, in_hw, out_hw, k,
                   up, down, up_taps, down_taps, cfg.use_radial_filters and not critical, (lo, total - lo) * 2)

    @property
    def name(self) -> str:
        return f"L{self.index}_{self.out_size}_{self.out_channels}"

    def filters(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        rate = self.in_rate * self.up
        fu = sg3_ops.lowpass_filter(self.up_taps, self.in_cutoff, 2 * self.in_half_width, rate)
        fd = sg3_ops.lowpass_filter(self.down_taps, self.out_cutoff, 2 * self.out_half_width, rate, self.down_radial)
        return fu, fd


# ----------------------------------------------------------------------------
# Layers


class SynthesisInput(nn.Module):
    """Fourier features: ``channels`` sinusoids of fixed frequencies and phases, rotated and translated by an
    affine function of w, then by the user ``transform``, sampled on the first layer's grid, mixed by a
    learned [C, C] matrix."""

    def __init__(self, w_dim: int, channels: int, size: int, rate: float, bandwidth: float):
        super().__init__()
        self.size, self.rate, self.bandwidth, self.channels = int(size), float(rate), float(bandwidth), channels
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)  # (cos, sin, tx, ty) of the learned rotation / translation
        with torch.no_grad():  # a fresh network starts without rotation or translation
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        # The user's transform: a 3x3 matrix from output image coordinates to input coordinates (the INVERSE of
        # how the image should move), as in NVIDIA's code. See StyleGAN3Generator.set_transform.
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.randn([channels, 2]))  # (fx, fy) per channel; the checkpoint's
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w)  # [N, 4]
        t = t / t[:, :2].square().sum(1, keepdim=True).sqrt()  # unit rotation (cos, sin)
        c, s, tx, ty = t.unbind(1)
        # m = R @ T @ user: the inverse rotation R after the inverse translation T, then the user's transform.
        # Rows 0 and 1 of R @ T written out, as elementwise ops: ORT's gradient builder rejects a Concat that
        # takes one tensor twice (what stacking whole 3x3 matrices with their zeros and ones gives).
        m0 = torch.stack([c, -s, s * ty - c * tx], 1) @ self.transform  # [N, 3]: row 0 of m
        m1 = torch.stack([s, c, -(s * tx + c * ty)], 1) @ self.transform  # row 1
        # A sinusoid of frequency f sampled at m(x): frequency f m[:2, :2], phase shifted by f . m[:2, 2].
        fx, fy = self.freqs[None, :, 0:1], self.freqs[None, :, 1:2]  # [1, C, 1]
        freqs = fx * m0[:, None, :2] + fy * m1[:, None, :2]  # [N, C, 2]
        phases = self.phases[None] + (fx * m0[:, None, 2:] + fy * m1[:, None, 2:]).squeeze(2)  # [N, C]
        # Fade out what a user transform pushes beyond the band the first layer can represent.
        amp = (1 - (freqs.square().sum(2).sqrt() - self.bandwidth) / (self.rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel centres of the first layer's grid, in image units (the image spans [-0.5, 0.5] at the final rate).
        pos = (torch.arange(self.size, dtype=w.dtype, device=w.device) + 0.5 - self.size / 2) / self.rate
        arg = (pos[None, None, :, None] * freqs[:, None, None, :, 0]  # x along width
               + pos[None, :, None, None] * freqs[:, None, None, :, 1]  # y along height
               + phases[:, None, None, :])  # [N, H, W, C]
        x = torch.sin(arg * (2 * math.pi)) * amp[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]


def modulated_conv2d(x, weight, styles, demodulate: bool, input_gain, padding: int):
    """StyleGAN3's modulated convolution: the StyleGAN2 one with weights and styles first normalised to unit RMS
    (so fp16 training cannot overflow) and the input scaled by ``input_gain`` (1 / RMS of the layer's training
    inputs, ``magnitude_ema``). Non-fused form as in ``networks.modulated_conv2d``: the conv weight stays a
    shared constant.

    The style RMS is taken over the whole batch ([N, Cin]), as the checkpoints were trained; DragGAN renders one
    image at a time, where it is per image.
    """
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    y = ops.conv2d(x * (styles * input_gain)[:, :, None, None], weight, padding=padding)
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, Cout]
        y = y * dcoefs[:, :, None, None]
    return y


class SynthesisLayer(nn.Module):
    """Modulated conv, then the filtered leaky ReLU (ToRGB: 1x1, no demodulation, bias and clamp only)."""

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None):
        super().__init__()
        self.spec, self.conv_clamp = spec, conv_clamp
        k = spec.conv_kernel
        self.affine = FullyConnectedLayer(w_dim, spec.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([spec.out_channels, spec.in_channels, k, k]))
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        fu, fd = spec.filters()
        # Persistent: a checkpoint's filters are what its layers were trained with (NVIDIA's names, None = identity).
        self.register_buffer("up_filter", fu)
        self.register_buffer("down_filter", fd)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        sp = self.spec
        styles = self.affine(w)
        if sp.is_torgb:
            styles = styles * (1 / math.sqrt(sp.in_channels * sp.conv_kernel**2))
        x = modulated_conv2d(x, self.weight, styles, demodulate=not sp.is_torgb,
                             input_gain=self.magnitude_ema.rsqrt(), padding=sp.conv_kernel - 1)
        gain, slope = (1.0, 1.0) if sp.is_torgb else (math.sqrt(2), 0.2)
        return sg3_ops.filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, sp.up, sp.down, sp.padding,
                                      gain, slope, self.conv_clamp)


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, H, W]; ws[:, 0] drives the input, ws[:, i + 1] layer ``L{i}``."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.cfg, self.num_ws = cfg, cfg.num_ws
        self.specs = cfg.layer_specs()
        cutoffs, rates, _, sizes, channels = cfg.bands()
        self.input = SynthesisInput(cfg.w_dim, int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]))
        self.layer_names = [s.name for s in self.specs]
        for spec in self.specs:
            setattr(self, spec.name, SynthesisLayer(cfg.w_dim, spec, cfg.conv_clamp))

    @property
    def num_blocks(self) -> int:
        return len(self.specs)

    def feature_shape(self, block: int) -> tuple[int, int, int]:
        """(channels, height, width) of the output of layer ``L{block}`` (margins included)."""
        spec = self.specs[block]
        return spec.out_channels, spec.out_size, spec.out_size

    def layer(self, i: int) -> SynthesisLayer:
        return getattr(self, self.layer_names[i])

    def forward(self, ws, noise_mode="const", feature_block=None, stop_after_block=None, return_features=False):
        """As ``networks.SynthesisNetwork.forward``, a block being a layer; ``noise_mode`` is accepted for the
        common interface (StyleGAN3 has no noise inputs)."""
        return blocks_forward(self, ws, noise_mode, feature_block, stop_after_block, return_features)

    def run_blocks(self, ws, start, stop, x=None, img=None, noise_mode="const", render_rgb=True):
        """Run layers ``start`` .. ``stop - 1`` from the output ``x`` of layer ``start - 1`` (None: from the
        Fourier features). Returns ``(x, img)``: ``img`` is the image once the ToRGB layer ran, else None
        (``render_rgb`` and ``noise_mode`` have nothing to skip or choose here)."""
        ws = ws.to(torch.float32)
        if start == 0:
            x = self.input(ws[:, 0])
        for i in range(start, stop):
            x = self.layer(i)(x, ws[:, i + 1])
        if stop == len(self.specs):
            img = x * self.cfg.output_scale if self.cfg.output_scale != 1 else x
        return x, img


def image_transform(translate=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """The 3x3 matrix that rotates the image by ``angle`` degrees (counter-clockwise) and then translates it by
    ``translate`` (x, y) in image units (the image spans 1), as NVIDIA's ``gen_images.py`` builds it."""
    s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    return np.array([[c, s, translate[0]], [-s, c, translate[1]], [0, 0, 1]], dtype=np.float64)


class StyleGAN3Generator(Generator):
    """StyleGAN3 generator with the interface of :class:`~dragnb.stylegan.networks.Generator` (a subclass, so the
    back-ends, sessions and loaders accept it): ``mapping`` (z -> ws, StyleGAN2's network) and ``synthesis``."""

    @staticmethod
    def make_synthesis(cfg: StyleGAN3Config) -> nn.Module:
        return SynthesisNetwork(cfg)

    def set_transform(self, translate=(0.0, 0.0), angle: float = 0.0) -> None:
        """Move the generated image: rotate by ``angle`` degrees, then translate by ``translate`` (image units).

        Sets ``synthesis.input.transform`` to the inverse of :func:`image_transform` (it maps output coordinates
        to the input's); ``set_transform()`` restores the identity.
        """
        m = np.linalg.inv(image_transform(translate, angle))
        self.synthesis.input.transform.copy_(torch.from_numpy(m).to(self.synthesis.input.transform))
