"""Downloads of well-known checkpoints: resumable, SHA-256 verified before the file enters the models folder.

The bytes go to ``<download dir>/<file>.part`` (outside the models folder, ``$DRAGNB_DOWNLOADS`` or
``~/.cache/dragnb/downloads``), the first response's validators to ``<file>.part.json`` (written
atomically; a damaged one means starting over). An interrupted download keeps its ``.part`` and the next
call resumes it with an HTTP ``Range`` request only when the remote file is provably the same: a strong
ETag or Last-Modified date (sent as ``If-Range`` and compared with the answer's) and the same length.
Without those, or on any mismatch or a 416 answer, it starts again from byte 0. The final size is checked
against the announced length. Only a complete file whose SHA-256 matches (or, with ``accept_unverified``,
any complete file) is moved into the models folder; a mismatching file is deleted. The file name comes
from the URL's path (never its query), and names with path separators or ``..`` are refused.

About the hashes: NVIDIA and the self-distilled StyleGAN authors publish no checksums, and we have
not recorded any ourselves, so every ``sha256`` in :data:`KNOWN` is ``None`` for now. For such an
entry :func:`download` needs either ``sha256=...`` from a source you trust or ``accept_unverified=True``
(trust on first use: the computed hash is reported in an :class:`UnverifiedDownloadWarning` so it can
be pinned). Fill in the table when hashes of known-good copies are recorded.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_move, atomic_write_text
from .errors import CheckpointError


class DownloadError(CheckpointError):
    """A download that did not produce a verified file (network failure, short file, hash mismatch)."""


class UnverifiedDownloadWarning(UserWarning):
    """A file was accepted without a known SHA-256 (``accept_unverified=True``)."""


@dataclass(frozen=True)
class KnownCheckpoint:
    url: str
    filename: str
    resolution: tuple[int, int]  # (height, width) of the generated images
    sha256: str | None = None    # None: not known to us (see the module docstring)
    note: str = ""


# The largest file a download accepts by default: a training pickle of the largest generator the loaders accept
# (5e8 elements, limits.MAX_ELEMENTS) with its discriminator fits; a server cannot fill the disk beyond it.
MAX_DOWNLOAD_BYTES = 8 << 30

_ADA = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
_SD = "https://storage.googleapis.com/self-distilled-stylegan/"
_TF = "http://d36zk2xti64re0.cloudfront.net/stylegan2/networks/"


def _sq(r: int) -> tuple[int, int]:
    return (r, r)


KNOWN: dict[str, KnownCheckpoint] = {
    # stylegan2-ada-pytorch release
    "ada-ffhq-1024": KnownCheckpoint(_ADA + "ffhq.pkl", "ffhq.pkl", _sq(1024)),
    "ada-metfaces-1024": KnownCheckpoint(_ADA + "metfaces.pkl", "metfaces.pkl", _sq(1024)),
    "ada-afhqcat-512": KnownCheckpoint(_ADA + "afhqcat.pkl", "afhqcat.pkl", _sq(512)),
    "ada-afhqdog-512": KnownCheckpoint(_ADA + "afhqdog.pkl", "afhqdog.pkl", _sq(512)),
    "ada-afhqwild-512": KnownCheckpoint(_ADA + "afhqwild.pkl", "afhqwild.pkl", _sq(512)),
    "ada-brecahad-512": KnownCheckpoint(_ADA + "brecahad.pkl", "brecahad.pkl", _sq(512)),
    "ada-cifar10-32": KnownCheckpoint(_ADA + "cifar10.pkl", "cifar10.pkl", _sq(32),
                                      note="class-conditional (c_dim 10)"),
    # StyleGAN2 networks of the stylegan3 release (NGC); DragGAN uses ffhq-512 and afhqcat-512
    **{
        f"stylegan2-{n}-{r}": KnownCheckpoint(_NGC + f"stylegan2-{n}-{r}x{r}.pkl", f"stylegan2-{n}-{r}x{r}.pkl", _sq(r))
        for n, r in [
            ("ffhq", 256), ("ffhq", 512), ("ffhq", 1024), ("ffhqu", 256), ("ffhqu", 1024), ("afhqv2", 512),
            ("afhqcat", 512), ("celebahq", 256), ("lsundog", 256), ("metfaces", 1024), ("metfacesu", 1024),
            ("brecahad", 512),
        ]
    },
    # Self-distilled StyleGAN (DragGAN's download list, saved under DragGAN's names)
    **{
        f"{n}-{r}": KnownCheckpoint(_SD + f"{n}_{r}_pytorch.pkl", f"stylegan2_{n}_{r}_pytorch.pkl", _sq(r),
                                    note="self-distilled StyleGAN (Mokady et al.)")
        for n, r in [("lions", 512), ("dogs", 1024), ("horses", 256), ("elephants", 512)]
    },
    # TF-era pickles in DragGAN's list (read by the optional TF loader)
    "car-config-f": KnownCheckpoint(_TF + "stylegan2-car-config-f.pkl", "stylegan2-car-config-f.pkl", (512, 512),
                                    note="TensorFlow-era pickle; cars occupy 512x384 of the 512x512 output"),
    "cat-config-f": KnownCheckpoint(_TF + "stylegan2-cat-config-f.pkl", "stylegan2-cat-config-f.pkl", _sq(256),
                                    note="TensorFlow-era pickle"),
}


def downloads_dir() -> Path:
    """Where ``.part`` files live (``$DRAGNB_DOWNLOADS`` or ``~/.cache/dragnb/downloads``)."""
    return Path(os.environ.get("DRAGNB_DOWNLOADS", Path.home() / ".cache" / "dragnb" / "downloads"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_file_name(name) -> str:
    """A plain file name: no folder part, no ``..``, nothing a file system would read otherwise."""
    bad = (not isinstance(name, str) or name in ("", ".", "..") or len(name) > 255
           or any(c in name for c in "/\\\x00"))
    if bad:
        raise ValueError(f"bad file name {name!r}: a plain name is needed (no folders, no '..')")
    return name


def _name_from_url(url: str) -> str:
    """The last segment of the URL's path, percent-decoded (the query and fragment play no part)."""
    segment = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    name = urllib.parse.unquote(segment)
    if not name:
        raise ValueError(f"bad file name: the URL {url!r} does not end in one; pass filename=...")
    return _check_file_name(name)


