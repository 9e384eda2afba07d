"""The PyTorch DragGAN back-end: autograd up to the feature block, Adam written out on the state it keeps.

Per step, ONE forward: the synthesis blocks up to ``feature_block`` run with autograd (that is all the
loss needs), the remaining blocks run from the same activations under ``torch.no_grad()`` only when an
image is wanted. Tracking and the losses are ``dragnb.drag.core.drag_objective`` (``blog_objective`` in blog
mode), the very functions the ONNX export uses. See ``base.py`` for the contract and for why Adam is written out
here (both rules: ORT's AdamW in dragnb mode, ``torch.optim.Adam``'s in official and blog modes).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..drag import core
from ..drag.params import COMPAT_MODES
from ..stylegan import ops
from ..stylegan.networks import NOISE_MODES, Generator
from .base import (
    ADAM_BETAS,
    ADAM_EPS,
    LATENT_SPACES,
    Backend,
    StepOutput,
    check_backend_args,
    check_state,
    image_to_uint8,
)


@functools.lru_cache(maxsize=16)
def _disk(r1: float) -> torch.Tensor:
    return torch.from_numpy(core.disk_offsets(r1))


@functools.lru_cache(maxsize=16)
def _window(r2: int) -> torch.Tensor:
    return torch.from_numpy(core.window_offsets(r2))


@functools.lru_cache(maxsize=16)
def _official_box(r1: float) -> torch.Tensor:
    return torch.from_numpy(core.geometry.official_disk_box(r1))


@functools.lru_cache(maxsize=16)
def _blog_disk(r1: float) -> torch.Tensor:
    return torch.from_numpy(core.geometry.blog_disk_offsets(r1))


class TorchBackend(Backend):
    """DragGAN optimisation of a W / W+ latent of ``G`` in PyTorch (CPU or the generator's device)."""

    name = "torch"

    def __init__(self, G: Generator, feature_block: int, noise_mode: str = "const", compat: str = "dragnb"):
        if not isinstance(G, Generator):
            raise TypeError(f"G must be a dragnb Generator, got {type(G).__name__}")
        check_backend_args(G, feature_block, noise_mode, NOISE_MODES)
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
        # Only the latent is trained: freezing the weights keeps autograd from computing their gradients.
        self.G = G.eval().requires_grad_(False)
        self.feature_block = int(feature_block)
        self.noise_mode = noise_mode
        self.device = next(G.parameters()).device
        self.size = (G.img_resolution, G.img_width)  # (H, W) of the image and the resized features
        self.compat = compat
        # The official code's stretched pixel coordinates (its motion disk), exactly its float32 values.
        self._coords = tuple(torch.linspace(0, n, n).to(self.device) for n in self.size)
        self._ws0 = self._latent = self._m = self._v = None
        self._t = 0
        self._no_mask = (torch.zeros((1, 1), device=self.device), torch.zeros((1, 1, 1), device=self.device))
        self._mask_cache = self._ref_cache = None
        self._space, self._n = "w+", 1

    # ------------------------------------------------------------------ latent

    def start(self, ws0, latent_space, num_layers, lr):
        ws0 = np.asarray(ws0, dtype=np.float32)
        if ws0.shape != (1, self.G.num_ws, self.G.w_dim):
            raise ValueError(f"ws0 must have shape [1, {self.G.num_ws}, {self.G.w_dim}], got {list(ws0.shape)}")
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be one of {LATENT_SPACES}, got {latent_space!r}")
        if not 1 <= int(num_layers) <= self.G.num_ws:
            raise ValueError(f"num_layers must be in [1, {self.G.num_ws}], got {num_layers}")
        self._space, self._n = latent_space, int(num_layers)
        self._ws0 = torch.from_numpy(ws0.copy()).to(self.device)
        rows = self._n if latent_space == "w+" else 1
        self._latent = self._ws0[:, :rows].clone()  # [1, L, w_dim]
        self._m = torch.zeros_like(self._latent)
        self._v = torch.zeros_like(self._latent)
        self._t = 0

    def _full_ws(self, latent: torch.Tensor) -> torch.Tensor:
        """Trainable latent [1, L, w_dim] over ws0 -> ws [1, num_ws, w_dim]."""
        head = latent if self._space == "w+" else latent.expand(-1, self._n, -1)
        return torch.cat([head, self._ws0[:, self._n :]], dim=1)

    def ws(self):
        return self._full_ws(self._latent).cpu().numpy().copy()

    def get_state(self):
        to_np = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731
        return {
            "ws0": to_np(self._ws0), "latent": to_np(self._latent), "exp_avg": to_np(self._m),
            "exp_avg_sq": to_np(self._v), "step": np.array(self._t, dtype=np.int64),
            "num_layers": np.array(self._n, dtype=np.int64), "latent_space": np.array(self._space),
        }

    def set_state(self, state):
        check_state(state, self.G.num_ws, self.G.w_dim)
        self._space, self._n = str(np.asarray(state["latent_space"])), int(state["num_layers"])
        t = lambda k: torch.from_numpy(np.array(state[k], dtype=np.float32)).to(self.device)  # noqa: E731 (copies)
        self._ws0, self._latent, self._m, self._v = t("ws0"), t("latent"), t("exp_avg"), t("exp_avg_sq")
        self._t = int(state["step"])

    # ------------------------------------------------------------------ forward

    def _forward(self, ws: torch.Tensor, render_image: bool):
        """(features at image size, image [3, H, W] or None) of one synthesis pass. The features are a
        :class:`~dragnb.drag.core.ResizedFeatures` (they stay at block resolution; tracking and the losses sample
        them where needed), or in official mode the dense [C, H, W] map the official code makes."""
        syn, fb, official = self.G.synthesis, self.feature_block, self.compat == "official"
        # Official mode: NVIDIA's forms up to the features and the official dense resize (F.interpolate's own
        # rounding, forward and back): bit for bit the official step's numbers (ops.nvidia_form).
        with ops.nvidia_form() if official else contextlib.nullcontext():
            x, img = syn.run_blocks(ws, 0, fb + 1, noise_mode=self.noise_mode, render_rgb=render_image)
        if official:
            feat = F.interpolate(x, self.size, mode="bilinear", align_corners=False)[0]
        else:
            feat = core.ResizedFeatures(x, self.size)
        if not render_image:
            return feat, None
        with torch.no_grad():  # the rest of the network only draws the picture
            img = None if img is None else img.detach()  # "orig"/"resnet": no RGB before the last block
            _, img = syn.run_blocks(ws.detach(), fb + 1, self.G.num_blocks, x.detach(), img, self.noise_mode)
        return feat, img[0]

    def features(self):
        with torch.no_grad():
            feat, img = self._forward(self._full_ws(self._latent), render_image=True)
        return image_to_uint8(img.cpu().numpy(), self.compat), self._full_map(feat)

    def step(self, handles_rc, targets_rc, ref_feats, fixed, f0_fixed, lambda_mask, r1, r2, tolerance,
             l1_tracking, lr, render_image, return_features=False, reg=0.0, previous_rc=None):
        dev = self.device
        if float(reg) and self.compat != "official":
            raise ValueError("reg is an official-mode parameter (compat='official')")
        latent = self._latent.clone().requires_grad_(True)
        ws = self._full_ws(latent)
        feat, img = self._forward(ws, render_image)
        handles = torch.as_tensor(np.asarray(handles_rc, np.int64), device=dev)
        targets = torch.as_tensor(np.asarray(targets_rc, np.float32), device=dev)
        window = _window(int(r2)).to(dev)
        if self.compat == "blog":
            loss, motion, masked, tracked, dist, converged = core.blog_objective(
                feat, self._ref_tensor(ref_feats), handles, targets, window, _blog_disk(float(r1)).to(dev),
                float(tolerance), None if previous_rc is None else torch.as_tensor(
                    np.asarray(previous_rc, np.int64).reshape(-1, 2), device=dev))
        else:
            official = self.compat == "official"
            fixed_t, f0_t = self._mask_tensors(fixed, f0_fixed)
            loss, motion, masked, tracked, dist, converged = core.drag_objective(
                feat, self._ref_tensor(ref_feats), handles, targets, window,
                (_official_box if official else _disk)(float(r1)).to(dev), fixed_t, f0_t, float(lambda_mask),
                float(tolerance), l1_tracking=bool(l1_tracking),
                official=(self._coords, float(r1)) if official else None,
            )
        if self.compat == "official" and float(reg):  # the official latent regulariser: mean |ws - ws0| over every ws
            loss = loss + float(reg) * (ws - self._ws0).abs().mean()
        converged = bool(converged)
        if not converged:
            (grad,) = torch.autograd.grad(loss, latent)
            (self._adam if self.compat == "dragnb" else self._torch_adam)(grad, float(lr))
        # One device -> host copy for every number of the step: each .item() / .cpu() would wait for the device.
        # (Pixel indices are exact in float32.) The image, when rendered, is the one other copy.
        nums = torch.cat([torch.stack([loss.detach(), motion.detach(), masked.detach()]).float(),
                          dist.detach().float(), tracked.reshape(-1).float()]).cpu().numpy()
        n = dist.shape[0]
        return StepOutput(
            loss=float(nums[0]), motion=float(nums[1]), mask=float(nums[2]),
            tracked_rc=nums[3 + n:].reshape(tracked.shape).astype(np.int64), distance=nums[3:3 + n].copy(),
            converged=converged,
            image=image_to_uint8(img.cpu().numpy(), self.compat) if img is not None else None,
            features=self._full_map(feat) if return_features else None,
        )

    @staticmethod
    @torch.no_grad()
    def _full_map(feat) -> np.ndarray:
        """The features [C, H, W] (a :class:`~dragnb.drag.core.ResizedFeatures` or, in official mode, the dense
        map) as numpy, without a copy (the map is made for the caller and held by nobody else): at 1024 px it is
        1 GiB."""
        full = feat.full() if isinstance(feat, core.ResizedFeatures) else feat
        return np.asarray(full.detach().cpu().numpy(), np.float32)

    def _ref_tensor(self, ref_feats) -> torch.Tensor:
        """The handles' reference features on the device, uploaded once per array object (the session passes the
        same array every step of a drag)."""
        hit = self._ref_cache
        if hit is None or hit[0] is not ref_feats:
            hit = self._ref_cache = (ref_feats, torch.as_tensor(np.asarray(ref_feats, np.float32), device=self.device))
        return hit[1]

    def _mask_tensors(self, fixed, f0_fixed) -> tuple[torch.Tensor, torch.Tensor]:
        """(fixed, F0 * fixed) as tensors, made once per array object (the session passes the same arrays every
        step of a drag); [1, 1] / [1, 1, 1] zeros without a mask (the mask term is then exactly 0)."""
        if fixed is None:
            return self._no_mask
        hit = self._mask_cache
        if hit is None or hit[0] is not fixed or hit[1] is not f0_fixed:
            t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)  # noqa: E731
            hit = self._mask_cache = (fixed, f0_fixed, t(fixed), t(f0_fixed))
        return hit[2], hit[3]

    @torch.no_grad()
    def _adam(self, grad: torch.Tensor, lr: float) -> None:
        """ORT's Adam rule (eps outside the bias correction); see base.py."""
        b1, b2 = ADAM_BETAS
        self._t += 1
        self._m.mul_(b1).add_(grad, alpha=1 - b1)
        self._v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = lr * (1 - b2**self._t) ** 0.5 / (1 - b1**self._t)
        self._latent = self._latent - step_size * self._m / (self._v.sqrt() + ADAM_EPS)

    @torch.no_grad()
    def _torch_adam(self, grad: torch.Tensor, lr: float) -> None:
        """``torch.optim.Adam``'s update (default settings, eps inside the bias correction), op for op as its
        single-tensor CPU path computes it, so that the numbers are its own; see base.py."""
        b1, b2 = ADAM_BETAS
        self._t += 1
        latent = self._latent.clone()
        self._m.lerp_(grad, 1 - b1)
        self._v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = lr / (1 - b1**self._t)
        denom = (self._v.sqrt() / (1 - b2**self._t) ** 0.5).add_(ADAM_EPS)
        self._latent = latent.addcdiv_(self._m, denom, value=-step_size)
