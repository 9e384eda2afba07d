"""The ``dragnb bench`` JSON document (header, ratios, goals) and its plain-text table."""

from __future__ import annotations

import time

from .config import GOALS
from .machine import machine_info, versions


def new_doc(threads: int) -> dict:
    """The header of a ``dragnb bench`` JSON document (machine, versions, threads), no models yet."""
    return {"format": "dragnb-bench", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine_info(), "versions": versions(), "threads": threads, "models": {}}


def finish_doc(doc: dict) -> dict:
    """``doc`` with the load average at its end beside the one at its start."""
    doc["machine"]["loadavg_end"] = machine_info().get("loadavg")
    return doc


def ratios(r: dict) -> dict:
    out = {}
    t, o = r.get("torch", {}), r.get("ort", {})
    if "step_ms" in t and "step_ms" in o:
        out["ort_step_over_torch_step"] = o["step_ms"] / t["step_ms"]
    for k, d in (("torch", t), ("ort", o)):
        if "step_ms" in d and "forward_ms" in d:
            out[f"{k}_step_over_{k}_forward"] = d["step_ms"] / d["forward_ms"]
    if "forward_ms" in t and "forward_ms" in o:
        out["ort_forward_over_torch_forward"] = o["forward_ms"] / t["forward_ms"]
    mem = r.get("memory", {})
    if "torch" in mem:
        # ort: OrtBackend with torch loaded; ort_session_artifacts: DragSession on the artifacts, torch never
        # imported; ort_runtime: the runtime file alone.
        for k in ("ort", "ort_session_artifacts", "ort_runtime"):
            if k in mem:
                out[f"{k}_rss_over_torch_rss"] = mem[k]["peak_rss_mb"] / mem["torch"]["peak_rss_mb"]
    lat = r.get("latency", {})
    if "first_drag_s" in lat and "cached_start_s" in lat:
        out["cached_start_over_first_drag"] = lat["cached_start_s"] / lat["first_drag_s"]
    for k, s in r.get("soak", {}).items():
        out[f"soak_{k}_rss_growth"] = s["rss_growth"]
        out[f"soak_{k}_fd_growth"] = s["fd_growth"]
    return out


def goals(r: dict) -> dict:
    """The goals (``GOALS``) that this result can judge: {goal: {"value", "limit", "met"}}."""
    out = {}
    for name, (key, limit, only) in GOALS.items():
        if key in r["ratios"] and (only is None or r.get("model") in only):
            v = r["ratios"][key]
            out[name] = {"value": v, "limit": limit, "met": bool(v <= limit)}
    return out


def _fmt(v, unit="") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return (f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}") + unit
    return f"{v}{unit}"


ROW = "{:<38} {:>12} {:>12} {:>9}"


def _row(label: str, a, b, unit: str = "") -> str:
    """A table row: PyTorch value ``a``, ORT value ``b`` and their ratio b / a."""
    ratio = b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None
    return ROW.format(label, _fmt(a, unit), _fmt(b, unit), _fmt(ratio))


def _timing_lines(r: dict) -> list[str]:
    t, o = r.get("torch", {}), r.get("ort", {})
    lines = []
    if t or o:
        lines.append(ROW.format("", "torch", "ort", "ort/torch"))
        for label, key in (("step (median)", "step_ms"), ("step (min)", "step_ms_min"),
                           ("step + image", "render_step_ms"), ("step with a mask", "mask_step_ms"),
                           ("full inference forward", "forward_ms"), ("start + F0", "start_features_ms")):
            lines.append(_row(label, t.get(key), o.get(key), " ms"))
    if "step_gflops" in t:
        for label, key in (("step GFLOP/s", "step_gflops"), ("forward GFLOP/s", "forward_gflops")):
            lines.append(_row(label, t.get(key), o.get(key)))
    return lines


def _memory_lines(r: dict) -> list[str]:
    mem = r.get("memory", {})
    if not mem:
        return []
    t, o = mem.get("torch", {}), mem.get("ort", {})

    def alone(m: dict) -> str:
        return _fmt(m["peak_rss_mb"] - m["base_rss_mb"], " MB") if m else "-"

    lines = [_row("peak RSS of a drag (ort: torch loaded)", t.get("peak_rss_mb"), o.get("peak_rss_mb"), " MB"),
             ROW.format("  the drag alone (peak - base)", alone(t), alone(o), "")]
    for k, label in (("ort_session_artifacts", "  DragSession on artifacts, no torch"),
                     ("ort_runtime", "  torch-free ORT runtime file")):
        if k in mem:
            ratio = r["ratios"].get(f"{k}_rss_over_torch_rss")
            lines.append(ROW.format(label, "", _fmt(mem[k]["peak_rss_mb"], " MB"), _fmt(ratio)))
    return lines


def _summary_lines(r: dict) -> list[str]:
    lines = []
    lat = r.get("latency", {})
    if lat:
        lines.append(f"first drag: back-end ready in {_fmt(lat.get('first_drag_s'), ' s')} (export + artifacts "
                     f"{_fmt(lat.get('artifacts_s'), ' s')}, {_fmt(lat.get('artifact_mb'), ' MB')}), first step "
                     f"done at {_fmt(lat.get('first_step_s'), ' s')}")
        lines.append(f"cached start (fresh process): back-end ready in {_fmt(lat.get('cached_start_s'), ' s')}, "
                     f"first step done at {_fmt(lat.get('cached_first_step_s'), ' s')}")
    if "flops" in r:
        fl = r["flops"]
        lines.append(f"FLOPs: step {fl['step'] / 1e9:.3g} G, forward {fl['forward'] / 1e9:.3g} G; conv peak "
                     f"{r['conv_peak']['gflops']:.3g} GFLOP/s")
    if "soak_skipped" in r:
        lines.append(f"soak skipped: {r['soak_skipped']}")
    for k, s in r.get("soak", {}).items():
        lines.append(f"soak {k}: {s['steps']} steps, RSS {s['rss_mb_after_warmup']:.0f} -> max "
                     f"{s['rss_mb_max_after_warmup']:.0f} MB ({100 * s['rss_growth']:+.1f} %), open files "
                     f"{s['fd_after_warmup']} -> {s['fd_end']}")
    for goal, g in r["goals"].items():
        lines.append(f"  [{'met ' if g['met'] else 'MISS'}] {goal}: {_fmt(g['value'])} (limit {g['limit']})")
    return lines


def format_table(doc: dict) -> str:
    """The measurements and the goals as a plain-text table."""
    m = doc["machine"]
    lines = [f"dragnb bench: {m['cpu']}, {m.get('usable_cores', m['logical_cores'])} cores, "
             f"{doc['threads']} thread(s); load {m.get('loadavg')} -> {m.get('loadavg_end')}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()), ""]
    for name, r in doc["models"].items():
        lines.append(f"== {name}: {r.get('description', '')}; feature block {r['feature_block']} "
                     f"{r['block_shape']}, image {r['image'][0]}x{r['image'][1]}")
        lines += _timing_lines(r) + _memory_lines(r) + _summary_lines(r) + [""]
    return "\n".join(lines)
