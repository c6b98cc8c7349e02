"""Downloads against a real loopback HTTP server: resume, retry, no-Range fallback, checksum, 404, local copies."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fmextract.download import download, sha256_file, verify_folder
from fmextract.errors import InputError

FAST = {"retries": 3, "timeout": 5, "chunk_size": 4096, "progress": False, "backoff": 0.01}
PAYLOAD = np.random.default_rng(0).integers(0, 256, size=200_000, dtype=np.uint8).tobytes()
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class FakeServer:
    """Test-controlled state of the loopback server: files, behaviour switches and a request log."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/atlas.h5ad": PAYLOAD}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.ranges = True  # honour Range requests (False: always answer 200 with the whole body)
        self.drop_after: int | None = None  # once: send this many body bytes, then drop the connection
        self.fail_with: list[int] = []  # status codes to answer first, one per request (e.g. 503)
        self.lock = threading.Lock()
        self.url = ""


def _handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    """A GET handler with Range support, a request counter, 404s, scripted errors and one mid-body drop."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, rng))
                fail = state.fail_with.pop(0) if state.fail_with else None
                drop, state.drop_after = state.drop_after, None
            if fail is not None:
                self.send_error(fail)
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start, status = 0, 200
            if rng and state.ranges:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            chunk = body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(chunk)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if drop is not None:
                self.wfile.write(chunk[:drop])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)

    return Handler


@pytest.fixture
def server():
    """A ThreadingHTTPServer on 127.0.0.1, a free port, shut down after the test whatever happens."""
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _no_leftovers(dest: Path) -> None:
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_good_file(server, tmp_path):
    dest = tmp_path / "sub" / "atlas.h5ad"
    out = download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("atlas.h5ad.part").exists()
    assert server.requests == [("/atlas.h5ad", None)]


def test_resume_from_partial_file(server, tmp_path):
    dest = tmp_path / "atlas.h5ad"
    dest.with_name("atlas.h5ad.part").write_bytes(PAYLOAD[:70_000])
    download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert server.requests == [("/atlas.h5ad", "bytes=70000-")]
    assert sha256_file(dest) == DIGEST
    assert not dest.with_name("atlas.h5ad.part").exists()


def test_interruption_then_retry_resumes(server, tmp_path):
    server.drop_after = 50_000
    dest = tmp_path / "atlas.h5ad"
    download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert server.requests == [("/atlas.h5ad", None), ("/atlas.h5ad", "bytes=50000-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.ranges = False
    dest = tmp_path / "atlas.h5ad"
    dest.with_name("atlas.h5ad.part").write_bytes(b"\0" * 30_000)  # wrong bytes: must be overwritten, not appended to
    download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert server.requests == [("/atlas.h5ad", "bytes=30000-")]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_verified_without_body(server, tmp_path):
    dest = tmp_path / "atlas.h5ad"
    dest.with_name("atlas.h5ad.part").write_bytes(PAYLOAD)
    download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert server.requests == [("/atlas.h5ad", f"bytes={len(PAYLOAD)}-")]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "atlas.h5ad"
    wrong = "0" * 64
    with pytest.raises(InputError) as exc:
        download(server.url + "/atlas.h5ad", dest, sha256=wrong, **FAST)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(dest) in msg and wrong in msg and DIGEST in msg and "checksum in the config" in msg and "new file id" in msg
    _no_leftovers(dest)


def test_stale_dest_with_wrong_checksum_is_replaced(server, tmp_path):
    dest = tmp_path / "atlas.h5ad"
    dest.write_bytes(b"old version")
    download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert dest.read_bytes() == PAYLOAD and len(server.requests) == 1


@pytest.mark.parametrize("code, reason", [(404, "Not Found"), (403, "Forbidden")])
def test_client_error_is_one_line_and_not_retried(server, tmp_path, code, reason):
    server.fail_with = [code] * 5
    dest = tmp_path / "atlas.h5ad"
    url = server.url + "/atlas.h5ad"
    with pytest.raises(InputError) as exc:
        download(url, dest, sha256=DIGEST, **FAST)
    msg = str(exc.value)
    assert msg.startswith(f"{url}: HTTP {code} {reason}; check the URL in config") and "\n" not in msg
    assert len(server.requests) == 1
    _no_leftovers(dest)


def test_missing_path_gives_404(server, tmp_path):
    with pytest.raises(InputError, match=r"HTTP 404 Not Found"):
        download(server.url + "/nope.pt", tmp_path / "nope.pt", sha256=DIGEST, **FAST)
    assert len(server.requests) == 1


def test_server_error_is_retried(server, tmp_path):
    server.fail_with = [503, 500]
    dest = tmp_path / "atlas.h5ad"
    download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **FAST)
    assert len(server.requests) == 3 and dest.read_bytes() == PAYLOAD


def test_retries_exhausted_is_one_line_error(server, tmp_path):
    server.fail_with = [503] * 10
    dest = tmp_path / "atlas.h5ad"
    with pytest.raises(InputError, match=r"failed after 3 attempts .*HTTP 503") as exc:
        download(server.url + "/atlas.h5ad", dest, sha256=DIGEST, **{**FAST, "retries": 2})
    assert "\n" not in str(exc.value)
    assert len(server.requests) == 3 and not dest.exists()


def test_connection_refused_is_retried_then_reported(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="failed after 2 attempts"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", sha256=DIGEST, **{**FAST, "retries": 1})


def test_existing_verified_file_is_not_downloaded(server, tmp_path):
    dest = tmp_path / "atlas.h5ad"
    dest.write_bytes(PAYLOAD)
    mtime = dest.stat().st_mtime_ns
    assert download(server.url + "/atlas.h5ad", dest, sha256=DIGEST.upper(), **FAST) == dest
    assert server.requests == [] and dest.stat().st_mtime_ns == mtime


def test_no_checksum_warns(server, tmp_path, caplog):
    dest = tmp_path / "atlas.h5ad"
    with caplog.at_level(logging.WARNING, logger="fmextract.download"):
        download(server.url + "/atlas.h5ad", dest, sha256=None, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert any("no sha256" in r.getMessage() for r in caplog.records)


def test_progress_goes_to_stderr(server, tmp_path, capsys):
    download(server.url + "/atlas.h5ad", tmp_path / "atlas.h5ad", sha256=DIGEST, **{**FAST, "progress": True})
    captured = capsys.readouterr()
    assert "atlas.h5ad" in captured.err and captured.out == ""


def test_bad_checksum_string_is_rejected(tmp_path):
    with pytest.raises(InputError, match="not a 64-character hex digest"):
        download("http://127.0.0.1:9/x", tmp_path / "x", sha256="abc", **FAST)


@pytest.mark.parametrize("as_url", [False, True])
def test_local_file_is_copied_and_verified(tmp_path, as_url):
    src = tmp_path / "user" / "best_model.pt"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "resources" / "best_model.pt"
    url = src.as_uri() if as_url else str(src)
    assert download(url, dest, sha256=DIGEST, **FAST).read_bytes() == PAYLOAD
    assert src.exists()  # copied, not moved
    dest.unlink()
    with pytest.raises(InputError, match="sha256 mismatch"):
        download(url, dest, sha256="f" * 64, **FAST)
    _no_leftovers(dest)


def test_local_source_missing_or_folder(tmp_path):
    with pytest.raises(InputError, match="local file not found"):
        download(str(tmp_path / "absent.pt"), tmp_path / "d.pt", sha256=DIGEST, **FAST)
    with pytest.raises(InputError, match="is a folder"):
        download(str(tmp_path), tmp_path / "d.pt", sha256=DIGEST, **FAST)
    with pytest.raises(InputError, match="unsupported URL scheme"):
        download("ftp://example.org/x", tmp_path / "d.pt", sha256=DIGEST, **FAST)


@pytest.fixture
def checkpoint(tmp_path):
    """A fake scGPT checkpoint folder and the digests of its three files."""
    folder = tmp_path / "scGPT_human"
    folder.mkdir()
    files = {"args.json": b'{"embsize": 512}', "vocab.json": b'{"<pad>": 0}', "best_model.pt": PAYLOAD[:1000]}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_verify_folder_ok(checkpoint):
    folder, sums = checkpoint
    assert verify_folder(folder, sums) == folder


def test_verify_folder_mismatch(checkpoint):
    folder, sums = checkpoint
    (folder / "vocab.json").write_bytes(b"{}")
    with pytest.raises(InputError) as exc:
        verify_folder(folder, sums)
    msg = str(exc.value)
    assert "\n" not in msg and str(folder / "vocab.json") in msg and sums["vocab.json"] in msg
    assert "args.json" not in msg and "update the checksum in the config" in msg


def test_verify_folder_missing(checkpoint, tmp_path):
    folder, sums = checkpoint
    (folder / "best_model.pt").unlink()
    with pytest.raises(InputError, match=r"missing best_model\.pt") as exc:
        verify_folder(folder, sums)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="folder not found"):
        verify_folder(tmp_path / "nowhere", sums)


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(PAYLOAD)
    assert sha256_file(p, chunk_size=777) == DIGEST
