"""Train the bundled ``toyfaces`` generator: regression to the procedural render of the face behind z.

Objective (not adversarial): for z ~ N(0, I), ``G(z)`` should equal ``faces.render(params_from_z(z))``.
The loss is a per-pixel L1 whose weight is raised on and around the small parts (eyes, pupils, nose,
mouth): they cover ~5% of the image, and with a flat L1 the network learns head, hair and colours but
never those parts (docs/models.md). The learning rate is held, then cosine-decayed to the end of
the planned ``total_kimg``; the exported weights are an exponential moving average of the trained ones.

Runs are time-boxed and resumable: each ``train`` call continues from the newest checkpoint in ``out``,
checkpoints atomically every few minutes and on SIGTERM (weights, EMA, optimiser, step, clock; the data stream is a pure
function of (seed, step), so a resumed run sees exactly the batches an uninterrupted one would), and
appends to ``out/curve.csv``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..stylegan.networks import Generator, GeneratorConfig
from . import faces


@dataclass
class TrainConfig:
    seed: int = 0                      # initialisation and data stream
    resolution: int = 64               # image size in pixels
    w_dim: int = 128
    mapping_layers: int = 4
    mapping_lr_multiplier: float = 1.0  # 0.01 (StyleGAN) and 0.1 learn slower here (3-min trials)
    channel_base: int = 1024           # channels at r: min(channel_base // r, channel_max)
    channel_max: int = 64
    batch: int = 8                     # 8 beat 16 per image in a 3-min trial (18.4 vs 16.9 dB)
    lr: float = 2e-3                   # Adam
    warmup_kimg: float = 2.0           # linear lr warm-up
    decay_start: float = 0.6           # cosine decay from this fraction of total_kimg ...
    total_kimg: float = 300.0          # ... to lr_final x lr at total_kimg (training stops there)
    lr_final: float = 0.02
    part_weight: float = 6.0           # loss weight on small parts (dilated 1 px) is 1 + this
    ema_kimg: float = 2.0              # EMA half-life in thousands of images
    ckpt_minutes: float = 3.0          # checkpoint (and held-out PSNR) interval
    eval_seeds: int = 64               # held-out seeds (0..n-1) for the PSNR in the curve
    workers: int = 0                   # render in this many processes (0 = in the loop: ~7% of a step)
    architecture: str = "skip"         # generator architecture: "skip" (the bundled model), "orig" or "resnet"
    init_from: str = ""                # fine-tune: start from this checkpoint's EMA weights (file or folder)

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            z_dim=faces.NUM_PARAMS, w_dim=self.w_dim, img_resolution=self.resolution, img_channels=3,
            mapping_layers=self.mapping_layers, mapping_lr_multiplier=self.mapping_lr_multiplier,
            channel_base=self.channel_base, channel_max=self.channel_max, architecture=self.architecture,
            conv_clamp=None,
        )


# DragGAN parameters for the bundled 128 px model, written into the exported file's metadata (``drag_defaults``,
# see ``dragnb.checkpoints.native``) so that ``DragSession`` uses them unless told otherwise. Chosen by sweeps on
# seeds 0-19, measured by colour segmentation of the generated image (``python -m dragnb.toy dragcheck``;
# docs/models.md, "Drag defaults"):
# - feature_block 4: the 64 px block (16 channels, features bilinearly resized to 128 px); the 128 px block has
#   only 8 channels grown on top and tracks worse.
# - num_layers 12: every w (in W+ the last one, the 128 px toRGB, comes after the features and gets no gradient);
#   fewer layers widen the mouth less and move the eyes more in mouth-corner drags.
# - r1 11: a motion-supervision disk about an eye or a mouth corner wide. With L2 tracking and lr 3e-3: 10 moves
#   the eye < 60% of an eye drag on 3 of 20 seeds, 12 lets a 6% head drag rise < 4% on one seed, 14-16 move the
#   eyes > 1.2% of W in mouth drags on 7 or more.
# - l1_tracking True (the paper's L1 nearest feature; the official code: L2): with L2 a handle on the flat top of
#   the hair slides along its edge and a 12% head-top drag loses its point on seed 0; a wider window (r2 6-8)
#   finds it again but lets a small nose handle jump to the eye. r2 stays at the rule's 5 px.
# - tolerance 1.5 px (1.2% of W; official: 2 px): with 2 (at r1 16) an eye drag stops short of 60% on 2 of 20
#   seeds.
# - lr 2e-3: with 3e-3 the eyes move 1.22% of W in one seed's mouth drag (2e-3: at most 1.18%); head drags take
#   100-200 steps.
DRAG_DEFAULTS = {"feature_block": 4, "num_layers": 12, "r1": 11, "tolerance": 1.5, "l1_tracking": True, "lr": 2e-3}


# ----------------------------------------------------------------------------
# Data


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (the generator's range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def loss_weights(masks: np.ndarray, part_weight: float) -> np.ndarray:
    """Per-pixel loss weight from render masks [P, H, W]: 1 + part_weight on the small parts dilated by
    one pixel (so the skin rim whose colour depends on where the part is counts too). float32 [H, W]."""
    small = sum(masks[faces.PARTS.index(p)] for p in faces.SMALL_PARTS)
    p = np.pad(small, 1)
    h, w = small.shape
    dil = np.max([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)
    return (1.0 + part_weight * np.minimum(dil, 1.0)).astype(np.float32)


def make_batch(seed: int, step: int, batch: int, resolution: int, part_weight: float):
    """The training batch of ``step``: a pure function of (seed, step).

    Returns z float32 [B, 16], images float [B, 3, R, R] in [-1, 1], loss weights float [B, 1, R, R].
    """
    rng = np.random.default_rng([seed, step])
    z = rng.standard_normal((batch, faces.NUM_PARAMS))
    imgs, wts = [], []
    for zi in z:
        img, m = faces.render(faces.params_from_z(zi), resolution, masks=True)
        imgs.append(img)
        wts.append(loss_weights(m, part_weight))
    return (torch.from_numpy(z.astype(np.float32)), to_tensor(np.stack(imgs)),
            torch.from_numpy(np.stack(wts))[:, None])


class _Batches(torch.utils.data.Dataset):
    """Map-style data set whose item i is the batch of step i (for a DataLoader with worker processes)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def __len__(self):
        return 2**62

    def __getitem__(self, step):
        c = self.cfg
        return make_batch(c.seed, step, c.batch, c.resolution, c.part_weight)


