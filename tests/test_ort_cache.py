"""The ORT artifact cache: keyed by weights and settings, verified on load, regenerated when damaged, locked."""

from __future__ import annotations

import json
import shutil
import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import make_tiny_generator

from dragnb.backends import ort_cache
from dragnb.backends.ort_cache import ArtifactCacheWarning, cache_key, ensure_artifacts
from dragnb.backends.ort_files import MANIFEST, RUNTIME_FILES, ArtifactError, verify_artifacts
from dragnb.backends.ort_model import ArtifactModel
from dragnb.backends.ort_runtime import DragRuntime

FB = 2


@pytest.fixture(scope="module")
def small_G():
    return make_tiny_generator(img_resolution=32)


@pytest.fixture(scope="module")
def template(small_G, tmp_path_factory):
    """A good artifact folder, generated once; tests copy it before damaging anything."""
    return ensure_artifacts(small_G, FB, root=tmp_path_factory.mktemp("cache"), progress=False)


def _files(folder):
    return sorted(json.loads((folder / MANIFEST).read_text())["files"]) + [MANIFEST]


def _copy(template, root):
    dst = root / "ort" / template.name
    shutil.copytree(template, dst)
    return dst


def _damage(path, how):
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # garble: same size, different bytes (a foreign or bit-rotted file)
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 16] = bytes((b ^ 0xA5) for b in data[mid : mid + 16])
        path.write_bytes(bytes(data))


def _works(folder, G):
    rt = DragRuntime(folder, threads=1)
    ws0 = G.mapping(torch.zeros(1, G.z_dim), truncation_psi=0.7).numpy()
    rt.start(ws0, "w+", 6)
    img, f0 = rt.features()
    assert img.shape == (3, 32, 32) and f0.shape == (G.feature_shape(FB)[0], 32, 32)
    h = np.array([[10, 12]])
    out = rt.step(h, [[14.0, 12.0]], f0[:, h[:, 0], h[:, 1]].T, r1=3, r2=5, tolerance=2.0)
    assert np.isfinite(out["loss"]) and not np.array_equal(rt.ws(), ws0)


def test_manifest_describes_the_set(template, small_G):
    m = json.loads((template / MANIFEST).read_text())
    assert m["format"] == "dragnb-ort-artifacts" and m["key"] == template.name
    assert set(m["settings"]["versions"]) == {"dragnb", "torch", "onnx", "onnxruntime"}
    assert m["settings"]["feature_block"] == FB and m["config"]["stop_gradient_markers"] == 1
    assert {"training_model.onnx", "eval_model.onnx", "checkpoint", "adamw.onnx", "tail.onnx",
            "mapping.onnx", "training_model.cpu-opt.onnx", "eval_model.cpu-opt.onnx",
            "tail.cpu-opt.onnx", "mapping.cpu-opt.onnx", *RUNTIME_FILES} == set(m["files"])
    for name, info in m["files"].items():
        assert (template / name).stat().st_size == info["size"]
    assert verify_artifacts(template) is None
    assert not list(template.parent.glob(".tmp-*"))  # generated elsewhere and renamed into place


def test_key_follows_weights_and_settings(small_G):
    k, _ = cache_key(small_G, FB)
    assert cache_key(make_tiny_generator(img_resolution=32), FB)[0] == k  # same weights, same key
    assert cache_key(small_G, FB + 1)[0] != k and cache_key(small_G, FB, "none")[0] != k
    other = make_tiny_generator(img_resolution=32)
    with torch.no_grad():
        other.synthesis.b8.conv1.bias[0] += 1e-3
    assert cache_key(other, FB)[0] != k


@pytest.mark.parametrize("how", ["delete", "truncate", "garble"])
def test_every_fault_is_detected(template, tmp_path, how):
    for name in _files(template):
        folder = _copy(template, tmp_path / f"{how}-{name}")
        _damage(folder / name, how)
        why = verify_artifacts(folder)
        assert why is not None and (name in why or MANIFEST in why), (name, why)


@pytest.mark.slow  # sixteen regenerations, a few seconds each
@pytest.mark.parametrize("i", range(16))
def test_damaged_set_is_regenerated_and_works(template, small_G, tmp_path, i):
    """Each file in turn (the fault rotating through delete / truncate / garble): warning, regeneration, works."""
    names = _files(template)
    assert len(names) == 16
    name, how = names[i], ("delete", "truncate", "garble")[i % 3]
    folder = _copy(template, tmp_path)
    _damage(folder / name, how)
    with pytest.warns(ArtifactCacheWarning, match="regenerating"):
        again = ensure_artifacts(small_G, FB, root=tmp_path, progress=False)
    assert again == folder and verify_artifacts(again) is None
    _works(again, small_G)


