"""The torch-free runtime: a drag from saved artifacts in a process where torch (and dragnb) cannot be imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dragnb.backends import load_backend, ort_runtime
from dragnb.backends.ort_runtime import DragRuntime, drag
from dragnb.drag import core
from dragnb.drag.params import DragParams
from dragnb.testing import UNIMPORTABLE_SRC

HANDLES = np.array([[30, 20], [40, 36]], np.int64)     # (row, col)
TARGETS = np.array([[36.0, 20.0], [40.0, 42.0]], np.float32)

# torch and the dragnb package look absent (import raises ModuleNotFoundError), as on a device that has numpy and
# onnxruntime-training only.
BLOCKER = UNIMPORTABLE_SRC + 'make_unimportable("torch", "dragnb")\n'


@pytest.fixture(scope="module")
def artifacts(tiny_generator):
    return load_backend("ort")(tiny_generator, 3).folder


def test_mapping_from_a_seed(artifacts, tiny_generator):
    rt = DragRuntime(artifacts, threads=1)
    z = torch.from_numpy(np.random.RandomState(7).randn(1, tiny_generator.z_dim)).float()
    np.testing.assert_allclose(rt.seed_ws(7, 0.7), tiny_generator.mapping(z, truncation_psi=0.7).numpy(), atol=1e-5)


def test_preoptimized_graphs_give_the_same_drag(artifacts):
    """The cache's CPU-optimised copies (loaded with ORT's optimisation off) compute what the originals do."""
    cfg = json.loads((artifacts / "manifest.json").read_text())["config"]
    assert set(cfg["preoptimized"]) >= {"training_model.onnx", "eval_model.onnx"}
    for name in cfg["preoptimized"]:
        assert (artifacts / ort_runtime.preoptimized_name(name)).is_file()
    fast = DragRuntime(artifacts, threads=1)
    # Other settings than the tuned ones (here ORT optimising the originals at "basic" level) use the originals.
    plain = DragRuntime(artifacts, threads=1, options={"optimization": "basic"})
    assert fast.preoptimized == sorted(cfg["preoptimized"]) and plain.preoptimized == []
    ws0 = fast.seed_ws(2)
    mask = np.zeros((64, 64), np.float32)
    mask[:20] = 1
    a = drag(fast, ws0, HANDLES, TARGETS, steps=6, fixed=mask)
    b = drag(plain, ws0, HANDLES, TARGETS, steps=6, fixed=mask)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["loss"], y["loss"], rtol=1e-5)
        np.testing.assert_array_equal(x["tracked_rc"], y["tracked_rc"])
    np.testing.assert_allclose(fast.ws(), plain.ws(), atol=1e-5)


def test_torch_free_subprocess_matches_in_process(artifacts, tiny_generator, tmp_path):
    ws0 = DragRuntime(artifacts, threads=1).seed_ws(4)
    mask = np.zeros((64, 64), np.float32)
    mask[44:60, 44:60] = 1
    rt = DragRuntime(artifacts, threads=1)
    hist = drag(rt, ws0, HANDLES, TARGETS, steps=8, fixed=mask)

    # The on-device layout: the artifact folder alone (the writer copied the runtime's files into it).
    device = tmp_path / "device"
    shutil.copytree(artifacts, device / "artifacts")
    np.save(device / "ws0.npy", ws0)
    np.save(device / "mask.npy", mask)
    (tmp_path / "block" / "sitecustomize.py").parent.mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCKER)
    args = ["artifacts", "--ws", "ws0.npy", "--mask", "mask.npy", "--steps", "8", "--threads", "1", "--out", "out.json"]
    for (hr, hc), (tr, tc) in zip(HANDLES, TARGETS):
        args += ["--handle", f"{hr},{hc}", "--target", f"{tr},{tc}"]
    script = textwrap.dedent(f"""
        import sys
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch is importable: the blocker is not active")
        sys.path.insert(0, "artifacts")  # its own files only: ort_runtime.py and what it imports
        import ort_runtime
        rc = ort_runtime.main({args!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "dragnb"))
        assert not heavy, heavy
        print("torch-free run ok")
        raise SystemExit(rc)
    """)
    env = {"PYTHONPATH": str(tmp_path / "block"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=device, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch-free run ok" in proc.stdout
    out = json.loads((device / "out.json").read_text())
    assert out["tracked_rc"] == [h["tracked_rc"].tolist() for h in hist]
    assert out["loss"] == [h["loss"] for h in hist]
    np.testing.assert_array_equal(np.array(out["ws"], np.float32), rt.ws())
    assert len(hist) == 8 and hist[-1]["mask"] > 0


def test_package_import_of_runtime_is_torch_free():
    """`import dragnb.backends.ort_runtime` from the installed package pulls in neither torch nor onnx."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
        "import dragnb, dragnb.backends.ort_runtime as rt\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok', rt.__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok dragnb.backends.ort_runtime" in r.stdout


@pytest.mark.slow  # fresh processes importing onnxruntime
def test_onnxruntime_is_imported_without_ortmodule():
    """import_onnxruntime skips the training build's ORTModule check (torch, onnx, sympy: +62 MB), and
    onnxruntime.training still imports normally afterwards."""
    code = textwrap.dedent("""
        import sys
        from dragnb.backends.ort_runtime import import_onnxruntime
        ort = import_onnxruntime()
        assert ort.InferenceSession is not None
        heavy = [m for m in ("onnxruntime.training", "onnxruntime.training.ortmodule", "sympy") if m in sys.modules]
        assert not heavy, heavy
        assert import_onnxruntime() is ort
        from onnxruntime.training import artifacts  # later use is unaffected
        assert "onnxruntime.training" in sys.modules and artifacts.generate_artifacts
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-2000:]


def test_drag_uses_the_models_tuned_defaults(artifacts, tiny_generator):
    """A model's drag_defaults reach the manifest's drag_params (and the cache key); drag() uses them for unset
    parameters."""
    import copy

    G = copy.deepcopy(tiny_generator)
    G.drag_defaults = {"num_layers": 3, "lr": 5e-3, "r1": 2}
    folder = load_backend("ort")(G, 3).folder
    assert folder != artifacts  # same weights, other defaults: another cache entry
    params = json.loads((folder / "manifest.json").read_text())["config"]["drag_params"]
    assert {k: params[k] for k in G.drag_defaults} == G.drag_defaults
    assert json.loads((artifacts / "manifest.json").read_text())["config"]["drag_params"] == \
        DragParams.for_model(tiny_generator, feature_block=3).resolved(tiny_generator).to_dict()
    rt = DragRuntime(folder, threads=1)
    ws0 = rt.seed_ws(5)
    tuned = drag(rt, ws0, HANDLES, TARGETS, steps=3, tolerance=-1)
    explicit = drag(rt, ws0, HANDLES, TARGETS, steps=3, tolerance=-1, num_layers=3, lr=5e-3, r1=2)
    official = drag(rt, ws0, HANDLES, TARGETS, steps=3, tolerance=-1, num_layers=6, lr=2e-3,
                    r1=core.default_radii(64)[0])
    assert [s["loss"] for s in tuned] == [s["loss"] for s in explicit]
    assert [s["loss"] for s in tuned][1:] != [s["loss"] for s in official][1:]