def _worker_init(_):
    torch.set_num_threads(1)


def batch_stream(cfg: TrainConfig, start_step: int):
    """Yields (z, images, weights) for steps start_step, start_step + 1, ..."""
    if cfg.workers == 0:
        step = start_step
        while True:
            yield make_batch(cfg.seed, step, cfg.batch, cfg.resolution, cfg.part_weight)
            step += 1
    loader = torch.utils.data.DataLoader(
        _Batches(cfg), batch_size=None, sampler=range(start_step, 2**62), num_workers=cfg.workers,
        prefetch_factor=4, worker_init_fn=_worker_init, persistent_workers=True,
    )
    yield from loader


# ----------------------------------------------------------------------------
# Evaluation


def held_out(seeds, resolution: int):
    """z [N, 16] (seed convention) and the renders uint8 [N, R, R, 3] of held-out seeds."""
    z = np.concatenate([faces.z_from_seed(int(s)) for s in seeds])
    return z, np.stack([faces.render(faces.params_from_z(zi), resolution) for zi in z])


@torch.no_grad()
def generate(G: Generator, z: np.ndarray, batch: int = 32) -> np.ndarray:
    """uint8 [N, R, R, 3] images of latents z [N, z_dim] (psi 1, const noise)."""
    out = [to_uint8(G(torch.as_tensor(z[i : i + batch], dtype=torch.float32), noise_mode="const"))
           for i in range(0, len(z), batch)]
    return np.concatenate(out)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images [N, H, W, C] (peak 255)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def lr_at(cfg: TrainConfig, kimg: float) -> float:
    if kimg < cfg.warmup_kimg:
        return cfg.lr * max(kimg / cfg.warmup_kimg, 0.01)
    t = (kimg - cfg.decay_start * cfg.total_kimg) / ((1 - cfg.decay_start) * cfg.total_kimg)
    t = min(max(t, 0.0), 1.0)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))


