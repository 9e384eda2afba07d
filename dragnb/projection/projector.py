"""Projection: find the latent (W or W+) whose image is a given picture (the StyleGAN2 projector recipe).

Karras et al. 2020 (StyleGAN2, section 5 and its ``projector.py``): start at the mean w (over ``w_avg_samples``
mapped z), Adam with a learning rate that ramps up over the first 5 % of the steps and down (cosine) over the
last 25 %, Gaussian noise added to w early on (``noise_factor`` x the spread of w, decaying to 0 by 75 % of the
steps), and, where the model has noise inputs, the per-layer noise maps optimised too with a regulariser that
keeps them spatially uncorrelated (and renormalised to zero mean, unit variance after every step).

The loss is :class:`~dragnb.projection.losses.ReconstructionLoss` (pixel L2 plus a perceptual term). W+ optimises
one w per layer (the usual choice for editing real images, and what pivotal tuning starts from); W optimises one
w broadcast to all layers.

Every iteration is observable (:class:`ProjectionStep`: loss, PSNR, the image every ``render_every`` steps) and
the run is stoppable from any thread (:meth:`Projector.stop`)::

    p = Projector(G, picture, latent_space="w+", num_steps=300)
    for s in p.run():
        print(s.step, s.loss, s.psnr)
    result = p.result()          # Projection: ws, noise maps, image, PSNR
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .losses import ReconstructionLoss, psnr

LATENT_SPACES = ("w", "w+")


@dataclass
class ProjectionStep:
    """One iteration; loss terms are those of the step's forward (before its update)."""

    step: int
    loss: float
    l2: float
    perceptual: float
    psnr: float                   # dB, of the step's image against the target
    lr: float
    image: np.ndarray | None      # uint8 [H, W, 3] every render_every steps and on the last one, else None
    ms: float