def test_two_starts_at_once_generate_once(small_G, tmp_path, monkeypatch):
    """The per-key lock: the second caller waits, then finds the finished folder."""
    calls, real = [], ort_cache._generate

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(ort_cache, "_generate", counting)
    out, errors = [], []

    def start():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ArtifactCacheWarning)  # nobody may see a half-made folder
                out.append(ensure_artifacts(small_G, FB, root=tmp_path, progress=False))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and out[0] == out[1]
    assert verify_artifacts(out[0]) is None


def test_env_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAGNB_ARTIFACTS", str(tmp_path))
    assert ort_cache.default_root() == tmp_path


@pytest.mark.slow  # a fresh process opening ORT artifacts
def test_cached_start_imports_no_exporter(tiny_model_path, tmp_path):
    """A start from cached artifacts loads neither onnx nor torch.onnx (they cost ~7 MB of RSS beside torch)
    and opens no mapping session (dragnb maps seeds with torch); ``seed_ws`` still opens it on first use."""
    import os
    import subprocess
    import sys

    root = tmp_path / "root"
    code = f"""
import sys, torch
from dragnb.checkpoints import load_generator
from dragnb.backends.ort_backend import OrtBackend
G = load_generator({str(tiny_model_path)!r})
OrtBackend(G, 2, artifacts_root={str(root)!r}, threads=1, progress=False)  # generates (imports the exporter)
"""
    check = f"""
import sys, torch
from dragnb.checkpoints import load_generator
from dragnb.backends.ort_backend import OrtBackend
G = load_generator({str(tiny_model_path)!r})
b = OrtBackend(G, 2, artifacts_root={str(root)!r}, threads=1, progress=False)
print(sorted(m for m in ("onnx", "torch.onnx", "dragnb.backends.ort_export") if m in sys.modules))
print(b.runtime._mapping is None)
print(b.runtime.seed_ws(3).shape == (1, G.num_ws, G.w_dim), b.runtime._mapping is None)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-c", check], check=True, env=env, capture_output=True, text=True)
    assert out.stdout.split("\n")[:3] == ["[]", "True", "True False"], out.stdout + out.stderr


# ----------------------------------------------------------------------------
# A hostile or foreign folder: refused or replaced, never run as if it were the one asked for


def _rewrite_manifest(folder, change):
    m = json.loads((folder / MANIFEST).read_text())
    change(m)
    (folder / MANIFEST).write_text(json.dumps(m))


@pytest.mark.slow  # two artifact sets generated
def test_a_foreign_intact_set_under_the_key_is_replaced(template, small_G, tmp_path):
    """An intact set made for another feature block, copied into this key's folder, is not run."""
    other = ensure_artifacts(small_G, FB - 1, root=tmp_path / "other", progress=False)
    dst = tmp_path / "ort" / template.name
    shutil.copytree(other, dst)
    assert verify_artifacts(dst) is None  # intact on its own ...
    with pytest.warns(ArtifactCacheWarning, match="not the one asked for"):  # ... but not the set asked for
        again = ensure_artifacts(small_G, FB, root=tmp_path, progress=False)
    assert json.loads((again / MANIFEST).read_text())["settings"]["feature_block"] == FB


@pytest.mark.parametrize("change, why", [
    (lambda m: m["files"].pop("checkpoint"), "does not list"),        # an unlisted (unverified) file
    (lambda m: m["files"].update({"checkpoint": 5}), "not {size, sha256}"),
    (lambda m: m["files"].update({"checkpoint": None}), "not {size, sha256}"),
    (lambda m: m["files"].update({"/proc/self/mem": {"size": 0, "sha256": "0" * 64}}), "plain file name"),
    (lambda m: m["files"].update({"../x.onnx": {"size": 0, "sha256": "0" * 64}}), "plain file name"),
    (lambda m: m.update({"files": []}), "no config or no file list"),
    (lambda m: m.update({"config": None}), "no config or no file list"),
])
def test_a_bad_manifest_is_refused_with_a_reason(template, tmp_path, change, why):
    folder = _copy(template, tmp_path)
    _rewrite_manifest(folder, change)
    reason = verify_artifacts(folder)
    assert reason is not None and why in reason
    with pytest.raises(ArtifactError, match="usable"):
        ArtifactModel(folder)


def test_a_symlinked_file_is_refused(template, tmp_path):
    folder = _copy(template, tmp_path)
    (folder / "checkpoint").rename(tmp_path / "elsewhere")
    (folder / "checkpoint").symlink_to(tmp_path / "elsewhere")
    assert "checkpoint is missing (or not a regular file)" in verify_artifacts(folder)


def test_a_directory_where_the_lock_goes_is_a_clear_error(small_G, tmp_path):
    key, _ = cache_key(small_G, FB)
    (tmp_path / "ort" / ".locks" / f"{key}.lock").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="cannot make the artifacts"):
        ensure_artifacts(small_G, FB, root=tmp_path, progress=False)
