"""DragSession on an ORT artifact folder alone: torch never imported, the same drag as the in-process ORT session.

The artifacts are made in this process (a session on the tiny generator with backend="ort" exports them into
the test session's artifact cache); the torch-free drag runs in a child process where torch and onnx cannot be
imported at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dragnb.backends.ort_files import ArtifactError
from dragnb.backends.ort_model import ArtifactModel
from dragnb.drag.params import DragParams
from dragnb.session import DragSession
from dragnb.testing import UNIMPORTABLE_SRC

POINT = ((20, 30), (26, 30))  # (x, y) handle -> target
STEPS = 6

# torch and onnx look absent (import raises ModuleNotFoundError), as on a machine without them.
BLOCKER = UNIMPORTABLE_SRC + 'make_unimportable("torch", "onnx")\n'


def _drag(s: DragSession) -> dict:
    """The drag both processes run: one point, STEPS steps, undo, redo the drag; points and ws along the way."""
    ws_seed = s.ws
    s.add_point(handle=POINT[0], target=POINT[1])
    first = [r.handle_points for r in s.run(max_steps=STEPS)]
    ws_first = s.ws
    assert s.undo()
    ws_undone = s.ws
    second = [r.handle_points for r in s.run(max_steps=STEPS)]
    return {"ws_seed": ws_seed, "first": first, "ws_first": ws_first, "ws_undone": ws_undone, "second": second,
            "ws": s.ws}


@pytest.fixture(scope="module")
def folder(tiny_generator):
    """The artifact folder of the tiny generator at the session's default feature block (3)."""
    s = DragSession(tiny_generator, seed=0, backend="ort")
    assert DragSession(tiny_generator, seed=0).ort_artifacts is None  # the PyTorch back-end has none
    assert (s.ort_artifacts / "manifest.json").is_file()
    return s.ort_artifacts


def test_torch_free_session_matches_in_process_ort_session(folder, tiny_generator, tmp_path):
    ref = _drag(DragSession(tiny_generator, seed=0, backend="ort", render_every=1000))
    script = BLOCKER + textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from dragnb.session import DragSession
        sys.path.insert(0, {str(Path(__file__).parent)!r})  # for _drag: both processes run the same drag
        from test_ort_artifact_session import _drag

        s = DragSession({str(folder)!r}, seed=0, backend="ort", render_every=1000)
        out = _drag(s)
        s.save({str(tmp_path / "saved")!r})
        t = DragSession.load({str(tmp_path / "saved")!r})
        assert t.backend_name == "ort" and isinstance(t.G, type(s.G)) and t.params == s.params
        np.testing.assert_array_equal(t.ws, s.ws)
        assert t.handle_points == s.handle_points and t.can_undo
        assert t.undo()
        np.testing.assert_array_equal(t.ws, out["ws_undone"])
        out = {{k: np.asarray(v).tolist() for k, v in out.items()}}
        out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))
        print(json.dumps(out))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []  # torch was never imported (nor onnx)
    # Seeds: the artifacts' mapping graph gives the torch mapping's ws to float rounding.
    np.testing.assert_allclose(out["ws_seed"], ref["ws_seed"], rtol=0, atol=1e-5)
    # The same runtime on (almost) the same start: the same tracked points, the same latents to rounding.
    for k in ("first", "second"):
        assert out[k] == [[list(p) for p in step] for step in ref[k]], k
    for k in ("ws_first", "ws_undone", "ws"):
        np.testing.assert_allclose(out[k], ref[k], rtol=0, atol=1e-4, err_msg=k)
    assert np.abs(np.asarray(out["ws"]) - out["ws_seed"]).max() > 1e-3  # the drag moved the latent


@pytest.mark.parametrize("seed,psi", [(0, 0.7), (7, 0.5), (123456, 1.0)])
def test_seed_ws_from_the_mapping_graph_match_torch(folder, tiny_generator, seed, psi):
    a = DragSession(ArtifactModel(folder, threads=1), seed=seed, truncation_psi=psi, backend="ort")
    b = DragSession(tiny_generator, seed=seed, truncation_psi=psi)
    assert a.ws.dtype == np.float32 and a.ws.shape == b.ws.shape
    np.testing.assert_allclose(a.ws, b.ws, rtol=0, atol=1e-5)


def test_artifact_model_describes_the_generator(folder, tiny_generator):
    m, G = ArtifactModel(folder), tiny_generator
    for k in ("z_dim", "w_dim", "c_dim", "num_ws", "img_resolution", "img_width", "num_blocks"):
        assert getattr(m, k) == getattr(G, k), k
    assert (m.feature_block, m.noise_mode) == (3, "const")
    assert m.drag_defaults == DragParams.for_model(G, feature_block=3).resolved(G).to_dict()
    s = DragSession(m, seed=1)  # backend None: "ort", the artifacts' only one
    assert s.backend_name == "ort"
    assert s.params["feature_block"] == 3 and s.params["noise_mode"] == "const"
    assert s._model_ref == str(folder.resolve())


def test_bad_input_leaves_the_artifact_session_unchanged(folder, tmp_path):
    with pytest.raises(ValueError, match="runs backend 'ort' only"):
        DragSession(folder, seed=0, backend="torch")
    with pytest.raises(ValueError, match="features of block 3, not 2"):
        DragSession(folder, seed=0, backend="ort", feature_block=2)
    with pytest.raises(ValueError, match="noise_mode 'const', not 'none'"):
        DragSession(folder, seed=0, backend="ort", noise_mode="none")

    s = DragSession(folder, seed=0, backend="ort")
    s.add_point(handle=POINT[0], target=POINT[1])
    s.step()
    ws, params, backend, points = s.ws, s.params, s._backend, s.handle_points
    with pytest.raises(ValueError, match="runs backend 'ort' only"):
        s.set_backend("torch")
    with pytest.raises(ValueError, match="features of block 3"):
        s.set_params(feature_block=4, lr=1e-3)
    with pytest.raises(ValueError, match="noise_mode"):
        s.set_params(noise_mode="random")
    assert s.backend_name == "ort" and s._backend is backend and s.params == params
    np.testing.assert_array_equal(s.ws, ws)
    assert s.handle_points == points
    s.set_params(feature_block=None, lr=1e-3)  # None: the exported block
    assert s.params["feature_block"] == 3 and s.params["lr"] == 1e-3
    s.step()  # and the drag goes on

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="not a usable dragnb ORT artifact folder.*manifest.json is missing"):
        DragSession(empty, seed=0, backend="ort")
    with pytest.raises(ValueError, match="threads"):
        ArtifactModel(folder, threads=0)


def test_workbench_on_artifacts_offers_only_what_they_were_exported_for(folder, tiny_generator):
    """The widget on an artifact session lists the ORT back-end and the exported feature block only; the next
    session (another model) gets every choice back."""
    import dragnb

    wb = dragnb.Workbench(session=DragSession(folder, seed=0))
    assert [v for _, v in wb.backend.options] == ["ort"] and wb.backend.value == "ort"
    assert [v for _, v in wb.feature_block.options] == [3] and wb.feature_block.value == 3
    wb._attach(DragSession(tiny_generator, seed=0))
    assert [v for _, v in wb.backend.options] == ["torch", "ort"] and wb.backend.value == "torch"
    assert [v for _, v in wb.feature_block.options] == list(range(tiny_generator.num_blocks))
