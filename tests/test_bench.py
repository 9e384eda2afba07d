"""``dragnb bench``: the JSON document's structure on a tiny model.

No timing thresholds: times depend on the machine and its load; the bench reports, people compare.
"""

from __future__ import annotations

import json

import pytest

from dragnb import bench as B
from dragnb.cli import main

GOAL_KEYS = {"value", "limit", "met"}


@pytest.fixture(scope="module")
def doc(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["bench", "--model", str(tiny_model_path), "--threads", "1", "--steps", "2", "--soak", "30",
                 "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow  # a whole bench run (the module's fixture)
def test_document_header(doc):
    assert doc["format"] == "dragnb-bench" and doc["threads"] == 1
    m = doc["machine"]
    assert isinstance(m["cpu"], str) and m["cpu"] and m["logical_cores"] >= 1
    assert {"torch", "onnx", "onnxruntime", "numpy", "dragnb"} <= set(doc["versions"])
    assert len(doc["models"]) == 1


@pytest.mark.slow  # a whole bench run (the module's fixture)
def test_model_result(doc, tiny_model_path):
    r = doc["models"][str(tiny_model_path)]
    assert r["model"] == str(tiny_model_path) and r["image"] == [64, 64] and r["threads"] == 1
    for k in ("torch", "ort"):
        for key in ("step_ms", "step_ms_min", "render_step_ms", "mask_step_ms", "forward_ms", "start_features_ms",
                    "step_gflops", "step_fraction_of_peak"):
            assert r[k][key] > 0, (k, key)
    assert r["forward_ms"] == r["torch"]["forward_ms"]
    lat = r["latency"]
    assert lat["first_drag_s"] > lat["artifacts_s"] > 0 and lat["first_step_s"] > lat["first_drag_s"]
    assert lat["cached_first_step_s"] > lat["cached_start_s"] > 0 and lat["artifact_mb"] > 0
    mem = r["memory"]
    assert {"torch", "ort", "ort_runtime", "ort_session_artifacts"} <= set(mem)
    assert all(mem[k]["peak_rss_mb"] >= mem[k]["base_rss_mb"] > 0 for k in mem)
    assert mem["ort_runtime"]["torch_imported"] is False  # the on-device runtime really ran without torch
    assert mem["ort_session_artifacts"]["torch_imported"] is False  # so did DragSession on the artifacts
    assert mem["ort_session_artifacts"]["steps"] >= 1
    for k in ("torch", "ort"):
        s = r["soak"][k]
        assert s["steps"] == 30 and 0 < s["warmup"] < 30 and s["rss_mb_end"] > 0
        assert isinstance(s["fd_growth"], int) and isinstance(s["rss_growth"], float)
    assert r["flops"]["step"] > 0 and r["flops"]["forward"] > 0 and r["conv_peak"]["gflops"] > 0


@pytest.mark.slow  # a whole bench run (the module's fixture)
def test_ratios_and_goals(doc, tiny_model_path):
    r = doc["models"][str(tiny_model_path)]
    for key in ("ort_step_over_torch_step", "torch_step_over_torch_forward", "ort_step_over_ort_forward",
                "ort_rss_over_torch_rss", "ort_session_artifacts_rss_over_torch_rss", "ort_runtime_rss_over_torch_rss",
                "cached_start_over_first_drag", "soak_ort_rss_growth",
                "soak_torch_fd_growth"):
        assert key in r["ratios"], key
    goals = r["goals"]
    assert "ort step <= 0.8 x torch step" in goals and "peak RSS ort <= torch" in goals
    # judged on the torch-free ORT drag through the session API
    assert goals["peak RSS ort <= torch"]["value"] == r["ratios"]["ort_session_artifacts_rss_over_torch_rss"]
    assert "torch step <= 1.5 x torch forward" not in goals  # judged on the FFHQ-512 architecture only
    for g in goals.values():
        assert set(g) == GOAL_KEYS and isinstance(g["met"], bool)


@pytest.mark.slow  # a whole bench run (the module's fixture)
def test_table_lists_every_goal(doc):
    text = B.format_table(doc)
    for r in doc["models"].values():
        for goal in r["goals"]:
            assert goal in text
    assert "step (median)" in text and "peak RSS of a drag" in text


def test_goals_are_judged_per_model():
    r = {"model": B.FFHQ512, "ratios": {"ort_step_over_torch_step": 0.9, "ort_step_over_ort_forward": 1.2}}
    g = B.goals(r)
    assert g["ort step <= 0.8 x torch step"]["met"] is False
    assert g["ort step <= 1.5 x ort forward"]["met"] is True
    r["model"] = "toyfaces"
    assert "ort step <= 1.5 x ort forward" not in B.goals(r)


def test_bad_arguments_fail_cleanly(capsys):
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.slow  # a 30-step soak
def test_soak_only_runs_just_the_soak(tiny_model_path, tmp_path, capsys):
    """--soak-only: the soak for any model (no timing part, no skip for slow steps), same JSON format."""
    out = tmp_path / "soak.json"
    assert main(["bench", "--model", str(tiny_model_path), "--threads", "1", "--soak", "12", "--soak-only",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())["models"][str(tiny_model_path)]
    assert "torch" not in r and "memory" not in r and "latency" not in r
    for k in ("torch", "ort"):
        s = r["soak"][k]
        assert s["steps"] == 12 and s["warmup"] == 2 and s["rss_mb_end"] > 0 and s["fd_end"] > 0
        assert r["goals"][f"soak RSS growth <= 5% ({k})"]["value"] == s["rss_growth"]
    assert "soak torch: 12 steps" in capsys.readouterr().out