def _check_hash(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"not a SHA-256 hex digest: {value!r}")
    return value


def _read_state(meta_path: Path, url: str) -> dict:
    """The saved state of a partial download: {} when absent, damaged or for another URL (start over)."""
    try:
        state = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return {}
    if not isinstance(state, dict) or state.get("url") != url:
        return {}
    clean = {"url": url}
    for key in ("etag", "last_modified"):
        if isinstance(state.get(key), str) and 0 < len(state[key]) <= 1000:
            clean[key] = state[key]
    length = state.get("length")
    if isinstance(length, int) and not isinstance(length, bool) and length >= 0:
        clean["length"] = length
    return clean


def _validator(state: dict) -> str | None:
    """What proves the remote file unchanged (for ``If-Range``): a strong ETag, else Last-Modified.

    A weak ETag (``W/...``) only says the content is equivalent, not byte-identical: not enough to splice."""
    etag = state.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return state.get("last_modified")


def _length(value) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib's default also follows ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, "redirect to a non-HTTP URL refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


class _Restart(Exception):
    """The partial file cannot be continued (the remote file changed, or the server refused the range)."""


def _fetch(url: str, part: Path, meta_path: Path, progress: bool, timeout: float, chunk: int, max_bytes: int) -> None:
    """Download ``url`` into ``part``, continuing a partial file only when the remote file is provably the
    one it was started from (same strong ETag or Last-Modified, same length); otherwise from byte 0.
    Raises DownloadError unless ``part`` ends complete (its length checked against the server's)."""
    state = _read_state(meta_path, url)
    have = part.stat().st_size if part.exists() else 0
    resumable = have and _validator(state) and "length" in state and have <= state["length"]
    if resumable and have == state["length"]:
        return  # complete already (interrupted between the last byte and the move)
    if not resumable:
        part.unlink(missing_ok=True)
        have, state = 0, {}
    try:
        _fetch_once(url, part, meta_path, state, have, progress, timeout, chunk, max_bytes)
    except _Restart:
        part.unlink(missing_ok=True)
        _fetch_once(url, part, meta_path, {}, 0, progress, timeout, chunk, max_bytes)


