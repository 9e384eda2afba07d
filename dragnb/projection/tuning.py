"""Pivotal tuning (Roich et al. 2022, "Pivotal Tuning for Latent-based Editing of Real Images").

A projection rarely reproduces a real picture exactly: the picture lies outside what the generator makes. PTI
keeps the projected latent as a *pivot* and fine-tunes the generator's synthesis weights so that the pivot's
image becomes the picture, with a *locality regulariser* that keeps the rest of the latent space in place: at
every step a latent is drawn near the pivot (``alpha`` along the direction from the pivot to a random mapped w,
truncated at 0.5) and the tuned generator's image there is pulled to the original generator's image.

Loss per step (the paper's weights, L2 and the perceptual term of ``losses.py`` in the place of LPIPS where
LPIPS weights are not available)::

    recon(G'(pivot), picture) + locality_weight * recon_reg(G'(w_r), G(w_r))

What becomes trainable: every parameter of the synthesis network (convolution weights and biases, the style
affines, the 4x4 constant, ToRGB); the mapping network is untouched (the pivot is a w), and the noise maps
(those of the projection) and their strengths stay fixed.

The regulariser's latents are drawn once, from a seed (:func:`locality_latents`), and the original generator's
image of each is rendered when its step comes (a frozen copy of the starting weights): the same numbers feed the
PyTorch tuner here and the ONNX Runtime training graph (``ort_tune.py``), so both back-ends see the same data at
every step.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .losses import ReconstructionLoss, psnr
from .projector import noise_buffers, to_tensor, to_uint8
from .tune_runtime import lr_at

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass
class TuningStep:
    """One tuning iteration; the terms are those of the step's forward (before its update)."""

    step: int
    loss: float
    recon: float                # reconstruction term at the pivot
    locality: float             # regulariser term (before locality_weight)
    psnr: float                 # dB, pivot image against the picture
    image: np.ndarray | None    # uint8 [H, W, 3] every render_every steps and on the last
    ms: float


@dataclass
class TuningSettings:
    """The numbers that define a tuning run (identical on both back-ends)."""

    num_steps: int = 300
    lr: float = 1e-2                   # the paper's 3e-4 suits 1024 px models; chosen on the bundled model
    locality_weight: float = 0.1       # the paper's regulizer_lambda is 1; chosen on the bundled model
    alpha: float = 30.0                # the paper's regulizer_alpha: distance of the regulariser's latents
    psi: float = 0.5                   # truncation of the random w that gives the regulariser's direction
    lr_rampup: float = 0.1             # linear ramp-up of the learning rate over this first fraction of steps
    lr_rampdown: float = 0.5           # cosine ramp-down of the learning rate over this last fraction of steps
    seed: int = 0
    render_every: int = 10

    def lr_at(self, step: int) -> float:
        """Step ``step``'s learning rate: linear ramp up over ``lr_rampup``, ``lr``, cosine ramp down to 0 over
        the last ``lr_rampdown`` of the steps (one implementation with the torch-free runtime)."""
        return lr_at(step, self.num_steps, self.lr, self.lr_rampdown, self.lr_rampup)


def locality_latents(G, pivot: np.ndarray, settings: TuningSettings) -> np.ndarray:
    """float32 [S, num_ws, w_dim]: the regulariser's latent of each of the S = num_steps steps (from the seed)."""
    rng = np.random.RandomState(settings.seed)
    z = torch.from_numpy(rng.randn(settings.num_steps, G.z_dim)).float()
    pivot_t = torch.as_tensor(pivot, dtype=torch.float32)
    with torch.no_grad():
        w_z = G.mapping(z, truncation_psi=settings.psi)  # [S, num_ws, w_dim]
        d = w_z - pivot_t
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
        return (pivot_t + settings.alpha * d).numpy().astype(np.float32)


def locality_batch(G, pivot: np.ndarray, settings: TuningSettings, noise_mode: str = "const"):
    """(ws float32 [S, num_ws, w_dim], images float32 [S, 3, H, W]): one regulariser latent per step and the
    *original* generator's image of it, all at once (the torch-free runtime's inputs; the tuners render each
    step's image when the step comes)."""
    ws = locality_latents(G, pivot, settings)
    with torch.no_grad():
        imgs = torch.cat([G.synthesis(torch.from_numpy(ws[i : i + 1]), noise_mode=noise_mode) for i in range(len(ws))])
    return ws, imgs.numpy().astype(np.float32)


def tuned_copy(G, noise: dict[str, np.ndarray] | None = None):
    """A deep copy of G (eval, no grad) with the projection's noise maps written into its synthesis buffers."""
    T = copy.deepcopy(G).eval().requires_grad_(False)
    bufs = noise_buffers(T.synthesis)
    for name, arr in (noise or {}).items():
        if name not in bufs or tuple(bufs[name].shape) != tuple(arr.shape):
            raise ValueError(f"noise map {name!r} {list(arr.shape)} does not fit this generator")
        bufs[name].copy_(torch.as_tensor(arr, dtype=torch.float32))
    return T


class OrtAdam:
    """Adam as ONNX Runtime's training optimizer computes it (``AdamWOptimizer``, adam_mode 1, no weight decay):
    ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``. ``torch.optim.Adam`` adds eps to the
    bias-corrected ``sqrt(v)`` instead, which changes the update of every weight whose gradient is near eps (many
    biases here, at a learning rate of 1e-2), so the two back-ends would part ways from the first step."""

    def __init__(self, params, betas=ADAM_BETAS, eps=ADAM_EPS):
        self.params, self.betas, self.eps, self.t = list(params), betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        size = lr * (1 - b2**self.t) ** 0.5 / (1 - b1**self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-size)


