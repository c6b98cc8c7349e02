"""A job's own deadline: before the last attempt it exits for a retry, on the last it records the timeout, and a
job that finishes in time is left alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fmextract.deadline import RETRY_EXIT

JOB = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from fmextract.deadline import Deadline
    out, attempt, retries, work = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    watchdog = Deadline(0.5, attempt=attempt, retries=retries, what="slow on split000",
                        on_last=lambda exc: out.write_text(f"failed: {exc}")).start()
    time.sleep(work)  # the method
    if watchdog.finish():
        out.write_text("ok")
''')


def job(tmp_path: Path, attempt: int, retries: int, work: float) -> tuple[int, str | None]:
    out = tmp_path / f"out_{attempt}_{work}"
    proc = subprocess.run([sys.executable, "-c", JOB, str(out), str(attempt), str(retries), str(work)], timeout=60)
    return proc.returncode, out.read_text() if out.exists() else None


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_timeout_before_the_last_attempt_exits_for_a_retry(tmp_path, attempt):
    assert job(tmp_path, attempt, retries=2, work=30) == (RETRY_EXIT, None)


def test_a_timeout_on_the_last_attempt_is_recorded_and_the_job_succeeds(tmp_path):
    code, out = job(tmp_path, 3, retries=2, work=30)
    assert code == 0 and out == "failed: slow on split000 ran past its deadline of 0 s on attempt 3 (the last)"


def test_a_job_in_time_writes_its_own_outputs(tmp_path):
    assert job(tmp_path, 1, retries=0, work=0.0) == (0, "ok")