def _too_big(url: str, size: int, max_bytes: int, part: Path, meta_path: Path) -> DownloadError:
    """Delete the partial file and its state; the error to raise for ``size`` bytes over ``max_bytes``."""
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return DownloadError(f"{url}: {size} bytes or more, over the {max_bytes}-byte limit (max_bytes); nothing kept")


def _fetch_once(url, part: Path, meta_path: Path, state: dict, have: int, progress, timeout, chunk,
                max_bytes) -> None:
    headers = {"User-Agent": "dragnb"}
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = _validator(state)
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range is not there: the file is not the one we started
            raise _Restart from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: {e}") from None
    with resp:
        status, h = resp.status, resp.headers
        if status == 206 and have:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", h.get("Content-Range", "").strip())
            same = (
                m is not None and int(m.group(1)) == have and int(m.group(2)) == state["length"]
                and (h.get("ETag") is None or "etag" not in state or h.get("ETag") == state["etag"])
                and (h.get("Last-Modified") is None or "last_modified" not in state
                     or h.get("Last-Modified") == state["last_modified"])
            )
            if not same:
                raise _Restart
            total, mode = state["length"], "ab"
            if total > max_bytes:  # started under a larger limit
                raise _too_big(url, total, max_bytes, part, meta_path)
        elif status == 200:  # the whole file: no range support, or the remote file changed
            have, mode, total = 0, "wb", _length(h.get("Content-Length"))
            if total is not None and total > max_bytes:  # refused before a byte is written
                raise _too_big(url, total, max_bytes, part, meta_path)
            state = {"url": url, "etag": h.get("ETag"), "last_modified": h.get("Last-Modified"), "length": total}
            # written (atomically) before the body, so an interrupted body can be resumed and checked
            atomic_write_text(meta_path, json.dumps({k: v for k, v in state.items() if v is not None}))
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"))
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = resp.read(chunk)
                    except (OSError, ValueError, http.client.HTTPException) as e:  # connection dropped mid-body
                        raise DownloadError(
                            f"{url}: download interrupted ({e}); the partial file {part} is kept, call again to resume"
                        ) from None
                    if not block:
                        break
                    have += len(block)
                    if have > max_bytes:  # no length announced, or more sent than announced
                        f.close()
                        raise _too_big(url, have, max_bytes, part, meta_path)
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(f"{url}: got {size} bytes, more than the {total} announced; the file was deleted")
    if total is not None and size != total:
        raise DownloadError(
            f"{url}: got {size} of {total} bytes; the partial file {part} is kept, call again to resume"
        )


