"""A job's own deadline: a method job stops itself shortly before its scheduler would kill it.

SLURM ends a job at its time limit with a signal that no Python code sees through to the end, and Snakemake then
has a failed job without outputs: retried (`retries`), and after the last attempt a hole that stops every table
downstream. A `Deadline` watchdog thread fires at a fraction of the job's runtime instead: before the last attempt
it exits with `RETRY_EXIT` (the job fails; Snakemake resubmits it with runtime and mem_mb x attempt); on the last
attempt it runs `on_last` (the caller writes its outputs with the timeout as a recorded failure) and exits 0, so the
campaign goes on without that split. A thread, not SIGALRM: a signal handler waits for the main thread to leave a
long C call (a solver's fit), a thread runs as soon as the call releases the GIL, as numpy, scikit-learn and torch do.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger("deadline")

#: exit status of a job that timed out before its last attempt (EX_TEMPFAIL: try again)
RETRY_EXIT = 75


class JobTimeout(Exception):
    """A job ran past its own deadline (the message says which job, attempt and runtime)."""


class Deadline:
    """Watchdog over one job: `seconds` after the start it exits for a retry, or on the last attempt calls `on_last`
    (given a JobTimeout) and exits 0. `finish()` claims the outputs for the job itself: after it the watchdog does
    nothing, so the two never write the same outputs."""

    def __init__(self, seconds: float, *, attempt: int, retries: int, what: str,
                 on_last: Callable[[JobTimeout], None]) -> None:
        self.seconds, self.attempt, self.last = float(seconds), int(attempt), int(attempt) > int(retries)
        self.what, self.on_last = what, on_last
        self._claim = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> "Deadline":
        self._timer.start()
        return self

    def finish(self) -> bool:
        """Claim the outputs for the job; False when the watchdog has already fired (it writes them and exits)."""
        self._timer.cancel()
        return self._claim.acquire(blocking=False)

    def error(self) -> JobTimeout:
        return JobTimeout(f"{self.what} ran past its deadline of {self.seconds:.0f} s on attempt {self.attempt}"
                          f"{' (the last)' if self.last else ''}")

    def _fire(self) -> None:
        if not self._claim.acquire(blocking=False):
            return  # the job finished in time and is writing its own outputs
        exc = self.error()
        try:
            if self.last:
                log.error("%s; recorded as failed, the run goes on", exc)
                self.on_last(exc)
            else:
                log.error("%s; exiting for a retry with runtime and mem_mb x %d", exc, self.attempt + 1)
        finally:
            logging.shutdown()
            os._exit(0 if self.last else RETRY_EXIT)