# ----------------------------------------------------------------------------
# Checkpoints


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted(out.glob("ckpt-*.pt"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, state: dict, keep: int = 3) -> Path:
    path = out / f"ckpt-{state['step']:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written checkpoint
    for old in sorted(out.glob("ckpt-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path) -> dict:
    # weights_only: tensors, numbers, strings and containers only (a checkpoint is a file anyone could hand over).
    return torch.load(path, map_location="cpu", weights_only=True)


def generator_from_checkpoint(path, ema: bool = True) -> Generator:
    state = load_checkpoint(path)
    G = Generator(GeneratorConfig.from_dict(state["generator_config"]))
    G.load_state_dict(state["G_ema" if ema else "G"])
    return G.eval()


# ----------------------------------------------------------------------------
# Training


def grown_state(G: Generator, src_config: dict, src_state: dict, src="init_from") -> dict:
    """G's state dict filled from another generator's: the same configuration, or the same at a lower
    resolution ("growing": every tensor whose name and shape match is copied, so mapping and the lower blocks
    carry over; the new blocks keep their initialisation except their toRGB weights, which start at zero so
    that the grown generator first draws the old image, upsampled). ValueError for anything else."""
    this = G.cfg.to_dict()
    same = {k: v for k, v in src_config.items() if k != "img_resolution"} == {
        k: v for k, v in this.items() if k != "img_resolution"}
    if not same or src_config["img_resolution"] > this["img_resolution"]:
        raise ValueError(f"init_from {src}: its generator differs from this configuration's")
    state = G.state_dict()
    for k, v in state.items():
        if k in src_state and src_state[k].shape == v.shape:
            state[k] = src_state[k].clone()
        elif k.endswith(".torgb.weight"):  # a new block's
            state[k] = torch.zeros_like(v)
    return state


# Settings a resumed run may change: they do not alter the batches or the weights seen so far. Changing
# total_kimg moves the lr decay: do it before decay_start x total_kimg to keep the schedule smooth.
RESUME_OVERRIDABLE = ("workers", "ckpt_minutes", "eval_seeds", "total_kimg")


def train(out, minutes: float, cfg: TrainConfig | None = None, overrides: dict | None = None,
          max_steps: int | None = None, log=print) -> dict:
    """Train for ``minutes`` of wall clock (or until ``cfg.total_kimg``, or ``max_steps`` in this call),
    resuming from ``out``.

    A resumed run keeps the configuration saved in its checkpoint; only the fields in ``overrides``
    (names in ``RESUME_OVERRIDABLE``) replace the saved ones. Returns the last curve row.
    """
    torch.set_num_threads(1)  # one core for training; the data worker and the rest of the machine share the other
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        cfg = TrainConfig(**state["train_config"])
        for k, v in (overrides or {}).items():
            if k not in RESUME_OVERRIDABLE:
                raise ValueError(f"{k} cannot change when resuming (only {RESUME_OVERRIDABLE})")
            setattr(cfg, k, v)
        log(f"resuming from {ckpt} at step {state['step']}")
    else:
        cfg = dataclasses.replace(cfg or TrainConfig(), **(overrides or {}))
        state = None
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    torch.manual_seed(cfg.seed)
    G = Generator(cfg.generator_config()).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    step, elapsed = 0, 0.0
    if state is not None:
        G.load_state_dict(state["G"])
        G_ema.load_state_dict(state["G_ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed_s"]
        torch.set_rng_state(state["torch_rng"])
    elif cfg.init_from:
        # A fine-tune: the weights (not the optimiser, step or clock) of another run, same architecture (or grown).
        src = Path(cfg.init_from)
        src = latest_checkpoint(src) if src.is_dir() else src
        if src is None:
            raise FileNotFoundError(f"init_from {cfg.init_from}: no checkpoint there")
        init = load_checkpoint(src)
        G.load_state_dict(grown_state(G, init["generator_config"], init["G_ema"], src))
        G_ema.load_state_dict(G.state_dict())
        log(f"fine-tuning from {src} (step {init['step']}, {init['generator_config']['img_resolution']} px)")

    z_eval, ref_eval = held_out(range(cfg.eval_seeds), cfg.resolution)
    curve = out / "curve.csv"
    if not curve.exists():
        with curve.open("w", newline="") as f:
            csv.writer(f).writerow(["step", "kimg", "elapsed_min", "lr", "loss", "psnr_db", "psnr_ema_db"])

    ema_beta = 0.5 ** (cfg.batch / (cfg.ema_kimg * 1000))
    t_start = time.time()
    t_ckpt = t_start
    losses, row, last_saved = [], {}, -1
    stream = batch_stream(cfg, step)

    def checkpoint():
        nonlocal row, losses, last_saved
        last_saved = step
        run_s = elapsed + time.time() - t_start
        p = float(psnr(generate(G.eval(), z_eval), ref_eval).mean())
        G.train()
        p_ema = float(psnr(generate(G_ema, z_eval), ref_eval).mean())
        row = {"step": step, "kimg": round(step * cfg.batch / 1000, 2), "elapsed_min": round(run_s / 60, 2),
               "lr": f"{lr_at(cfg, step * cfg.batch / 1000):.3g}",
               "loss": f"{np.mean(losses):.5f}" if losses else "", "psnr_db": f"{p:.2f}", "psnr_ema_db": f"{p_ema:.2f}"}
        losses = []
        with curve.open("a", newline="") as f:
            csv.writer(f).writerow(row.values())
        save_checkpoint(out, {
            "step": step, "elapsed_s": run_s, "train_config": dataclasses.asdict(cfg),
            "generator_config": cfg.generator_config().to_dict(), "G": G.state_dict(),
            "G_ema": G_ema.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
        })
        log(" ".join(f"{k}={v}" for k, v in row.items()))

    # SIGTERM (plain `kill PID`) ends the run after the current step with a checkpoint.
    stop = []
    main_thread = threading.current_thread() is threading.main_thread()  # signals need the main thread
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(1)) if main_thread else None
    total_steps = math.ceil(cfg.total_kimg * 1000 / cfg.batch)
    if max_steps is not None:
        total_steps = min(total_steps, step + max_steps)
    while step < total_steps and time.time() - t_start < minutes * 60 and not stop:
        z, target, weight = next(stream)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step * cfg.batch / 1000)
        ws = G.mapping(z)
        img = G.synthesis(ws, noise_mode="const")
        loss = (weight * (img - target).abs()).mean() / weight.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            G.mapping.w_avg.lerp_(ws[:, 0].mean(0), 1 - 0.995)  # for truncation at inference
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - ema_beta)
            for be, b in zip(G_ema.buffers(), G.buffers()):
                be.copy_(b)
        losses.append(loss.item())
        step += 1
        if time.time() - t_ckpt > cfg.ckpt_minutes * 60:
            checkpoint()
            t_ckpt = time.time()
    if step != last_saved:
        checkpoint()
    if main_thread:
        signal.signal(signal.SIGTERM, previous)
    return row


# ----------------------------------------------------------------------------
# Evaluation of a trained model (the acceptance figures)


def evaluate(G: Generator, seeds=range(256), tol: float = 0.015) -> dict:
    """PSNR vs the render and part statistics on held-out seeds.

    A small part counts as found when colour segmentation of the generated image finds it within
    ``tol`` x W of where segmentation of the render puts it. Errors are fractions of W.
    Returns {"psnr_db": mean, "psnr_min_db", "parts": {key: {"found": rate, "err_mean": ..., "err_p95": ...}}}.
    """
    seeds = list(seeds)
    z, ref = held_out(seeds, G.img_resolution)
    gen = generate(G.eval(), z)
    p = psnr(gen, ref)
    keys = [k for k in faces.SEGMENT_KEYS if k not in ("background", "hair", "face")]
    errs = {k: [] for k in keys}
    for g, r in zip(gen, ref):
        sg, sr = faces.segment(g), faces.segment(r)
        for k in keys:
            if k in sr:
                errs[k].append(math.hypot(sg[k][0] - sr[k][0], sg[k][1] - sr[k][1]) / g.shape[1] if k in sg
                               else math.inf)
    parts = {}
    for k, e in errs.items():
        e = np.array(e)
        fin = e[np.isfinite(e)]
        parts[k] = {"found": float((e <= tol).mean()), "err_mean": float(fin.mean()) if fin.size else None,
                    "err_p95": float(np.percentile(fin, 95)) if fin.size else None}
    return {"psnr_db": float(p.mean()), "psnr_min_db": float(p.min()), "n_seeds": len(seeds), "parts": parts}


def contact_sheet(G: Generator, seeds=range(16), cols: int = 4, scale: int = 3) -> np.ndarray:
    """uint8 image: for each seed, the generated face beside its render, ``cols`` pairs per row."""
    seeds = list(seeds)
    z, ref = held_out(seeds, G.img_resolution)
    gen = generate(G.eval(), z)
    r = G.img_resolution
    gap = 4
    pair_w = 2 * r + gap
    rows = math.ceil(len(seeds) / cols)
    sheet = np.full((rows * (r + gap) + gap, cols * (pair_w + 2 * gap) + gap, 3), 255, np.uint8)
    for i, (g, f) in enumerate(zip(gen, ref)):
        y = gap + (i // cols) * (r + gap)
        x = gap + (i % cols) * (pair_w + 2 * gap)
        sheet[y : y + r, x : x + r] = g
        sheet[y : y + r, x + r + gap : x + 2 * r + gap] = f
    return sheet.repeat(scale, 0).repeat(scale, 1)
