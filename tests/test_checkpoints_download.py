"""Downloads against a local HTTP server on 127.0.0.1 (Range support, interruptions, wrong hashes)."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dragnb.checkpoints.download import KNOWN, DownloadError, UnverifiedDownloadWarning, download

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at /<any>.pkl; honours ``Range: bytes=N-`` unless ``ranges`` is False.

    ``cut_after``: on the next full-body response, send only that many bytes and drop the connection.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.ranges, self.cut_after, self.payload = True, None, PAYLOAD
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(dict(self.headers))
                data, start = outer.payload, 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if m and outer.ranges:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if outer.cut_after is not None:
                    body, outer.cut_after = body[: outer.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/net.pkl"
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


def _get(server, dirs, **kw):
    models, parts = dirs
    kw.setdefault("sha256", SHA)
    return download(server.url, models, part_dir=parts, progress=False, timeout=10, chunk=4096, **kw)


def test_download_verified(server, dirs):
    path = _get(server, dirs)
    assert path == dirs[0] / "net.pkl" and path.read_bytes() == PAYLOAD
    assert list(dirs[1].iterdir()) == []  # no .part left behind
    assert _get(server, dirs) == path and len(server.requests) == 1  # already there: no second request


def test_interrupted_download_is_kept_out_and_resumed(server, dirs):
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="resume"):
        _get(server, dirs)
    assert not dirs[0].exists() or list(dirs[0].iterdir()) == []
    assert (dirs[1] / "net.pkl.part").stat().st_size == 100_000
    path = _get(server, dirs)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1]["Range"] == "bytes=100000-" and server.requests[-1]["If-Range"] == '"v1"'


def test_server_without_range_support_restarts(server, dirs):
    server.cut_after, server.ranges = 50_000, False
    with pytest.raises(DownloadError):
        _get(server, dirs)
    assert _get(server, dirs).read_bytes() == PAYLOAD


def test_hash_mismatch_is_refused(server, dirs):
    server.payload = PAYLOAD[:-1] + b"x"
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        _get(server, dirs)
    assert not (dirs[0] / "net.pkl").exists()
    assert not (dirs[1] / "net.pkl.part").exists()


def test_unknown_hash_needs_consent(server, dirs):
    with pytest.raises(ValueError, match="no SHA-256"):
        _get(server, dirs, sha256=None)
    assert server.requests == []
    with pytest.warns(UnverifiedDownloadWarning, match=SHA):
        path = _get(server, dirs, sha256=None, accept_unverified=True)
    assert path.read_bytes() == PAYLOAD


def test_existing_file_with_other_hash_is_not_overwritten(server, dirs):
    dirs[0].mkdir()
    (dirs[0] / "net.pkl").write_bytes(b"something else")
    with pytest.raises(DownloadError, match="differs"):
        _get(server, dirs)
    assert (dirs[0] / "net.pkl").read_bytes() == b"something else"


def test_known_table():
    assert {"ada-ffhq-1024", "stylegan2-ffhq-512", "stylegan2-afhqcat-512", "lions-512", "dogs-1024"} <= set(KNOWN)
    for k in KNOWN.values():
        assert re.match(r"https?://", k.url) and k.filename.endswith(".pkl")
        assert k.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", k.sha256)
        assert all(r & (r - 1) == 0 for r in k.resolution)
    with pytest.raises(ValueError, match="unknown checkpoint"):
        download("no-such-model", progress=False)


def test_download_cli(server, dirs, capsys, monkeypatch):
    import argparse

    from dragnb.checkpoints.download import add_download_parser

    monkeypatch.setenv("DRAGNB_DOWNLOADS", str(dirs[1]))
    parser = argparse.ArgumentParser(prog="dragnb")
    add_download_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download", "--list"])
    assert args.func(args) == 0 and "lions-512" in capsys.readouterr().out
    args = parser.parse_args(["download", server.url, "--models-dir", str(dirs[0]), "--accept-unverified"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert SHA in out and (dirs[0] / "net.pkl").read_bytes() == PAYLOAD
