"""``dragnb bench``: the PyTorch and ONNX Runtime back-ends measured side by side.

For each model (the bundled one, the FFHQ-512 architecture with random weights, or a checkpoint), in ONE
run and with the SAME thread count on both sides:

* **step**: one DragGAN step (forward to the feature block, tracking, losses, backward, Adam) of each
  back-end, the two back-ends alternating step by step on the same drag, so that a change of machine load
  hits both alike; medians (and minima) in milliseconds. The drag never converges (tolerance -1), so every
  step is a full step with an update; no image is rendered (``render_every`` > 1 in ``run()``), and a
  separate row times a step that also renders the image.
* **forward**: one full no-grad inference forward of the synthesis network, PyTorch and ORT (an
  ``InferenceSession`` of ``dragnb.export.export_synthesis``), alternating likewise.
* **first drag**: export + training artifacts + sessions + F0 + one step with an empty artifact cache,
  against a **cached start** (the same, artifacts cached) in a fresh process.
* **memory**: peak RSS of the same drag in separate fresh processes: PyTorch, ORT through dragnb
  (``OrtBackend``, which also holds the PyTorch generator, so torch is loaded), ORT through ``DragSession`` on
  the artifact folder alone with torch unimportable (what the "peak RSS ort <= torch" goal judges: the public
  API's torch-free ORT drag), and the torch-free ORT runtime file alone.
* **soak** (``--soak``): many steps per back-end in a fresh process (a new drag every 100 steps, with and
  without a mask, an image every 10th step): RSS and open-file growth after the warm-up.
* **FLOPs**: convolution and matmul FLOPs of a step and of a forward (``torch.utils.flop_counter``), and
  the machine's peak measured with a large 3x3 convolution, for achieved / peak.

Every number goes to a JSON document (:func:`run_bench`); :func:`format_table` prints the ratios and whether
each goal (``GOALS``: ratios with an upper limit) is met. Nothing here asserts a time: times depend on the
machine and its load, so the tests only check the document's structure.

Modules: ``config`` (names, goals, :class:`BenchConfig`), ``workload`` (models, the drag, back-ends),
``machine``, ``timing``, ``run`` (in-process measurement), ``children`` (fresh-process measurements),
``report`` (document and table), ``cli`` (the command). Importing this package imports none of them: the names
below are loaded on first use, so that ``dragnb.cli`` stays cheap to import.
"""

from ..lazy import lazy_attributes

__all__ = [
    "BACKENDS", "BUNDLED_NAME", "FFHQ512", "GOALS", "BenchConfig", "Drag", "add_bench_parser", "bench",
    "cmd_bench", "default_feature_block", "drag_params", "format_table", "goals", "load_model", "machine_info",
    "make_backend", "measure", "ratios", "run_bench", "run_soak", "time_interleaved",
]

_LAZY = {
    "BACKENDS": ".config", "BUNDLED_NAME": ".config", "FFHQ512": ".config", "GOALS": ".config",
    "BenchConfig": ".config",
    "Drag": ".workload", "default_feature_block": ".workload", "drag_params": ".workload", "load_model": ".workload",
    "make_backend": ".workload",
    "machine_info": ".machine",
    "time_interleaved": ".timing",
    "bench": ".run", "measure": ".run", "run_bench": ".run", "run_soak": ".run",
    "format_table": ".report", "goals": ".report", "ratios": ".report",
    "add_bench_parser": ".cli", "cmd_bench": ".cli",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
