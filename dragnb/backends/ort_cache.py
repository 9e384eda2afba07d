"""The ORT artifact cache: one folder per (generator weights, feature block, noise mode, compat mode, export settings).

Layout: ``<root>/ort/<key>/`` with the files of :func:`dragnb.backends.ort_export.generate_training_artifacts`
plus CPU-optimised copies of the graphs (``*.cpu-opt.onnx``, see ``ort_sessions.PREOPTIMIZABLE``), and
``manifest.json`` (format, key, package/torch/onnx/onnxruntime versions, config, every file's size and
sha256). ``key`` is the sha256 of the weights (state dict and config) and of the export settings, which
include the versions and a hash of the source files that define the exported graphs, so a change of any
of them gives a new folder instead of stale artifacts.

Root: the ``root`` argument, else ``$DRAGNB_ARTIFACTS``, else ``artifacts/`` of a source checkout, else
``~/.cache/dragnb/artifacts``.

Safety: a folder is generated in a temporary sibling and renamed into place (atomic on one file system),
under an exclusive ``fcntl`` lock per key, so two sessions starting together generate once and never see
half a folder. Every load verifies sizes and hashes; a missing, truncated or garbled file (or manifest)
makes the set regenerate with an :class:`ArtifactCacheWarning` saying why.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from ..drag.params import DragParams
from ..fileio import atomic_write_text
from .ort_files import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    OPTIMIZERS,
    RUNTIME_FILES,
    ArtifactError,
    file_sha256,
    verify_artifacts,
)
from .ort_sessions import import_onnxruntime, preoptimize

ENV_ROOT = "DRAGNB_ARTIFACTS"
# Bump when the exported graphs change in a way the source hash below cannot see.
EXPORT_VERSION = 3
_PKG = Path(__file__).resolve().parent.parent
# Source files whose code ends up in an artifact folder: in the exported graphs (geometry.py: the resize taps
# are graph constants), or copied there as the torch-free runtime (RUNTIME_FILES).
GRAPH_SOURCES = ("drag/core.py", "drag/geometry.py", "stylegan/ops.py", "stylegan/networks.py",
                 "stylegan/sg3.py", "stylegan/sg3_ops.py", "backends/ort_export.py", "backends/ort_graph.py",
                 "backends/onnx_export.py", *RUNTIME_FILES.values())
_STAGES = 6  # progress-bar steps: export, artifacts, tail, mapping, CPU-optimised copies, manifest

log = logging.getLogger(__name__)


class ArtifactCacheWarning(UserWarning):
    """A cached artifact set was unusable and is being regenerated."""


def default_root() -> Path:
    """``$DRAGNB_ARTIFACTS``, else ``<checkout>/artifacts`` in a source checkout, else ``~/.cache/dragnb/artifacts``."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    checkout = _PKG.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "artifacts"
    return Path.home() / ".cache" / "dragnb" / "artifacts"