@dataclass
class Projection:
    """The result: the latent, the noise maps it goes with, its image and how close it is."""

    ws: np.ndarray                             # float32 [1, num_ws, w_dim]
    noise: dict[str, np.ndarray]               # synthesis buffer name -> float32 noise map; {} if not optimised
    image: np.ndarray                          # uint8 [H, W, 3]
    target: np.ndarray                         # uint8 [H, W, 3]
    psnr: float
    latent_space: str
    steps: int
    loss_name: str                             # e.g. "1 l2 + 0.1 ms-ssim"
    perceptual: str                            # the perceptual term that ran: "lpips-vgg", "ms-ssim" or "none"
    history: list[float] = field(default_factory=list)   # loss per step


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [1, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in about [-1, 1] -> uint8 [H, W, 3] (the rounding the sessions use)."""
    x = (img.detach()[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255)
    return x.to(torch.uint8).cpu().numpy()


def w_stats(G, samples: int = 10_000, seed: int = 123) -> tuple[torch.Tensor, float]:
    """(w_avg [1, 1, w_dim], w_std): mean of ``samples`` mapped z and the RMS distance to it (the recipe's)."""
    rng = np.random.RandomState(seed)
    z = torch.from_numpy(rng.randn(samples, G.z_dim)).float()
    with torch.no_grad():
        w = G.mapping(z)[:, :1, :]  # [N, 1, w_dim]
    w_avg = w.mean(0, keepdim=True)
    w_std = float(((w - w_avg).square().sum() / samples) ** 0.5)
    return w_avg, w_std


def noise_buffers(synthesis) -> dict[str, torch.Tensor]:
    """The synthesis network's noise maps, name -> buffer [H, W] (those of layers with noise inputs)."""
    return {n: b for n, b in synthesis.named_buffers() if n.endswith("noise_const")}


def noise_regularizer(bufs) -> torch.Tensor:
    """The recipe's noise regulariser: squared autocorrelation at 1 px, over a 2x pyramid of each noise map."""
    reg = 0.0
    for v in bufs:
        n = v[None, None]
        while True:
            reg = reg + (n * torch.roll(n, 1, dims=3)).mean() ** 2 + (n * torch.roll(n, 1, dims=2)).mean() ** 2
            if min(n.shape[2:]) <= 8:
                break
            n = torch.nn.functional.avg_pool2d(n, 2)
    return reg


def lr_schedule(t: float, lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """The recipe's learning rate at progress ``t`` in [0, 1): cosine ramp down over the last ``rampdown``,
    linear ramp up over the first ``rampup``."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


class Projector:
    """Projects one picture into ``G``'s latent space; see the module docstring.

    Args:
        G: a ``dragnb.Generator`` (not modified: the noise maps are optimised on a copy).
        target: uint8 [H, W, 3] at the model's size (``dragnb.projection.load_image`` makes one from any picture).
        latent_space: "w+" (one w per layer) or "w" (one w for all).
        num_steps: iterations (the recipe uses 1000; 200-300 suffice for small models).
        lr: the peak Adam learning rate (recipe 0.1).
        noise_factor: the initial std of the noise added to w, relative to the spread of w (recipe 0.05).
        optimize_noise: also optimise the noise maps (where the model has noise inputs).
        noise_reg: weight of the noise regulariser (recipe 1e5).
        loss: a :class:`ReconstructionLoss`; None = L2 + 0.1 x the perceptual term (LPIPS where the user has its
            weights, else multi-scale SSIM: ``losses.py``).
        render_every: put the image in every n-th :class:`ProjectionStep` (and in the last).
        seed: seed of the w noise, so a projection is reproducible.
        w_warmup: in W+, the fraction of the steps that first optimise one w for all layers (a W projection,
            which finds the parts' layout more reliably; W+ then refines each layer from it).
        noise_mode: the noise mode of the images ("const": the stored (here: optimised) noise maps).
    """

    def __init__(self, G, target: np.ndarray, latent_space: str = "w+", num_steps: int = 300, lr: float = 0.1,
                 noise_factor: float = 0.05, optimize_noise: bool = True, noise_reg: float = 1e5,
                 loss: ReconstructionLoss | None = None, render_every: int = 10, seed: int = 0,
                 w_avg_samples: int = 10_000, noise_mode: str = "const", init_ws: np.ndarray | None = None,
                 w_warmup: float = 0.5):
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
        target = np.asarray(target)
        if target.dtype != np.uint8 or target.shape != (G.img_resolution, G.img_width, 3):
            raise ValueError(f"target must be uint8 [{G.img_resolution}, {G.img_width}, 3] (use load_image), "
                             f"got {target.dtype} {list(target.shape)}")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.G, self.target, self.latent_space = G, target, latent_space
        self.num_steps, self.lr, self.noise_factor = int(num_steps), float(lr), float(noise_factor)
        self.noise_reg, self.render_every, self.noise_mode = float(noise_reg), max(1, int(render_every)), noise_mode
        self.loss = loss or ReconstructionLoss(G.img_resolution, G.img_width)
        self._synthesis = copy.deepcopy(G.synthesis).eval().requires_grad_(False)
        self._noise = noise_buffers(self._synthesis) if optimize_noise and noise_mode == "const" else {}
        self._rng = torch.Generator().manual_seed(int(seed))
        for buf in self._noise.values():  # the recipe starts from fresh unit noise maps
            buf.copy_(torch.randn(buf.shape, generator=self._rng))
            buf.requires_grad_(True)
        w_avg, self.w_std = w_stats(G, w_avg_samples)
        n = G.num_ws if latent_space == "w+" else 1
        start = w_avg.repeat(1, n, 1) if init_ws is None else torch.as_tensor(init_ws, dtype=torch.float32)[:, :n]
        self._w = start.clone().requires_grad_(True)
        self.w_warmup = float(w_warmup)
        self._stop = threading.Event()
        self._step = 0
        self._history: list[float] = []
        self._last_image: np.ndarray | None = None

    def ws(self) -> torch.Tensor:
        """float32 [1, num_ws, w_dim] of the current latent (W: broadcast)."""
        w = self._w.detach()
        return w if w.shape[1] == self.G.num_ws else w.repeat(1, self.G.num_ws, 1)

    def stop(self) -> None:
        """Ask a running :meth:`run` to end before its next step (any thread)."""
        self._stop.set()

    def run(self):
        """Iterator of :class:`ProjectionStep` until ``num_steps`` (in all calls together) or :meth:`stop`."""
        self._stop.clear()
        target = to_tensor(self.target)
        opt = torch.optim.Adam([self._w, *self._noise.values()], betas=(0.9, 0.999), lr=self.lr)
        if getattr(self, "_opt_state", None) is not None:
            opt.load_state_dict(self._opt_state)
        try:
            while self._step < self.num_steps and not self._stop.is_set():
                yield self._one_step(opt, target)
        finally:
            self._opt_state = opt.state_dict()

    def _one_step(self, opt, target) -> ProjectionStep:
        t0 = time.perf_counter()
        t = self._step / self.num_steps
        w_noise_scale = self.w_std * self.noise_factor * max(0.0, 1.0 - t / 0.75) ** 2
        lr = lr_schedule(t, self.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        w = self._w
        if w.shape[1] > 1 and t < self.w_warmup:  # W+ warm-up: one w (the layers' mean) for all layers
            w = w.mean(1, keepdim=True)
        w = w + torch.randn(w.shape, generator=self._rng) * w_noise_scale
        ws = w if w.shape[1] == self.G.num_ws else w.repeat(1, self.G.num_ws, 1)
        img = self._synthesis(ws, noise_mode=self.noise_mode)
        total, l2, perc = self.loss(img, target)
        if self._noise:
            total = total + self.noise_reg * noise_regularizer(self._noise.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            for buf in self._noise.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        last = self._step == self.num_steps - 1
        image = to_uint8(img) if last or self._step % self.render_every == 0 else None
        step = ProjectionStep(self._step, float(total.detach()), float(l2.detach()), float(perc.detach()),
                              psnr(img, target), lr, image, (time.perf_counter() - t0) * 1000)
        self._history.append(step.loss)
        self._step += 1
        return step

    def render(self) -> np.ndarray:
        """uint8 [H, W, 3] image of the current latent (no w noise) with the current noise maps."""
        with torch.no_grad():
            return to_uint8(self._synthesis(self.ws(), noise_mode=self.noise_mode))

    def result(self) -> Projection:
        image = self.render()
        noise = {n: b.detach().numpy().astype(np.float32).copy() for n, b in self._noise.items()}
        return Projection(ws=self.ws().numpy().astype(np.float32), noise=noise, image=image, target=self.target,
                          psnr=psnr(image, self.target), latent_space=self.latent_space, steps=self._step,
                          loss_name=self.loss.name, perceptual=self.loss.perceptual, history=list(self._history))


def project(G, image, latent_space: str = "w+", num_steps: int = 300, callback=None, **kwargs) -> Projection:
    """Project ``image`` (anything :func:`~dragnb.projection.images.load_image` reads: a path, an array, ...) into
    ``G``'s W or W+ space. ``callback(step)`` is called with every :class:`ProjectionStep`; returning True
    stops. ``kwargs`` go to :class:`Projector`. Returns the :class:`Projection`."""
    from .images import load_image

    target = load_image(image, G.img_width, G.img_resolution)
    p = Projector(G, target, latent_space=latent_space, num_steps=num_steps, **kwargs)
    for s in p.run():
        if callback is not None and callback(s):
            break
    return p.result()
