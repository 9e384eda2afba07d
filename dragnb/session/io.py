"""Session files: a folder (``session.json`` + ``session.npz``) or a ``.json``/``.npz`` pair; no pickle.

The npz is complete on its own: it embeds the JSON document (``session_json``), so one atomic rename keeps
arrays and document consistent; ``session.json`` is a readable copy that :func:`read_session` does not trust.
A session on an in-memory generator also has ``generator.safetensors`` (its weights) beside it.

Reading treats the file as untrusted: only the members the document names are read, each after its npy header
was checked against the member's size and a bound, and every field is type-checked here; values that depend
on the model (points inside the image, shapes of the latents) are checked by ``DragSession`` when it restores
them, through the same validation as its API calls. Every problem is a :class:`SessionFileError`.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import STATE_KEYS, check_state
from ..fileio import atomic_write, atomic_write_text
from .points import MAX_POINTS, PointSet

SESSION_FORMAT = "dragnb-session"
SESSION_VERSION = 1
MAX_HISTORY = 100              # undo steps kept (and read)
MAX_MEMBER_BYTES = 64 << 20    # one array of a session file (a 2048 px mask is 4 MB)
MAX_DOCUMENT_BYTES = 16 << 20  # the embedded JSON document


class SessionFileError(ValueError):
    """A session file that is missing, damaged, hand-edited into nonsense or from another dragnb version."""


@dataclass
class SavedSession:
    """Everything a session file holds. Snapshots are dicts with the keys of ``DragSession._snapshot``."""

    model: dict                      # {"ref": bundled name or absolute path} or {"file": weights file name}
    image_size: list                 # [H, W] pixels
    seed: int
    truncation_psi: float
    backend: str
    latent_space: str
    params: dict                     # DragParams as the user set them (None = derived from the model)
    ws_seed: np.ndarray              # float32 [1, num_ws, w_dim]
    current: dict                    # the state in force (a snapshot)
    history: list = field(default_factory=list)  # undo snapshots, oldest first
    drag_open: bool = False
    drag_steps: int = 0
    c: list | None = None            # class label of a conditional generator (float [c_dim]), else None


def session_paths(path) -> tuple[Path, Path, Path]:
    """(json, npz, generator weights) of a saved session: a folder, or a ``.json``/``.npz`` pair."""
    path = Path(path)
    if path.suffix in (".json", ".npz"):
        return path.with_suffix(".json"), path.with_suffix(".npz"), path.with_suffix(".safetensors")
    return path / "session.json", path / "session.npz", path / "generator.safetensors"


# ----------------------------------------------------------------------------
# Writing


def _points_json(snap: dict) -> dict:
    return {
        "handles": np.asarray(snap["handles"]).tolist(), "targets": np.asarray(snap["targets"]).tolist(),
        "origins": np.asarray(snap["origins"]).tolist(), "has_mask": snap["mask"] is not None,
        "initial_rc": None if snap["initial_rc"] is None else np.asarray(snap["initial_rc"]).tolist(),
        "needs_init": bool(snap["needs_init"]), "n_steps": int(snap["n_steps"]),
    }


def write_session(path, saved: SavedSession) -> Path:
    """Write ``saved`` atomically (npz first, then the readable json); returns the json path."""
    jpath, npath, _ = session_paths(path)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"ws_seed": saved.ws_seed}
    for prefix, snap in [("", saved.current)] + [(f"history/{i}/", s) for i, s in enumerate(saved.history)]:
        for k, v in snap["state"].items():
            arrays[f"{prefix}state/{k}"] = v
        if snap["mask"] is not None:
            arrays[f"{prefix}mask"] = snap["mask"]
    doc = {
        "format": SESSION_FORMAT, "version": SESSION_VERSION, "model": saved.model,
        "image_size": list(saved.image_size), "seed": saved.seed, "truncation_psi": saved.truncation_psi,
        "backend": saved.backend, "latent_space": saved.latent_space, "params": saved.params,
        "c": saved.c, "current": _points_json(saved.current), "drag_open": saved.drag_open,
        "drag_steps": saved.drag_steps,
        "history": [_points_json(s) for s in saved.history],
    }
    text = json.dumps(doc, indent=1)
    arrays["session_json"] = np.array(text)

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(npath, write_npz)
    atomic_write_text(jpath, text)
    return jpath


# ----------------------------------------------------------------------------
# Reading (untrusted input)


def read_session(path) -> SavedSession:
    """The session saved at ``path``; :class:`SessionFileError` naming the file and the reason otherwise
    (``FileNotFoundError`` when there is no session file at all)."""
    _, npath, _ = session_paths(path)
    if not npath.is_file():
        raise FileNotFoundError(f"{npath}: no such session file")
    try:
        with zipfile.ZipFile(npath) as zf:
            doc = _read_document(zf)
            return _saved_from(doc, _Members(zf))
    except SessionFileError as e:
        raise SessionFileError(f"{npath}: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, KeyError, TypeError) as e:
        raise SessionFileError(f"{npath}: not a readable dragnb session ({type(e).__name__}: {str(e)[:200]})") \
            from None


class _Members:
    """Bounded access to the npz members by name (``<name>.npy``)."""

    def __init__(self, zf: zipfile.ZipFile):
        self.zf = zf
        self.infos = {i.filename: i for i in zf.infolist()}

    def __contains__(self, name: str) -> bool:
        return f"{name}.npy" in self.infos

    def __getitem__(self, name: str) -> np.ndarray:
        info = self.infos.get(f"{name}.npy")
        if info is None:
            raise SessionFileError(f"array {name!r} is missing")
        if info.file_size > MAX_MEMBER_BYTES:
            raise SessionFileError(f"array {name!r} declares {info.file_size} bytes (at most {MAX_MEMBER_BYTES})")
        with self.zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if dtype.hasobject:
                raise SessionFileError(f"array {name!r} holds Python objects")
            need = math.prod(shape) * dtype.itemsize
            if need > info.file_size:
                raise SessionFileError(f"array {name!r} declares {need} data bytes in {info.file_size} bytes")
            data = f.read(need)
        if len(data) != need:
            raise SessionFileError(f"array {name!r} is truncated")
        arr = np.frombuffer(data, dtype=dtype)
        return (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()


def _read_document(zf: zipfile.ZipFile) -> dict:
    info = next((i for i in zf.infolist() if i.filename == "session_json.npy"), None)
    if info is None or info.file_size > MAX_DOCUMENT_BYTES:
        raise SessionFileError("not a dragnb session file (no document, or an oversized one)")
    text = _Members(zf)["session_json"]
    if text.dtype.kind != "U" or text.shape != ():
        raise SessionFileError("the session document is not a string")
    doc = json.loads(str(text))
    if not isinstance(doc, dict) or doc.get("format") != SESSION_FORMAT or doc.get("version") != SESSION_VERSION:
        raise SessionFileError(f"not a dragnb session file (format {SESSION_FORMAT!r} version {SESSION_VERSION})")
    return doc


def _field(doc: dict, key: str, types: tuple, what: str):
    """``doc[key]`` if it is one of ``types`` (a bool is not an int here unless bool is named)."""
    if key not in doc:
        raise SessionFileError(f"the document has no {key!r}")
    v = doc[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise SessionFileError(f"{key!r} must be {what}, got {type(v).__name__}")
    return v


def _saved_from(doc: dict, members: _Members) -> SavedSession:
    model = _field(doc, "model", (dict,), "an object")
    if not (isinstance(model.get("ref"), str) or isinstance(model.get("file"), str)):
        raise SessionFileError("'model' must name a model ('ref') or a weights file ('file')")
    if "file" in model and (Path(model["file"]).name != model["file"] or model["file"] in ("", ".", "..")):
        raise SessionFileError("the weights file must be a plain file name beside the session")
    size = _field(doc, "image_size", (list,), "[H, W]")
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 16 for v in size):
        raise SessionFileError(f"'image_size' must be [H, W] in pixels, got {str(size)[:80]}")
    history = _field(doc, "history", (list,), "a list")
    c = doc.get("c")  # absent in files of sessions without a label
    if c is not None and not (isinstance(c, list) and len(c) <= 1 << 16
                              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c)):
        raise SessionFileError("'c' must be a list of numbers (a class label) or null")
    if len(history) > MAX_HISTORY:
        raise SessionFileError(f"{len(history)} undo steps (at most {MAX_HISTORY})")
    return SavedSession(
        model=model, image_size=size,
        seed=_field(doc, "seed", (int,), "an int"),
        truncation_psi=_field(doc, "truncation_psi", (int, float), "a number"),
        backend=_field(doc, "backend", (str,), "a string"),
        latent_space=_field(doc, "latent_space", (str,), "a string"),
        params=_field(doc, "params", (dict,), "an object"),
        ws_seed=members["ws_seed"],
        current=_snapshot(_field(doc, "current", (dict,), "an object"), members, ""),
        history=[_snapshot(m, members, f"history/{i}/") for i, m in enumerate(history)],
        drag_open=bool(_field(doc, "drag_open", (bool,), "a bool")),
        drag_steps=_field(doc, "drag_steps", (int,), "an int"),
        c=c,
    )


def _points(meta: dict, key: str, dtype) -> np.ndarray:
    v = meta.get(key)
    try:
        arr = np.array(v, dtype).reshape(-1, 2)
    except (TypeError, ValueError):
        raise SessionFileError(f"{key!r} must be a list of [a, b] pairs") from None
    if not np.isfinite(arr).all():
        raise SessionFileError(f"{key!r} holds non-finite values")
    return arr


def _snapshot(meta, members: _Members, prefix: str) -> dict:
    if not isinstance(meta, dict):
        raise SessionFileError("a point record must be an object")
    for key in ("handles", "targets", "origins", "has_mask", "initial_rc", "needs_init", "n_steps"):
        if key not in meta:
            raise SessionFileError(f"a point record has no {key!r}")
    if not isinstance(meta["n_steps"], int) or isinstance(meta["n_steps"], bool) or meta["n_steps"] < 0:
        raise SessionFileError("'n_steps' must be an int >= 0")
    return {
        "state": {k: members[f"{prefix}state/{k}"] for k in STATE_KEYS},
        "handles": _points(meta, "handles", float), "targets": _points(meta, "targets", float),
        "origins": _points(meta, "origins", float),
        "mask": members[f"{prefix}mask"] if meta["has_mask"] is True else None,
        "initial_rc": None if meta["initial_rc"] is None else _points(meta, "initial_rc", np.int64),
        "needs_init": bool(meta["needs_init"]), "n_steps": meta["n_steps"],
    }


def check_snapshot(snap: dict, height: int, width: int, num_ws: int, w_dim: int) -> dict:
    """``snap`` (read from a file) if its values are what the API would accept for this model."""
    for k, kinds in (("step", "iu"), ("num_layers", "iu"), ("latent_space", "U")):
        a = snap["state"][k]
        if a.shape != () or a.dtype.kind not in kinds:
            what = "a string" if kinds == "U" else "an int"
            raise SessionFileError(f"optimizer state {k!r} must be a scalar ({what})")
    try:
        check_state(snap["state"], num_ws, w_dim)
    except ValueError as e:
        raise SessionFileError(f"optimizer state: {e}") from None
    for k in ("ws0", "latent", "exp_avg", "exp_avg_sq"):
        a = snap["state"][k]
        if a.dtype != np.float32 or not np.isfinite(a).all():
            raise SessionFileError(f"optimizer state {k!r} must be finite float32")
    if (snap["state"]["exp_avg_sq"] < 0).any():
        raise SessionFileError("optimizer state 'exp_avg_sq' must be >= 0")
    n = len(snap["targets"])
    if n > MAX_POINTS:
        raise SessionFileError(f"{n} point pairs (at most {MAX_POINTS})")
    if not len(snap["handles"]) == len(snap["origins"]) == n:
        raise SessionFileError(f"{len(snap['handles'])} handles, {n} targets, {len(snap['origins'])} origins")
    pts = PointSet(width, height)
    try:
        for h, t, o in zip(snap["handles"], snap["targets"], snap["origins"]):
            pts.check_xy("handle", h), pts.check_xy("origin", o), pts.check_xy("target", t)
    except ValueError as e:
        raise SessionFileError(str(e)) from None
    mask = snap["mask"]
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != (height, width)):
        raise SessionFileError(f"the mask must be bool [{height}, {width}], got {mask.dtype} {list(mask.shape)}")
    rc = snap["initial_rc"]
    if rc is not None and ((rc < 0).any() or (rc[:, 0] >= height).any() or (rc[:, 1] >= width).any()):
        raise SessionFileError("initial handle pixels outside the image")
    if not snap["needs_init"] and (rc is None or len(rc) != n):
        raise SessionFileError("a drag in progress needs one initial handle pixel per point")
    return snap
