"""Resuming downloads only when the remote file is provably the same; never finishing a short file; state
files that survive damage; file names from the URL path. A configurable HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import dragnb.checkpoints.download as dl
from dragnb.checkpoints.download import DownloadError, UnverifiedDownloadWarning, download

A = bytes(range(256)) * 1200           # 300 KiB
B = bytes(reversed(range(256))) * 1200  # same length, other content


class Server:
    """Serves ``payload`` at any path. ``etag`` / ``last_modified``: validators sent (None: not sent);
    ``honor_if_range``: a changed file answers a conditional range with 200 (else 206 regardless);
    ``always_416``: every range request is answered 416; ``cut_after``: the next body stops after that many
    bytes and the connection is dropped; ``length``: Content-Length sent (None: none, the body ends at close)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.payload, self.etag, self.last_modified = A, '"a"', None
        self.honor_if_range, self.always_416, self.cut_after, self.send_length = True, False, None, True
        self.redirect_to = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append({**dict(self.headers), "path": self.path})
                if outer.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.end_headers()
                    return
                data, start, status = outer.payload, 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if m:
                    if outer.always_416:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    cond = self.headers.get("If-Range")
                    current = {outer.etag, outer.last_modified} - {None}
                    if cond is None or cond in current or not outer.honor_if_range:
                        start, status = int(m.group(1)), 206
                body = data[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if outer.send_length:
                    self.send_header("Content-Length", str(len(body)))
                if outer.etag:
                    self.send_header("ETag", outer.etag)
                if outer.last_modified:
                    self.send_header("Last-Modified", outer.last_modified)
                self.end_headers()
                if outer.cut_after is not None:
                    body, outer.cut_after = body[: outer.cut_after], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.base + "/net.pkl"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "models", tmp_path / "partial"


def _get(server, dirs, url=None, **kw):
    kw.setdefault("accept_unverified", True)
    with pytest.warns(UnverifiedDownloadWarning) if kw.get("accept_unverified") else _nothing():
        return download(url or server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, chunk=4096, **kw)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _interrupted(server, dirs, after=30_000):
    server.cut_after = after
    with pytest.raises(DownloadError):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, chunk=4096,
                 accept_unverified=True)
    assert (dirs[1] / "net.pkl.part").stat().st_size == after


def test_416_on_resume_never_finishes_a_short_file(server, dirs):
    _interrupted(server, dirs)
    server.always_416 = True
    path = _get(server, dirs)  # restarts from zero without a range
    assert path.read_bytes() == A
    assert "Range" not in server.requests[-1]


def test_changed_file_without_validators_is_not_spliced(server, dirs):
    server.etag = None
    _interrupted(server, dirs, 100_000)
    server.payload = B
    assert _get(server, dirs).read_bytes() == B  # B, not A[:100000] + B[100000:]
    assert "Range" not in server.requests[-1]


def test_last_modified_is_a_validator(server, dirs):
    server.etag, server.last_modified = None, "Mon, 01 Jan 2024 00:00:00 GMT"
    _interrupted(server, dirs, 100_000)
    assert _get(server, dirs).read_bytes() == A
    assert server.requests[-1]["Range"] == "bytes=100000-"
    assert server.requests[-1]["If-Range"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    _interrupted(server, (dirs[0] / "x", dirs[1]), 100_000)  # again, then the file changes
    server.payload, server.last_modified = B, "Tue, 02 Jan 2024 00:00:00 GMT"
    assert _get(server, (dirs[0] / "x", dirs[1])).read_bytes() == B


def test_a_server_ignoring_if_range_is_caught_by_its_etag(server, dirs):
    _interrupted(server, dirs, 100_000)
    server.payload, server.etag, server.honor_if_range = B, '"b"', False
    assert _get(server, dirs).read_bytes() == B


def test_weak_etags_do_not_allow_resuming(server, dirs):
    server.etag = 'W/"a"'
    _interrupted(server, dirs, 100_000)
    server.payload = B
    assert _get(server, dirs).read_bytes() == B
    assert "Range" not in server.requests[-1]


def test_final_length_is_checked_against_content_length(server, dirs):
    server.send_length = False  # the body ends when the connection closes
    server.cut_after = 50_000
    path = _get(server, dirs)  # nothing says it is short: accepted, and its hash reported by the warning
    assert path.stat().st_size == 50_000
    server.send_length = True
    dirs2 = (dirs[0] / "second", dirs[1] / "second")
    _interrupted(server, dirs2, 100_000)
    state = json.loads((dirs2[1] / "net.pkl.part.json").read_text())
    assert state["length"] == len(A)
    server.payload = A + b"extra"  # same ETag, other length: not the same object
    assert _get(server, dirs2).read_bytes() == A + b"extra"


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"url": 5, "etag": [], "length": "x"}', b"\xff\xfe",
                                    b""])
