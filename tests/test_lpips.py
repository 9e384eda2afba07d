"""VGG LPIPS: its properties on random weights of the real shapes, the weight files verified by SHA-256 and read
as tensors only, and every result saying which perceptual loss ran. No network: the real weight files are never
fetched; the loading path runs on small fake files (a narrow VGG) whose hashes the test pins."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import make_tiny_generator

from dragnb.projection import lpips as L
from dragnb.projection.losses import ReconstructionLoss


@pytest.fixture(scope="module")
def real_shapes():
    """LPIPS with random weights of the real shapes (VGG16's 13 convolutions, 14.7 M weights), built once."""
    torch.manual_seed(0)
    m = L.LPIPS()
    with torch.no_grad():
        for lin in m.lins:
            lin.weight.abs_()  # the heads are non-negative
    return m.eval()


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return x, torch.randn(n, 3, size, size, generator=g)


def test_lpips_properties(real_shapes):
    m = real_shapes
    assert sum(p.numel() for p in m.features.parameters()) == 14_714_688  # torchvision's vgg16().features
    assert [k for k in m.state_dict() if k.startswith("features.")][-2:] == ["features.28.weight", "features.28.bias"]
    x, noise = _images()
    with torch.no_grad():
        assert torch.equal(m.distance(x, x), torch.zeros(2))
        d = [m.distance(x, (x + s * noise).clamp(-1, 1)) for s in (0.05, 0.2, 0.6)]
        y = x.flip(0)
        assert torch.allclose(m.distance(x, y), m.distance(y, x), rtol=1e-5)  # symmetric
    assert bool((d[0] > 0).all() and (d[0] < d[1]).all() and (d[1] < d[2]).all()), d
    y = (x + 0.2 * noise).clamp(-1, 1).requires_grad_(True)
    m(y, x).backward()
    assert bool(torch.isfinite(y.grad).all()) and float(y.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in m.parameters())  # frozen: tuning never trains it


NARROW = (4, 4, "M", 8, 8, "M", 8, 8, 8, "M", 8, 8, 8, "M", 8, 8, 8)  # VGG16's layout, few channels


@pytest.fixture
def fake_weights(tmp_path, monkeypatch):
    """Small weight files in the user models folder with the names LPIPS looks for, a narrow VGG of the same
    layout, and their hashes pinned as the expected ones. Returns the folder."""
    monkeypatch.setattr(L, "VGG16", NARROW)
    monkeypatch.setattr(L, "TAP_CHANNELS", (4, 8, 8, 8, 8))
    monkeypatch.setattr(L, "_CACHE", {})
    torch.manual_seed(1)
    vgg = {f"features.{k}": v for k, v in L.vgg16_features().state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file also holds the classifier: ignored
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(L.TAP_CHANNELS)}
    torch.save(vgg, tmp_path / L.VGG_FILE)
    torch.save(heads, tmp_path / L.HEADS_FILE)
    monkeypatch.setattr(L, "VGG_SHA256_PREFIX", L.sha256_file(tmp_path / L.VGG_FILE)[:8])
    monkeypatch.setattr(L, "HEADS_SHA256", L.sha256_file(tmp_path / L.HEADS_FILE))
    monkeypatch.setenv("DRAGNB_MODELS", str(tmp_path))
    return tmp_path


def test_weights_verified_by_hash(fake_weights, monkeypatch):
    m = L.load_lpips()
    assert isinstance(m, L.LPIPS) and L.load_lpips() is m  # loaded once
    assert L.load_lpips(vgg=fake_weights / L.VGG_FILE, heads=fake_weights / L.HEADS_FILE) is m  # or by path
    with pytest.raises(L.LPIPSWeightsError, match="no LPIPS weights"):
        L.load_lpips(folder=fake_weights / "elsewhere")
    monkeypatch.setattr(L, "_CACHE", {})
    monkeypatch.setattr(L, "HEADS_SHA256", "0" * 64)
    with pytest.raises(L.LPIPSWeightsError, match="SHA-256"):
        L.load_lpips()
    with pytest.raises(L.LPIPSWeightsError, match="SHA-256"):  # and the session's default loss refuses too
        ReconstructionLoss(32, 32)
    assert L._CACHE == {}  # nothing was loaded
    monkeypatch.setattr(L, "VGG_SHA256_PREFIX", "397923af")  # the real file's: a fake VGG is refused
    with pytest.raises(L.LPIPSWeightsError, match="starting with 397923af"):
        L.load_lpips(heads=fake_weights / L.HEADS_FILE)


def test_only_tensors_are_read(fake_weights, monkeypatch):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(fake_weights / L.HEADS_FILE, "wb") as f:  # a pickle that would run code, with its hash pinned
        pickle.dump({"lin0.model.1.weight": Payload()}, f, protocol=2)
    monkeypatch.setattr(L, "HEADS_SHA256", L.sha256_file(fake_weights / L.HEADS_FILE))
    with pytest.raises(L.LPIPSWeightsError, match="not a tensor file"):
        L.load_lpips()
    torch.save({"lin0.model.1.weight": torch.rand(1, 3, 1, 1)}, fake_weights / L.HEADS_FILE)  # wrong tensors
    monkeypatch.setattr(L, "HEADS_SHA256", L.sha256_file(fake_weights / L.HEADS_FILE))
    with pytest.raises(L.LPIPSWeightsError, match="lack or misshape"):
        L.load_lpips()
    (fake_weights / L.HEADS_FILE).unlink()  # half installed: said, not silently replaced by ms-ssim
    with pytest.raises(L.LPIPSWeightsError, match="needs both"):
        ReconstructionLoss(32, 32)
    (fake_weights / L.VGG_FILE).unlink()
    assert ReconstructionLoss(32, 32).perceptual == "ms-ssim"  # no files: the offline term


def test_lpips_runs_and_is_reported(fake_weights, tmp_path_factory, capsys):
    from PIL import Image

    from dragnb import DragSession, project, save_generator
    from dragnb.cli import main

    G = make_tiny_generator()
    picture = _seed_image(G)
    r = project(G, picture, num_steps=3, w_avg_samples=200)
    assert r.perceptual == "lpips-vgg" and r.loss_name == "1 l2 + 0.1 lpips-vgg"
    s = DragSession.from_image(G, picture, tune=True, projection_steps=3, tuning_steps=2,
                               projection={"w_avg_samples": 200}, tuning={"lr": 1e-3})
    assert s.picture["perceptual"] == "lpips-vgg" and "lpips-vgg" in s.picture["tuning_loss"]
    work = tmp_path_factory.mktemp("cli")
    Image.fromarray(picture).save(work / "face.png")
    model = save_generator(G, work / "tiny.safetensors")
    assert main(["project", str(work / "face.png"), "--model", str(model), "--out", str(work / "run"),
                 "--steps", "3"]) == 0
    assert "lpips-vgg" in capsys.readouterr().out
    assert json.loads((work / "run" / "projection.json").read_text())["perceptual"] == "lpips-vgg"


def test_ort_tuning_with_lpips(fake_weights):
    pytest.importorskip("onnxruntime")
    from dragnb.projection import PivotalTuner
    from dragnb.projection.ort_tune import OrtPivotalTuner

    G = make_tiny_generator()
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(np.random.RandomState(5).randn(1, G.z_dim)).float(), truncation_psi=0.7)
    picture = _seed_image(G)
    o = OrtPivotalTuner(G, ws.numpy(), picture, threads=1, num_steps=3, lr=1e-3)
    t = PivotalTuner(G, ws.numpy(), picture, num_steps=3, lr=1e-3)
    assert o.loss.perceptual == t.loss.perceptual == "lpips-vgg"
    a, b = [s.loss for s in o.run()], [s.loss for s in t.run()]
    assert np.allclose(a, b, rtol=1e-3), (a, b)


def _seed_image(G):
    """uint8 [H, W, 3]: the generator's image of seed 4 (a picture it can reproduce)."""
    from dragnb import DragSession

    return DragSession(G, seed=4).image


def test_weights_dir_is_the_user_models_folder(tmp_path, monkeypatch):
    from dragnb.checkpoints import user_models_dir

    monkeypatch.setenv("DRAGNB_MODELS", str(tmp_path))
    assert L.weights_dir() == user_models_dir() == tmp_path
    monkeypatch.delenv("DRAGNB_MODELS")
    assert L.weights_dir() == user_models_dir()