def trainable_parameters(synthesis) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of what tuning trains: every synthesis parameter but the noise strengths (the noise
    maps stay the projection's; a strength near 0 that Adam moved by its learning rate would add noise)."""
    return [(n, p) for n, p in synthesis.named_parameters() if not n.endswith("noise_strength")]


class PivotalTuner:
    """Tunes a copy of ``G``'s synthesis weights so the pivot ``ws`` renders ``target``; see the module docstring.

    Args:
        G: the generator (not modified).
        ws: float32 [1, num_ws, w_dim], the pivot (``Projection.ws``).
        target: uint8 [H, W, 3], the picture.
        noise: the projection's noise maps (``Projection.noise``), written into the tuned copy.
        settings: :class:`TuningSettings` (or its fields as keyword arguments).
        loss, reg_loss: reconstruction losses at the pivot and for the regulariser (default: L2 + 0.1 x the perceptual
            term, and 0.1 x (L2 + the perceptual term) as in the paper's regulariser weights; the term is LPIPS
            where the user has its weights, else ms-ssim: ``losses.py``).
    """

    def __init__(self, G, ws, target, noise=None, settings: TuningSettings | None = None, *, loss=None,
                 reg_loss=None, noise_mode: str = "const", **kwargs):
        self.settings = settings or TuningSettings(**kwargs)
        if settings is not None and kwargs:
            raise TypeError("pass either settings or its fields, not both")
        s = self.settings
        if int(s.num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {s.num_steps}")
        self.G, self.noise_mode = G, noise_mode
        self.target = np.asarray(target, np.uint8)
        self.pivot = np.asarray(ws, np.float32).reshape(1, G.num_ws, G.w_dim)
        self.loss = loss or ReconstructionLoss(G.img_resolution, G.img_width)
        self.reg_loss = reg_loss or ReconstructionLoss(G.img_resolution, G.img_width, 0.1, perceptual_weight=0.1)
        self.tuned = tuned_copy(G, noise)
        self.reg_ws = locality_latents(self.tuned, self.pivot, s)
        self._original = tuned_copy(G, noise)  # renders the regulariser's targets, one per step, when it comes
        self._params = [p for _, p in trainable_parameters(self.tuned.synthesis)]
        self._opt = OrtAdam(self._params)
        self._stop = threading.Event()
        self._step = 0
        self.history: list[float] = []

    def stop(self) -> None:
        """Ask a running :meth:`run` to end before its next step (any thread)."""
        self._stop.set()

    def run(self):
        """Iterator of :class:`TuningStep` until ``num_steps`` (in all calls together) or :meth:`stop`."""
        self._stop.clear()
        target, pivot = to_tensor(self.target), torch.from_numpy(self.pivot)
        for p in self._params:
            p.requires_grad_(True)
        try:
            while self._step < self.settings.num_steps and not self._stop.is_set():
                yield self._one_step(target, pivot)
        finally:
            for p in self._params:
                p.requires_grad_(False)

    def _one_step(self, target, pivot) -> TuningStep:
        t0 = time.perf_counter()
        i, s = self._step, self.settings
        img = self.tuned.synthesis(pivot, noise_mode=self.noise_mode)
        recon = self.loss(img, target)[0]
        reg_img = self.tuned.synthesis(torch.from_numpy(self.reg_ws[i : i + 1]), noise_mode=self.noise_mode)
        reg = self.reg_loss(reg_img, torch.from_numpy(self.reg_image(i)))[0]
        total = recon + s.locality_weight * reg
        self._opt.zero_grad()
        total.backward()
        self._opt.step(s.lr_at(i))
        last = i == s.num_steps - 1
        image = to_uint8(img) if last or i % s.render_every == 0 else None
        out = TuningStep(i, float(total.detach()), float(recon.detach()), float(reg.detach()), psnr(img, target),
                         image, (time.perf_counter() - t0) * 1000)
        self.history.append(out.loss)
        self._step += 1
        return out

    def reg_image(self, i: int) -> np.ndarray:
        """float32 [1, 3, H, W]: the original generator's image of step ``i``'s regulariser latent."""
        with torch.no_grad():
            ws = torch.from_numpy(self.reg_ws[i : i + 1])
            return self._original.synthesis(ws, noise_mode=self.noise_mode).numpy().astype(np.float32)

    def render(self) -> np.ndarray:
        """uint8 [H, W, 3]: the tuned generator's image of the pivot."""
        with torch.no_grad():
            return to_uint8(self.tuned.synthesis(torch.from_numpy(self.pivot), noise_mode=self.noise_mode))

    def generator(self):
        """The tuned generator (the tuner's own copy: tuning further changes it)."""
        return self.tuned


def tune(G, projection, num_steps: int = TuningSettings.num_steps, callback=None, **kwargs):
    """Pivotal tuning from a :class:`~dragnb.projection.projector.Projection`: returns (tuned generator, PSNR).
    ``callback(step)`` sees every :class:`TuningStep`; returning True stops."""
    t = PivotalTuner(G, projection.ws, projection.target, projection.noise, num_steps=num_steps, **kwargs)
    for s in t.run():
        if callback is not None and callback(s):
            break
    return t.generator(), psnr(t.render(), projection.target)