def test_damaged_state_file_means_start_over(server, dirs, damage):
    _interrupted(server, dirs, 100_000)
    (dirs[1] / "net.pkl.part.json").write_bytes(damage)
    assert _get(server, dirs).read_bytes() == A
    assert "Range" not in server.requests[-1]


def test_state_file_is_written_atomically(server, dirs, monkeypatch):
    written = []
    real = dl.atomic_write_text

    def spy(path, text):
        written.append(path)
        return real(path, text)

    monkeypatch.setattr(dl, "atomic_write_text", spy)
    _interrupted(server, dirs, 100_000)
    assert written and all(str(p).endswith(".part.json") for p in written)
    assert sorted(p.name for p in dirs[1].iterdir()) == ["net.pkl.part", "net.pkl.part.json"]


def test_file_name_comes_from_the_url_path(server, dirs):
    path = _get(server, dirs, url=server.base + "/dir/good.pkl?x=/../evil#/../worse")
    assert path == dirs[0] / "good.pkl"
    assert sorted(p.name for p in dirs[0].iterdir()) == ["good.pkl"]


@pytest.mark.parametrize("tail", ["/a%2F..%2Fevil.pkl", "/..", "/dir/", "/%2e%2e", "/a%5Cb.pkl", "/a%00b.pkl"])
def test_unsafe_names_from_urls_are_refused(server, dirs, tail):
    with pytest.raises(ValueError, match="file name"):
        download(server.base + tail, dirs[0], part_dir=dirs[1], progress=False, accept_unverified=True)
    assert server.requests == []


@pytest.mark.parametrize("name", ["../evil.pkl", "a/b.pkl", "..", ".", "", "a\\b.pkl"])
def test_unsafe_explicit_names_are_refused(server, dirs, name):
    with pytest.raises(ValueError, match="file name"):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, accept_unverified=True, filename=name)


def test_redirects_to_other_schemes_are_refused(server, dirs):
    server.redirect_to = "ftp://127.0.0.1/net.pkl"
    with pytest.raises(DownloadError, match="302"):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, accept_unverified=True)
    server.redirect_to = "file:///etc/passwd"
    with pytest.raises(DownloadError, match="302"):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, accept_unverified=True)
    assert not dirs[0].exists() or not list(dirs[0].iterdir())


def test_size_cap_refuses_announced_and_streamed_excess(server, dirs):
    """More than ``max_bytes``: an announced length is refused before the body, a body without one (or longer
    than announced) is stopped once past the cap; nothing is kept and nothing reaches the models folder."""
    with pytest.raises(DownloadError, match="max_bytes"):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, chunk=4096,
                 accept_unverified=True, max_bytes=len(A) - 1)
    server.send_length = False
    with pytest.raises(DownloadError, match="max_bytes"):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, chunk=4096,
                 accept_unverified=True, max_bytes=100_000)
    assert not list(dirs[1].iterdir()) and not (dirs[0] / "net.pkl").exists()
    # a partial file started under a larger cap is not resumed past a smaller one
    server.send_length = True
    _interrupted(server, dirs)
    with pytest.raises(DownloadError, match="max_bytes"):
        download(server.url, dirs[0], part_dir=dirs[1], progress=False, timeout=10, chunk=4096,
                 accept_unverified=True, max_bytes=len(A) - 1)
    assert not list(dirs[1].iterdir())
    assert _get(server, dirs, max_bytes=len(A)).read_bytes() == A  # exactly the cap is fine
    for bad in (0, -1, 1.5, True, "9"):
        with pytest.raises(ValueError, match="max_bytes"):
            download(server.url, dirs[0] / "x", part_dir=dirs[1], accept_unverified=True, max_bytes=bad)
