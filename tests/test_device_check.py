"""tools/device_check.py in its CPU smoke mode (``--device cpu --quick``): the script a GPU machine runs works."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "device_check.py"


def test_device_check_quick_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("device_check", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "check.json")]) == 0
    doc = json.loads((tmp_path / "check.json").read_text())
    assert doc["device"] == "cpu" and doc["parity_ok"]
    (model,) = doc["parity"].values()
    assert model["seed_image_max_diff"] == 0 and all(d["tracked_identical"] for d in model["drags"])
    assert [r["resolution"] for r in doc["speed"]] == [32] and doc["speed"][0]["median_ms"] > 0
