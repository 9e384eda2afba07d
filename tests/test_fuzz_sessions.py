"""Fuzzed session files and ORT manifests: every case ends in success or the one documented error, within a
memory and a time cap.

Sessions: ``DragSession.load`` gives a session or :class:`~dragnb.session.io.SessionFileError`. ORT manifests:
``verify_artifacts`` gives None or a reason (never raises) and ``ArtifactModel`` a model or ``ArtifactError``.
The cases are byte mutations of a real file (flips, truncations, insertions) and structure mutations (document
fields and arrays replaced by values of other types, shapes, sizes and non-finite numbers). They run in a child
process under ``RLIMIT_AS``, with an alarm per case; the seeds are fixed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dragnb
from dragnb.backends import load_backend

CASES = 160          # per format
MEMORY_CAP = 3 << 30  # bytes of address space for the child
CASE_SECONDS = 20

ODD_VALUES = [None, True, -5, 0, 2**63, 1e308, float("nan"), float("inf"), -1.5, "", "x" * 300, [], [1, 2],
              [[float("nan"), 1.0]], {}, {"a": 1}, [[1e9, 1e9]], [[-3, 4]], "w", "z", [[1, 2, 3]]]


def _odd_arrays(rng):
    return [np.zeros((0,), np.float32), np.full((1, 3, 5), np.nan, np.float32), np.ones((7, 7), np.uint8) * 7,
            np.array("text"), np.zeros((2, 2), np.int64) - 1, np.ones((1, 1, 1), np.float64),
            rng.standard_normal((1, 2, 3)).astype(np.float32), np.zeros((64, 64), np.bool_)]


def _mutate_bytes(data: bytes, rng) -> bytes:
    data = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:  # flip a few bytes
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncate
        del data[int(rng.integers(len(data))):]
    else:  # insert junk
        at = int(rng.integers(len(data)))
        data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    return bytes(data)


def _mutate_json(doc, rng):
    """``doc`` with one field (at a random depth) replaced by an odd value, or deleted."""
    path, node = [], doc
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = list(node)[int(rng.integers(len(node)))] if isinstance(node, dict) else int(rng.integers(len(node)))
        path.append(key)
        if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
            break
        node = node[key]
    if not path:
        return ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
    target = doc
    for k in path[:-1]:
        target = target[k]
    if rng.random() < 0.15:
        target.pop(path[-1])
    else:
        target[path[-1]] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
    return doc


def _mutate_structure(arrays: dict, rng) -> dict:
    arrays = dict(arrays)
    if rng.random() < 0.6:  # a document field
        doc = _mutate_json(json.loads(str(arrays["session_json"])), rng)
        arrays["session_json"] = np.array(json.dumps(doc))
    else:  # an array
        names = [k for k in arrays if k != "session_json"]
        name = names[int(rng.integers(len(names)))]
        odd = _odd_arrays(rng)
        arrays[name] = odd[int(rng.integers(len(odd)))]
        if rng.random() < 0.2:
            del arrays[name]
    return arrays


CHILD = textwrap.dedent(r"""
    import json, resource, signal, sys, warnings
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    import torch
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import dragnb
    from dragnb.session import SessionFileError
    from dragnb.backends.ort_files import ArtifactError, verify_artifacts
    from dragnb.backends.ort_model import ArtifactModel

    class Timeout(Exception):
        pass

    def alarm(*_):
        raise Timeout()

    signal.signal(signal.SIGALRM, alarm)
    job = json.loads(sys.argv[1])
    G = dragnb.load_generator(job["model"])
    results = []
    for case in job["cases"]:
        signal.alarm(CASE_SECONDS)
        try:
            if case["kind"] == "session":
                dragnb.DragSession.load(case["path"], model=G if case["with_model"] else None)
            else:
                why = verify_artifacts(case["path"])
                assert why is None or isinstance(why, str)
                ArtifactModel(case["path"])
            results.append([case["path"], "ok"])
        except (SessionFileError, ArtifactError):
            results.append([case["path"], "refused"])
        except Timeout:
            results.append([case["path"], "timeout"])
        except MemoryError:
            results.append([case["path"], "memory"])
        except BaseException as e:
            results.append([case["path"], f"ESCAPED {type(e).__name__}: {str(e)[:300]}"])
        finally:
            signal.alarm(0)
    print(json.dumps(results))
""").replace("MEMORY_CAP", str(MEMORY_CAP)).replace("CASE_SECONDS", str(CASE_SECONDS))


def _run_child(job: dict) -> list:
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def base_session(tiny_model_path, tmp_path_factory):
    """A session with points, a mask, history and an open drag, saved with its model reference."""
    s = dragnb.DragSession(str(tiny_model_path), seed=3)
    s.add_point(handle=(20, 30), target=(26, 30))
    s.add_point(handle=(40, 12), target=(40, 18))
    fixed = np.zeros((64, 64), bool)
    fixed[:16] = True
    s.set_mask(fixed)
    for _ in s.run(max_steps=2):
        pass
    s.add_point(handle=(10, 50), target=(14, 50))
    s.step()
    path = tmp_path_factory.mktemp("session") / "base"
    s.save(path)
    return path


def _mutants_of_session(base, out, rng) -> list[dict]:
    npz = (base / "session.npz").read_bytes()
    with np.load(base / "session.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cases = []
    for i in range(CASES):
        path = out / f"s{i}.npz"
        if i % 2:
            path.write_bytes(_mutate_bytes(npz, rng))
        else:
            with open(path, "wb") as f:
                np.savez(f, **_mutate_structure(arrays, rng))
        cases.append({"kind": "session", "path": str(path), "with_model": bool(i % 3)})
    return cases


@pytest.mark.slow  # a few hundred loads in a child process
def test_fuzzed_sessions_load_or_are_refused(base_session, tiny_model_path, tmp_path):
    rng = np.random.default_rng(0)
    cases = _mutants_of_session(base_session, tmp_path, rng)
    results = _run_child({"model": str(tiny_model_path), "cases": cases})
    bad = [r for r in results if r[1] not in ("ok", "refused")]
    assert bad == []
    assert sum(r[1] == "refused" for r in results) > CASES // 2  # the mutations do reach the checks


def _mutants_of_manifest(folder, out, rng) -> list[dict]:
    import shutil

    text = (folder / "manifest.json").read_text()
    cases = []
    for i in range(CASES // 2):
        dst = out / f"m{i}"
        shutil.copytree(folder, dst)
        if i % 2:
            (dst / "manifest.json").write_bytes(_mutate_bytes(text.encode(), rng))
        else:
            (dst / "manifest.json").write_text(json.dumps(_mutate_json(json.loads(text), rng)))
        cases.append({"kind": "manifest", "path": str(dst)})
    return cases


@pytest.mark.slow  # eighty artifact folders checked in a child process
def test_fuzzed_ort_manifests_verify_or_are_refused(tiny_generator, tiny_model_path, tmp_path):
    folder = load_backend("ort")(tiny_generator, 3).folder
    rng = np.random.default_rng(1)
    results = _run_child({"model": str(tiny_model_path), "cases": _mutants_of_manifest(folder, tmp_path, rng)})
    bad = [r for r in results if r[1] not in ("ok", "refused")]
    assert bad == []
