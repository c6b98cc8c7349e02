"""Resumable, checksum-verified downloads of atlases and checkpoints into resources/ (standard library only)."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from fmextract.errors import InputError

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Transient(Exception):
    """A failure worth retrying (connection error, timeout, 5xx, short body)."""


def sha256_file(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB files never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def checksum_mismatch(path: str | os.PathLike, *, expected: str, found: str, key: str = "its checksum") -> InputError:
    """The one-line error of a digest mismatch: the file, the expected and found digests, and the two ways out."""
    return InputError(
        f"{path}: sha256 mismatch: expected {expected} ({key}), found {found}; re-download the file, or, if it is a "
        "newer version on purpose (CELLxGENE gives a re-curated dataset a new file id, so a new URL and digest), update "
        "the URL and the checksum in the config together"
    )


def verify_folder(folder: str | os.PathLike, checksums: Mapping[str, str]) -> Path:
    """Check files in `folder` (e.g. scGPT: args.json, vocab.json, best_model.pt) against expected sha256 digests."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found; download it or fix its path in the config")
    expected = {name: _check_digest(d, what=f"{folder / name}") for name, d in checksums.items()}
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"{folder}: missing {', '.join(missing)}; copy the complete folder there (or fix its path in the config)"
        )
    bad = []
    for name, want in expected.items():
        got = sha256_file(folder / name)
        if got != want:
            bad.append(f"{folder / name} (expected sha256 {want}, got {got})")
    if bad:
        raise InputError(
            f"checksum mismatch: {'; '.join(bad)}; re-download the file(s) or, if the new version is intended, "
            "update the checksum in the config"
        )
    return folder


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None,
    retries: int = 3,
    timeout: float = 60,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    backoff: float = 2.0,
) -> Path:
    """Fetch `url` (http(s), file: or a local path) to `dest`: resume a `.part`, retry, verify sha256, then rename."""
    dest = Path(dest)
    want = None if sha256 is None else _check_digest(sha256, what=f"{dest}")
    if want is None:
        log.warning("%s: no sha256 given for %s; the file is not verified (add its checksum to the config)", dest, url)
    if dest.is_file():
        if want is None:
            log.info("%s exists; not downloaded again (no checksum to verify)", dest)
            return dest
        if sha256_file(dest) == want:
            log.info("%s exists and matches its sha256; nothing to do", dest)
            return dest
        log.warning("%s exists but its sha256 differs from the config; downloading it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    source = _local_source(url)
    if source is not None:
        _copy_local(source, part, chunk_size=chunk_size, progress=progress, label=dest.name)
    else:
        _fetch_with_retries(
            url, part, retries=retries, timeout=timeout, chunk_size=chunk_size, progress=progress, backoff=backoff
        )

    if want is not None:
        got = sha256_file(part)
        if got != want:
            part.unlink(missing_ok=True)
            raise checksum_mismatch(f"{dest} (from {url})", expected=want, found=got)
    os.replace(part, dest)
    log.info("%s: downloaded from %s%s", dest, url, "" if want is None else " and verified")
    return dest


def _check_digest(digest: str, *, what: str) -> str:
    """Normalise a sha256 from the config; reject anything that is not 64 hex characters."""
    d = str(digest).strip().lower()
    if not _HEX64.match(d):
        raise InputError(f"{what}: sha256 {digest!r} is not a 64-character hex digest; fix the checksum in the config")
    return d


def _local_source(url: str) -> Path | None:
    """The local path behind a file: URL or a plain path; None for http(s); InputError for other schemes."""
    parsed = urllib.parse.urlparse(str(url))
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if scheme == "" or len(scheme) == 1:  # a plain path (a one-letter scheme is a Windows drive)
        return Path(url)
    raise InputError(f"{url}: unsupported URL scheme {scheme!r}; use http(s), file: or a local path in the config")


def _copy_local(source: Path, part: Path, *, chunk_size: int, progress: bool, label: str) -> None:
    """Copy a user-supplied local file into `part` (whole file, streamed, with progress)."""
    if source.is_dir():
        raise InputError(
            f"{source}: is a folder; give each file of it (e.g. args.json, vocab.json, best_model.pt) in the config, "
            "or check it in place with verify_folder"
        )
    if not source.is_file():
        raise InputError(f"{source}: local file not found; fix the path in the config")
    total = source.stat().st_size
    with open(source, "rb") as src, open(part, "wb") as out:
        bar = _progress(total=total, initial=0, label=label, enabled=progress)
        try:
            while chunk := src.read(chunk_size):
                out.write(chunk)
                bar(len(chunk))
        finally:
            bar(None)


def _fetch_with_retries(
    url: str, part: Path, *, retries: int, timeout: float, chunk_size: int, progress: bool, backoff: float
) -> None:
    """Call `_fetch_http` until it succeeds, sleeping backoff * 2**k between transient failures."""
    for attempt in range(retries + 1):
        try:
            _fetch_http(url, part, timeout=timeout, chunk_size=chunk_size, progress=progress)
            return
        except _Transient as exc:
            if attempt == retries:
                raise InputError(
                    f"{url}: download failed after {retries + 1} attempts ({exc}); check the network or the URL in "
                    f"config and rerun (the partial file {part.name} is kept and resumed)"
                ) from None
            delay = backoff * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.3g s", url, exc, attempt + 1, retries, delay)
            time.sleep(delay)


def _fetch_http(url: str, part: Path, *, timeout: float, chunk_size: int, progress: bool) -> None:
    """One attempt: GET `url` into `part`, resuming with a Range request when `part` already holds bytes."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "fmextract-download", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        code, reason, content_range = e.code, e.reason, e.headers.get("Content-Range", "")
        e.close()
        if code == 416 and have:
            m = re.match(r"bytes\s+\*/(\d+)", content_range)
            if m is None or int(m.group(1)) == have:
                log.info("%s: server says %s is already complete; verifying it", url, part.name)
                return
            part.unlink()
            raise _Transient(f"partial file is larger than the remote file ({have} > {m.group(1)} bytes); restarting")
        if code in _PERMANENT_HTTP or (400 <= code < 500 and code not in (408, 425, 429)):
            raise InputError(f"{url}: HTTP {code} {reason}; check the URL in config (or supply the file locally)")
        raise _Transient(f"HTTP {code} {reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, OSError):
            raise _Transient(f"connection error: {e.reason}") from None
        raise InputError(f"{url}: {e.reason}; check the URL in config") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(f"connection error: {e!r}") from None

    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        if status == 206 and have:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is not None and int(m.group(1)) != have:
                part.unlink()
                raise _Transient(f"server resumed at byte {m.group(1)}, not {have}; restarting from zero")
            start, mode = have, "ab"
        else:
            if have:
                log.info("%s: server ignored the Range request (HTTP %d); restarting from zero", url, status)
            start, mode = 0, "wb"
        total = None if length is None else start + length
        with open(part, mode) as out:
            got = _stream(resp, out, total=total, initial=start, chunk_size=chunk_size, progress=progress, label=part)
    if length is not None and got < length:
        raise _Transient(f"connection closed after {start + got} of {total} bytes")


def _stream(
    resp: BinaryIO, out: BinaryIO, *, total: int | None, initial: int, chunk_size: int, progress: bool, label: Path
) -> int:
    """Copy the response body to `out` in chunks; network errors become `_Transient` after flushing what arrived."""
    bar = _progress(total=total, initial=initial, label=label.name.removesuffix(".part"), enabled=progress)
    got = 0
    try:
        while True:
            try:
                chunk = resp.read(chunk_size)
            except (OSError, http.client.HTTPException) as e:
                raise _Transient(f"connection lost after {initial + got} bytes: {e!r}") from None
            if not chunk:
                return got
            out.write(chunk)
            got += len(chunk)
            bar(len(chunk))
    finally:
        out.flush()
        bar(None)


def _progress(*, total: int | None, initial: int, label: str, enabled: bool) -> Callable[[int | None], None]:
    """A progress callback on stderr (tqdm when installed): call with a byte count, or None to close."""
    if not enabled:
        return lambda n: None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but keep a plain fallback
        done = [initial]

        def plain(n: int | None) -> None:
            if n is not None:
                done[0] += n
            if n is None or done[0] % (64 << 20) < (n or 0):
                print(f"{label}: {done[0]} / {total if total is not None else '?'} bytes", file=sys.stderr)

        return plain
    bar = tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
        mininterval=1.0, leave=True,
    )
    return lambda n: bar.close() if n is None else bar.update(n)


__all__ = ["checksum_mismatch", "download", "sha256_file", "verify_folder"]
