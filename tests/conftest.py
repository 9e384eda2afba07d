"""Shared test fixtures: a tiny, deterministic StyleGAN2 for drag, back-end, widget and CLI tests.

``tiny_generator`` is a 64x64 generator with at most 16 channels (random weights, ``torch.manual_seed(0)``):
about 30 ms per DragGAN step on one core, and an 8 px drag converges in tens of steps. It is shared by
the whole test session: do not modify it (sessions and back-ends only read it).
``tiny_model_path`` is the same generator saved with ``dragnb.save_generator`` (a ``.safetensors`` file).
"""

from __future__ import annotations

import os

import pytest
import torch

from dragnb import Generator, GeneratorConfig, save_generator

# Tests share two slow cores with other work: one thread each.
torch.set_num_threads(1)

TINY_CONFIG = dict(
    z_dim=32,            # small latent
    w_dim=32,
    img_resolution=64,   # blocks 4..64; DragSession's default feature block is the 32x32 one (index 3)
    mapping_layers=2,
    channel_base=512,    # channels min(512 // r, 16): 16 up to 32 px, 8 at 64 px
    channel_max=16,
)


def make_tiny_generator(seed: int = 0, **overrides) -> Generator:
    """A fresh tiny generator (eval, no grad); ``overrides`` change ``TINY_CONFIG`` entries."""
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(**{**TINY_CONFIG, **overrides}))
    with torch.no_grad():  # a little noise so noise_mode matters, as in trained models
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.05)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_generator() -> Generator:
    return make_tiny_generator()


@pytest.fixture(scope="session")
def tiny_model_path(tiny_generator, tmp_path_factory):
    return save_generator(tiny_generator, tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="session", autouse=True)
def ort_artifacts_root(tmp_path_factory):
    """One temporary ORT artifact cache for the whole test session (``$DRAGNB_ARTIFACTS``): every test that
    makes an ORT back-end shares it, so artifacts are generated once per model and feature block, and
    nothing is written into the checkout's ``artifacts/``."""
    root = tmp_path_factory.mktemp("artifacts")
    old = os.environ.get("DRAGNB_ARTIFACTS")
    os.environ["DRAGNB_ARTIFACTS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("DRAGNB_ARTIFACTS", None)
    else:
        os.environ["DRAGNB_ARTIFACTS"] = old


@pytest.fixture(scope="session", autouse=True)
def user_models_folder(tmp_path_factory):
    """An empty user models folder (``$DRAGNB_MODELS``) for the whole test session: tests never see the user's own
    checkpoints or LPIPS weights, so the losses that run are the offline ones unless a test puts files there."""
    root = tmp_path_factory.mktemp("user-models")
    old = os.environ.get("DRAGNB_MODELS")
    os.environ["DRAGNB_MODELS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("DRAGNB_MODELS", None)
    else:
        os.environ["DRAGNB_MODELS"] = old