def download(
    name_or_url: str,
    models_dir: str | os.PathLike | None = None,
    *,
    sha256: str | None = None,
    accept_unverified: bool = False,
    filename: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    part_dir: str | os.PathLike | None = None,
    chunk: int = 1 << 20,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Download a checkpoint into ``models_dir`` and return its path; the file there is always verified.

    Args:
        name_or_url: a key of :data:`KNOWN` or an http(s) URL.
        models_dir: destination folder (default: ``dragnb.checkpoints.loader.user_models_dir()``).
        sha256: expected hex digest; overrides the table's. Required (or ``accept_unverified``) when unknown.
        accept_unverified: accept a file with no known hash (trust on first use; warns with the computed hash).
        filename: file name in ``models_dir`` (default: the table's, or the URL's last path component).
        part_dir: where the ``.part`` file lives (default :func:`downloads_dir`; keep it outside ``models_dir``).
        max_bytes: the most bytes accepted (default :data:`MAX_DOWNLOAD_BYTES`): a larger announced length is
            refused before the body, and a body that grows past it is stopped and deleted.
    Raises:
        DownloadError: network failure, short file (the ``.part`` is kept for resuming) or hash mismatch
            (the ``.part`` is deleted). ValueError: no hash and not ``accept_unverified``.
    """
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    entry = KNOWN.get(name_or_url)
    if entry is None and not re.match(r"https?://", name_or_url):
        raise ValueError(f"unknown checkpoint {name_or_url!r}: use a URL or one of {sorted(KNOWN)}")
    url = entry.url if entry else name_or_url
    if filename is None:
        filename = entry.filename if entry else _name_from_url(url)
    _check_file_name(filename)
    expected = _check_hash(sha256) or (entry.sha256 if entry else None)
    if expected is None and not accept_unverified:
        raise ValueError(
            f"no SHA-256 is known for {name_or_url!r}: pass sha256='...' from a source you trust, or "
            "accept_unverified=True to accept the file as downloaded (its hash will be reported)"
        )
    if models_dir is None:
        from .loader import user_models_dir

        models_dir = user_models_dir()
    models_dir, part_dir = Path(models_dir), Path(part_dir) if part_dir is not None else downloads_dir()
    if part_dir.resolve() == models_dir.resolve():
        raise ValueError("part_dir must not be the models folder (partial files stay out of it)")
    dest = models_dir / filename
    if dest.exists():
        if expected is None or sha256_file(dest) == expected:
            return dest
        raise DownloadError(f"{dest} exists but its SHA-256 differs from the expected {expected}; not overwritten")

    part_dir.mkdir(parents=True, exist_ok=True)
    part, meta_path = part_dir / f"{filename}.part", part_dir / f"{filename}.part.json"
    _fetch(url, part, meta_path, progress, timeout, chunk, max_bytes)
    digest = sha256_file(part)
    if expected is not None and digest != expected:
        part.unlink()
        meta_path.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: SHA-256 mismatch (expected {expected}, got {digest}); the file was deleted and not "
            "placed in the models folder"
        )
    if expected is None:
        warnings.warn(
            f"{filename}: accepted without verification; its SHA-256 is {digest} (pin it with sha256=...)",
            UnverifiedDownloadWarning, stacklevel=2,
        )
    atomic_move(part, dest)
    meta_path.unlink(missing_ok=True)
    return dest


def add_download_parser(subparsers) -> None:
    """Register ``download NAME`` (and ``download --list``) on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser("download", help="download a well-known checkpoint (resumable, SHA-256 verified)")
    p.add_argument("name", nargs="?", help=f"a known name ({', '.join(list(KNOWN)[:3])}, ...) or an http(s) URL")
    p.add_argument("--list", action="store_true", help="list the known checkpoints and exit")
    p.add_argument("--models-dir", help="destination folder (default: $DRAGNB_MODELS or ~/.cache/dragnb/models)")
    p.add_argument("--sha256", help="expected SHA-256 (hex) of the file")
    p.add_argument("--accept-unverified", action="store_true",
                   help="accept a file whose SHA-256 is not known (its hash is printed so you can pin it)")
    p.set_defaults(func=_run_download)


def _run_download(args) -> int:
    if args.list or not args.name:
        for name, k in KNOWN.items():
            h, w = k.resolution
            print(f"{name:24s} {h}x{w:<5d} {'sha256 ' + k.sha256[:12] if k.sha256 else 'no known hash'}  {k.url}")
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnverifiedDownloadWarning)
        path = download(args.name, args.models_dir, sha256=args.sha256, accept_unverified=args.accept_unverified)
    for w in caught:
        print(f"warning: {w.message}")
    print(path)
    return 0
