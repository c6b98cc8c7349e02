"""Logging for workflow scripts: everything (logging, warnings, tracebacks) goes to the rule's log file, an input
error ends the job with one line instead of a traceback, and long loops report progress at a steady rate."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, TypeVar

from fmextract.errors import InputError

T = TypeVar("T")
#: seconds between two progress lines of a long loop
PROGRESS_EVERY = 10.0


def to_file(path: str) -> None:
    """Send stderr and the `logging` root logger (INFO) to `path`; tracebacks of a failing rule land there too."""
    stream = open(path, "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)


#: where a job's input error is kept, by the job's fingerprint, so a retry of the same job fails at once with it
INPUT_ERRORS = Path(".snakemake") / "fmextract_input_errors"


def _fingerprint(job: Any) -> str:
    """A digest of what a job computes from: rule, wildcards, params, its inputs (path, size, mtime) and the code
    (workflow scripts and this package, by mtime). Equal digests: a retry of the same job on the same inputs."""
    parts = [job.rule, repr(sorted(job.wildcards.items())), repr(sorted(job.params.items()))]
    code = [Path(__file__).parent, Path(job.scriptdir)] if getattr(job, "scriptdir", None) else [Path(__file__).parent]
    files = [Path(str(f)) for f in job.input] + [p for d in code for p in sorted(d.glob("*.py"))]
    for path in files:
        st = path.stat() if path.exists() else None
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}" if st else f"{path}:absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def input_error_line(rule: str, err: BaseException) -> str:
    """The one console line of an input error: the rule and the message (file, key, fix) on one line."""
    return f"fmextract: input error in rule {rule}: " + " ".join(str(err).split())


def start(job: Any) -> None:
    """Begin a workflow script (`job` is the `snakemake` object): log to its log file; an uncaught InputError ends
    the job with one line on the console and in the log (no traceback), and is kept so that a retry of the same job
    (same inputs, params and code: `retries`, or a cluster profile's) fails at once with that line, not recomputing.
    """
    marker = INPUT_ERRORS / f"{_fingerprint(job)}.txt"
    log_path = job.log[0]
    if marker.is_file():
        line = marker.read_text().strip()
        print(line, file=sys.stderr)
        Path(log_path).write_text(f"(the same job failed so before; fix the input to rerun it)\n{line}\n")
        sys.exit(1)
    marker.unlink(missing_ok=True)
    to_file(log_path)
    console = sys.__stderr__
    default_hook = sys.excepthook

    def hook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        if not issubclass(kind, InputError):
            default_hook(kind, err, tb)
            return
        line = input_error_line(job.rule, err)
        print(line, file=sys.stderr, flush=True)  # the log file
        print(line, file=console, flush=True)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(line + "\n")
        except OSError:  # a read-only working folder: the line is printed all the same
            pass

    sys.excepthook = hook


def input_errors_since(start: float) -> list[str]:
    """The input-error lines of jobs that failed since `start` (epoch seconds): the end-of-run summary (onerror)."""
    if not INPUT_ERRORS.is_dir():
        return []
    markers = sorted((p for p in INPUT_ERRORS.glob("*.txt") if p.stat().st_mtime >= start), key=lambda p: p.stat().st_mtime)
    return list(dict.fromkeys(p.read_text().strip() for p in markers))


def _duration(seconds: float) -> str:
    """1h02m03s / 2m03s / 3s."""
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress(
    items: Iterable[T],
    what: str,
    *,
    total: int | None = None,
    every: float = PROGRESS_EVERY,
    enabled: bool = True,
    logger: logging.Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield `items`, logging `what: done/total (percent), rate, elapsed, ETA` at most every `every` seconds.

    A line when the loop starts, one per `every` seconds while it runs, and one when it ends: a rule log shows a
    long step advancing at a steady rate however fast its iterations are. `total` defaults to len(items).
    """
    if not enabled:
        yield from items
        return
    log = logger or logging.getLogger("fmextract.progress")
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = last = clock()
    done = 0
    log.info("%s: started, %s steps", what, f"{total:,}" if total is not None else "unknown number of")

    def line() -> str:
        elapsed = clock() - start
        rate = done / elapsed if elapsed > 0 else float("nan")
        text = f"{what}: {done:,}" + (f"/{total:,} ({done / total:.0%})" if total else "")
        text += f", {rate:.3g}/s, elapsed {_duration(elapsed)}"
        if total and rate > 0 and done < total:
            text += f", ETA {_duration((total - done) / rate)}"
        return text

    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= every:
            last = now
            log.info(line())
    log.info("%s (done)", line())
