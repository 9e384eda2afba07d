"""StyleGAN2 generator, written from the math of Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN" (config-f) and the StyleGAN2-ADA conventions for naming and scaling.

Parameter names equal the G_ema names of NVIDIA's pickles (minus the derived ``resample_filter``
buffers), so foreign checkpoints load with a plain ``load_state_dict``. Raw parameters are stored
unscaled; equalised-learning-rate gains are applied in ``forward``.

In an ONNX export, every op between the ws and the features is one ONNX Runtime's CPU training build can
differentiate (see ``ops.py``): no ConvTranspose gradient, Resize or GridSample.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .conventions import NOISE_MODES, z_from_seed  # noqa: F401  (re-exported: the torch-free pieces)

ARCHITECTURES = ("orig", "skip", "resnet")
LRELU_GAIN = math.sqrt(2.0)


class DictConfig:
    """A config dataclass that round-trips through a JSON object (the metadata of dragnb's safetensors files)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class GeneratorConfig(DictConfig):
    """Hyper-parameters of a StyleGAN2 generator; saved as JSON next to the weights."""

    z_dim: int = 512                      # input latent (Z) size
    w_dim: int = 512                      # intermediate latent (W) size
    c_dim: int = 0                        # conditioning label size, 0 = unconditional
    img_resolution: int = 1024            # output height in pixels (power of two)
    img_width: int | None = None          # output width; None = square (StyleGAN-Human: 256 for 512 high)
    img_channels: int = 3                 # RGB
    mapping_layers: int = 8               # FC layers in the mapping network
    mapping_lr_multiplier: float = 0.01   # equalised-lr multiplier of the mapping network
    mapping_embed_features: int | None = None  # label embedding size (None = w_dim)
    mapping_layer_features: int | None = None  # hidden FC size (None = w_dim)
    channel_base: int = 32768             # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    architecture: str = "skip"            # "orig", "skip" or "resnet"
    conv_clamp: float | None = None       # clamp conv outputs to +-conv_clamp (ADA uses 256)
    normalize_z: bool = True              # z * rsqrt(mean(z^2) + 1e-8) before the mapping FCs

    def __post_init__(self):
        if self.img_resolution < 4 or self.img_resolution & (self.img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        w = self.width
        if w > self.img_resolution or self.img_resolution % w or (self.img_resolution // w) & (
            self.img_resolution // w - 1
        ):
            raise ValueError(f"img_width {w} must divide img_resolution {self.img_resolution} by a power of two")

    @property
    def width(self) -> int:
        return self.img_width or self.img_resolution

    @property
    def block_resolutions(self) -> list[int]:
        """Heights of the synthesis blocks: 4, 8, ..., img_resolution."""
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.img_resolution)) - 2

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)



# ----------------------------------------------------------------------------
# Layers


