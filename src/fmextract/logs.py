"""Logging for workflow scripts: everything (logging, warnings, tracebacks) goes to the rule's log file, and long
loops report progress into it at a steady rate."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

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