def weights_sha256(G) -> str:
    """sha256 of the generator config and every state-dict tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(G.cfg.to_dict(), sort_keys=True).encode())
    for name, t in sorted(G.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def export_settings(feature_block: int, noise_mode: str, compat: str = "dragnb") -> dict:
    """Everything besides the weights that determines the artifacts."""
    from importlib.metadata import version

    import torch

    onnxruntime = import_onnxruntime()
    onnx_version = version("onnx")  # without importing onnx (the cached start does not need it)

    from .. import __version__
    from .onnx_export import OPSET  # not from ort_export: a cached start imports neither onnx nor torch.onnx

    src = hashlib.sha256()
    for rel in GRAPH_SOURCES:
        src.update(rel.encode() + b"\0" + (_PKG / rel).read_bytes())
    return {
        "feature_block": int(feature_block),
        "noise_mode": noise_mode,
        "compat": compat,
        "opset": OPSET,
        "export_version": EXPORT_VERSION,
        "graph_sources_sha256": src.hexdigest(),
        "versions": {"dragnb": __version__, "torch": torch.__version__, "onnx": onnx_version,
                     "onnxruntime": onnxruntime.__version__},
    }


def cache_key(G, feature_block: int, noise_mode: str = "const", compat: str = "dragnb") -> tuple[str, dict]:
    """(key: 24 hex digits, manifest fields that went into it)."""
    fields = {"weights_sha256": weights_sha256(G), "settings": export_settings(feature_block, noise_mode, compat),
              # they go into the manifest
              "drag_params": DragParams.for_artifacts(G, feature_block, noise_mode, compat)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24], fields


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive inter-process lock on ``path`` (fcntl; where fcntl is missing the atomic rename still
    keeps a reader from seeing half a folder, but two starts may both generate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_manifest(folder: Path, key: str, fields: dict, config: dict, seconds: float) -> None:
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != MANIFEST:
            with open(p, "rb") as f:
                os.fsync(f.fileno())  # the rename below must not publish data still in the page cache only
            files[p.name] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, **fields, "config": config,
                "files": files, "generation_seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def _generate(G, feature_block, noise_mode, compat, folder: Path, key, fields, progress: bool) -> None:
    from tqdm.auto import tqdm

    from .ort_export import generate_training_artifacts

    t0 = time.perf_counter()
    bar = tqdm(total=_STAGES, desc=f"ORT artifacts {key[:8]}", disable=not progress, leave=False)
    try:
        def tick(stage):
            bar.set_postfix_str(f"{stage}: done")
            bar.update(1)

        config = generate_training_artifacts(G, feature_block, folder, noise_mode, progress=tick, compat=compat)
        # The forward alone (the training model contains it, and it holds weights) and ORT's optimizer graph
        # (adamw.onnx or torch_adam.onnx is the one the runtime runs) are not kept; nor an unused optimizer.
        (folder / "step.onnx").unlink()
        (folder / "optimizer_model.onnx").unlink()
        for other in {o["file"] for o in OPTIMIZERS.values()} - {config["optimizer"]["file"]}:
            (folder / other).unlink(missing_ok=True)
        for name, rel in RUNTIME_FILES.items():  # the runtime beside its artifacts: `python ort_runtime.py .`
            shutil.copyfile(_PKG / rel, folder / name)
        # A cached start is mostly ORT optimising the graphs; do it once here (ort_sessions.PREOPTIMIZABLE).
        config["preoptimized"] = preoptimize(folder)
        tick("CPU-optimised copies")
        _write_manifest(folder, key, fields, config, time.perf_counter() - t0)
        tick("manifest")
    finally:
        bar.close()


def ensure_artifacts(G, feature_block: int, noise_mode: str = "const", root=None, progress: bool = True,
                     compat: str = "dragnb") -> Path:
    """The verified artifact folder for ``G``: reused when intact, else (re)generated.

    Args:
        G: a ``dragnb.Generator``.
        feature_block: synthesis block index of the DragGAN features.
        noise_mode: "const" or "none".
        root: cache root (default :func:`default_root`); artifacts go to ``<root>/ort/<key>/``.
        progress: show a tqdm bar while generating.
        compat: "dragnb", "official" or "blog" (another mode's step and Adam rule: other graphs, another folder).
    """
    key, fields = cache_key(G, feature_block, noise_mode, compat)
    base = Path(root).expanduser() if root is not None else default_root()
    base = base / "ort"
    final = base / key
    expect = {"key": key, **fields}
    if final.is_dir() and verify_artifacts(final, expect=expect) is None:  # the common case: no lock needed
        return final
    try:
        with _locked(base / ".locks" / f"{key}.lock"):
            return _regenerate(G, feature_block, noise_mode, compat, base, key, fields, progress)
    except OSError as e:  # a read-only cache, a directory where the lock or a file goes, a full disk
        raise ArtifactError(f"ORT artifact cache {base}: cannot make the artifacts for key {key} "
                            f"({type(e).__name__}: {e.strerror or e})") from None


def _regenerate(G, feature_block, noise_mode, compat, base: Path, key: str, fields: dict, progress: bool) -> Path:
    """(under the key's lock) The verified folder: another process's if it finished meanwhile, else made anew."""
    final = base / key
    if final.exists() or final.is_symlink():
        why = verify_artifacts(final, expect={"key": key, **fields})
        if why is None:  # another process finished it while we waited for the lock
            return final
        warnings.warn(f"ORT artifacts {final}: {why}; regenerating them", ArtifactCacheWarning, stacklevel=3)
        bad = base / f".bad-{key}-{os.getpid()}"
        os.rename(final, bad)
        shutil.rmtree(bad, ignore_errors=True)
    for stale in base.glob(f".tmp-{key}-*"):  # left by a generator that died; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    log.info("generating ORT training artifacts in %s (once per model and feature block)", final)
    if next(G.parameters()).device.type != "cpu":  # a GPU session's generator: the export traces CPU inputs
        G = copy.deepcopy(G).cpu()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=base))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published folder is an ordinary cache folder
    try:
        _generate(G, feature_block, noise_mode, compat, tmp, key, fields, progress)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def artifact_files(folder) -> dict:
    """{file name: size in bytes} from a folder's manifest."""
    m = json.loads((Path(folder) / MANIFEST).read_text())
    return {k: v["size"] for k, v in m["files"].items()}