def inplace_ok(*tensors: torch.Tensor) -> bool:
    """Whether the ops that follow may overwrite a fresh activation in place: no ONNX export (whose graphs keep
    the out-of-place ops) and no autograd through ``tensors``. Same numbers either way; in place, the large
    activations of the render tail are not allocated (and page-faulted) anew for every elementwise op."""
    if torch.onnx.is_in_onnx_export():
        return False
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def bias_act(x: torch.Tensor, b: torch.Tensor | None, lrelu: bool, gain: float, clamp: float | None,
             inplace: bool = False):
    """x + b (broadcast over channel dim 1), then leaky ReLU(0.2) if asked, times gain, clamped.

    ``inplace``: overwrite ``x`` (a fresh activation; see :func:`inplace_ok`)."""
    if inplace:
        if b is not None:
            x.add_(b.reshape([1, -1] + [1] * (x.ndim - 2)))
        if lrelu:
            F.leaky_relu_(x, 0.2)
        if gain != 1:
            x.mul_(gain)
        if clamp is not None:
            x.clamp_(-clamp, clamp)
        return x
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if lrelu:
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalised-lr FC: ``y = act(x @ (W * lr / sqrt(in)).T + b * lr)``."""

    def __init__(self, in_features, out_features, lrelu=False, lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)  # [out, in]
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):  # [N, in] -> [N, out]
        g = self.weight_gain
        w = ops.frozen_derived(self.weight, ("scaled", g), lambda w: w * g)
        if not self.lrelu and ops.in_nvidia_form():  # the bias added inside the product, as NVIDIA's code does
            b = self.bias if self.bias_gain == 1 else self.bias * self.bias_gain
            return torch.addmm(b.unsqueeze(0), x, w.t())
        y = x @ w.t()
        return bias_act(y, self.bias * self.bias_gain, self.lrelu, LRELU_GAIN if self.lrelu else 1.0, None)


def normalize_2nd_moment(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ label c [N, c_dim]) -> ws [N, num_ws, w_dim], with truncation toward ``w_avg``."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.num_ws
        self.normalize_z = cfg.normalize_z
        embed = (cfg.mapping_embed_features or cfg.w_dim) if cfg.c_dim else 0
        hidden = cfg.mapping_layer_features or cfg.w_dim
        feats = [cfg.z_dim + embed] + [hidden] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        if cfg.c_dim:
            self.embed = FullyConnectedLayer(cfg.c_dim, embed)
        for i in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(feats[i], feats[i + 1], lrelu=True, lr_multiplier=cfg.mapping_lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.num_layers = cfg.mapping_layers
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z) if self.normalize_z else z
        if self.c_dim:
            if c is None:
                raise ValueError(f"this generator is conditional: pass a label c of shape [N, {self.c_dim}]")
            c = torch.as_tensor(c, dtype=torch.float32)
            if c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"c must have shape [{z.shape[0]}, {self.c_dim}], got {list(c.shape)}")
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            if ops.in_nvidia_form():  # NVIDIA's form: torch.lerp's rounding, the official ws bit for bit
                head = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
            else:
                head = self.w_avg + truncation_psi * (ws[:, :cutoff] - self.w_avg)
            ws = torch.cat([head, ws[:, cutoff:]], dim=1)
        return ws


def modulated_conv2d(x, weight, styles, demodulate=True, up=False, resample_filter=None):
    """Modulated (and optionally demodulated) conv, StyleGAN2 eq. 1-3.

    x [N, Cin, H, W], weight [Cout, Cin, k, k], styles [N, Cin] -> [N, Cout, H', W'] (H' = 2H if up).
    Padding keeps the size (k // 2). Written as "scale the input, shared conv, scale the output"
    (StyleGAN2's non-fused form): the same math as convolving with per-sample weights
    ``W'[n] = W * s[n]`` demodulated by ``rsqrt(sum W'^2)``, but the conv weight stays a shared
    constant, so the ONNX graph has no batch-dependent group count and ORT needs no weight gradient.
    """
    if ops.in_nvidia_form():
        return _modulated_conv2d_fused(x, weight, styles, demodulate, up, resample_filter)
    k = weight.shape[-1]
    x = x * styles[:, :, None, None]
    if up:
        # A stride-2 transposed conv + FIR; exported without ConvTranspose's gradient (ops.conv3x3_up2).
        y = ops.conv3x3_up2(x, weight, resample_filter)
    else:
        y = ops.conv2d(x, weight, padding=k // 2)
    if demodulate:
        w2 = ops.frozen_derived(weight, "demod", lambda w: w.square().sum(dim=[2, 3]))  # [Cout, Cin]
        dcoefs = (styles.square() @ w2.t() + 1e-8).rsqrt()  # [N, Cout] = rsqrt(sum_{i,kh,kw} (W s)^2)
        y = y.mul_(dcoefs[:, :, None, None]) if inplace_ok(y, dcoefs) else y * dcoefs[:, :, None, None]
    return y


def _modulated_conv2d_fused(x, weight, styles, demodulate, up, resample_filter):
    """:func:`modulated_conv2d` as NVIDIA's reference code computes it (see ``ops.nvidia_form``): one weight per
    sample, modulated then demodulated, and a grouped convolution over the batch folded into the channels."""
    n, cin, h, w_ = x.shape
    cout, _, k, _ = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, Cout, Cin, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, Cout]
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, h, w_)
    if up:
        wt = w.reshape(n, cout, cin, k, k).transpose(1, 2).reshape(n * cin, cout, k, k)
        y = ops.up2_fir(F.conv_transpose2d(x, wt, stride=2, groups=n), k, resample_filter)
    else:
        y = F.conv2d(x, w.reshape(-1, cin, k, k), padding=k // 2, groups=n)
    return y.reshape(n, -1, *y.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias, leaky ReLU x sqrt(2), clamp."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, width, up, conv_clamp, resample_filter):
        super().__init__()
        self.up, self.conv_clamp = up, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))  # [O, I, k, k]
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn([resolution, width]))  # [H, W]
        self.register_buffer("resample_filter", resample_filter, persistent=False)

    def forward(self, x, w, noise_mode="const", gain=1.0):
        styles = self.affine(w)  # [N, Cin]
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter)
        inplace = inplace_ok(x, self.noise_strength, self.bias)
        noise = None
        if noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, *x.shape[2:]], device=x.device) * self.noise_strength
        if noise is not None:
            x = x.add_(noise) if inplace else x + noise
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, True, LRELU_GAIN * gain, clamp, inplace=inplace)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation, no activation; style scaled by 1/sqrt(Cin)."""

    def __init__(self, in_channels, out_channels, w_dim, conv_clamp):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, False, 1.0, self.conv_clamp, inplace=inplace_ok(x, self.bias))


class SkipLayer(nn.Module):
    """resnet architecture: 1x1 conv (no bias, gain 1/sqrt(Cin)) then 2x FIR upsampling."""

    def __init__(self, in_channels, out_channels, resample_filter):
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.register_buffer("resample_filter", resample_filter, persistent=False)

    def forward(self, x, gain=1.0):
        g = self.weight_gain
        x = ops.conv2d(x, ops.frozen_derived(self.weight, ("scaled", g), lambda w: w * g))
        return ops.upsample2d(x, self.resample_filter) * gain


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const |) conv0 (up) + conv1, ToRGB, skip/resnet wiring."""

    def __init__(self, cfg: GeneratorConfig, res: int, is_last: bool):
        super().__init__()
        self.res, self.is_last, self.architecture = res, is_last, cfg.architecture
        width = res * cfg.width // cfg.img_resolution
        out_ch = cfg.channels(res)
        self.in_channels = cfg.channels(res // 2) if res > 4 else 0
        f = ops.fir_filter_2d()
        self.register_buffer("resample_filter", f, persistent=False)
        if res == 4:
            self.const = nn.Parameter(torch.randn([out_ch, 4, width]))  # [C, 4, 4] or [C, 4, 2]
        else:
            self.conv0 = SynthesisLayer(self.in_channels, out_ch, cfg.w_dim, res, width, True, cfg.conv_clamp, f)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, res, width, False, cfg.conv_clamp, f)
        self.num_conv = 1 if res == 4 else 2
        self.num_torgb = 1 if (is_last or cfg.architecture == "skip") else 0
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_ch, cfg.img_channels, cfg.w_dim, cfg.conv_clamp)
        if res > 4 and cfg.architecture == "resnet":
            self.skip = SkipLayer(self.in_channels, out_ch, f)

    def forward(self, x, img, ws, noise_mode="const", render_rgb=True):
        """ws [N, num_conv + num_torgb, w_dim]; returns (x [N, C, res, width], img or None)."""
        if self.res == 4:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        if not render_rgb:
            return x, None
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, ws[:, self.num_conv])
            img = y if img is None else img + y
        return x, img


def blocks_forward(net, ws, noise_mode, feature_block, stop_after_block, return_features):
    """The forward of a synthesis network ``net`` made of ``net.num_blocks`` feature blocks run one at a time by
    ``net.run_blocks``: arguments and result as ``SynthesisNetwork.forward`` (StyleGAN3's shares it)."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    if ws.ndim != 3 or ws.shape[1] != net.num_ws:
        raise ValueError(f"ws must have shape [N, {net.num_ws}, w_dim], got {list(ws.shape)}")
    n = net.num_blocks
    for name, v in (("stop_after_block", stop_after_block), ("feature_block", feature_block)):
        if v is not None and not 0 <= v < n:
            raise ValueError(f"{name} must be in [0, {n}), got {v}")
    last = n - 1 if stop_after_block is None else stop_after_block
    x = img = feat = None
    for i in range(last + 1):
        x, img = net.run_blocks(ws, i, i + 1, x, img, noise_mode, render_rgb=(i != stop_after_block))
        if i == feature_block:
            feat = x
    if return_features or feature_block is not None:
        return img, feat
    return img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, H, W] in about [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = cfg.num_ws
        for res in self.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(cfg, res, is_last=(res == cfg.img_resolution)))

    def block(self, i: int) -> SynthesisBlock:
        return getattr(self, f"b{self.block_resolutions[i]}")

    @property
    def num_blocks(self) -> int:
        return len(self.block_resolutions)

    def feature_shape(self, block: int) -> tuple[int, int, int]:
        """(channels, height, width) of the output of block ``block``."""
        res, cfg = self.block_resolutions[block], self.cfg
        return cfg.channels(res), res, res * cfg.width // cfg.img_resolution

    def block_ws_offsets(self) -> list[int]:
        """Index of the first w each block uses (a block's torgb shares its w with the next conv0)."""
        offsets, w_idx = [], 0
        for i in range(len(self.block_resolutions)):
            offsets.append(w_idx)
            w_idx += self.block(i).num_conv
        return offsets

    def forward(self, ws, noise_mode="const", feature_block=None, stop_after_block=None, return_features=False):
        """Run the blocks.

        Args:
            ws: [N, num_ws, w_dim].
            noise_mode: "const" (stored noise), "random" or "none".
            feature_block: index (0 = the 4x4 block) of the block whose output ``x`` is returned as features.
            stop_after_block: stop after this block index (features only, no image); used by DragGAN,
                which needs nothing beyond its feature block.
            return_features: return ``(image, features)``; image is None when stopped early.
        Returns:
            image [N, C, H, W], or (image | None, features [N, C_f, h_f, w_f]).
        """
        return blocks_forward(self, ws, noise_mode, feature_block, stop_after_block, return_features)

    def run_blocks(self, ws, start, stop, x=None, img=None, noise_mode="const", render_rgb=True):
        """Run blocks ``start`` .. ``stop - 1`` from the block input ``x`` and partial image ``img``.

        Lets DragGAN differentiate up to its feature block and render the rest without gradient,
        from the same forward. ``render_rgb=False`` skips ToRGB (and image upsampling) in the LAST
        block run; returns ``(x, img)``.
        """
        offsets = self.block_ws_offsets()
        for i in range(start, stop):
            blk = self.block(i)
            bws = ws[:, offsets[i] : offsets[i] + blk.num_conv + blk.num_torgb]
            x, img = blk(x, img, bws, noise_mode, render_rgb=render_rgb or i < stop - 1)
        return x, img


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> ws) and ``synthesis`` (ws -> image)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        # DragGAN parameters tuned for this model (names of DragSession's parameters); {} = the official rules.
        # Loaded from a dragnb safetensors file's metadata by dragnb.checkpoints.native.
        self.drag_defaults: dict = {}
        self.z_dim, self.w_dim, self.c_dim = cfg.z_dim, cfg.w_dim, cfg.c_dim
        self.img_resolution, self.img_channels, self.img_width = cfg.img_resolution, cfg.img_channels, cfg.width
        self.num_ws = cfg.num_ws
        self.mapping = MappingNetwork(cfg)
        self.synthesis = self.make_synthesis(cfg)

    @staticmethod
    def make_synthesis(cfg) -> nn.Module:
        """The synthesis network of ``cfg`` (subclasses of other architectures return theirs)."""
        return SynthesisNetwork(cfg)

    @property
    def num_blocks(self) -> int:
        """Feature blocks DragGAN can take features from (StyleGAN2: synthesis blocks; StyleGAN3: layers)."""
        return self.synthesis.num_blocks

    def feature_shape(self, block: int) -> tuple[int, int, int]:
        """(channels, height, width) of the output of feature block ``block``."""
        return self.synthesis.feature_shape(block)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const"):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

