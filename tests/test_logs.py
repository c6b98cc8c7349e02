"""Progress lines of long loops: a steady rate by the clock, whatever the iteration speed; start and end lines."""

from __future__ import annotations

import logging

from fmextract.logs import progress


class Clock:
    """A fake clock that advances `step` seconds at each reading after the first."""

    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fmextract.progress"]


def test_progress_logs_at_a_steady_rate(caplog):
    caplog.set_level(logging.INFO)
    out = list(progress(range(100), "export", every=10.0, clock=Clock(1.0)))
    assert out == list(range(100))
    got = lines(caplog)
    assert got[0] == "export: started, 100 steps" and got[-1].endswith("(done)") and "100/100 (100%)" in got[-1]
    # one clock reading per step after the first: a line about every 10 steps (10 s), never more often
    assert 8 <= len(got) - 2 <= 11
    assert "ETA" in got[1] and "/s" in got[1]


def test_fast_loops_log_only_start_and_end(caplog):
    caplog.set_level(logging.INFO)
    list(progress(iter(range(1000)), "permutations", every=10.0, clock=Clock(0.001)))
    got = lines(caplog)
    assert len(got) == 2 and "unknown number of" in got[0] and "1,000" in got[1]


def test_disabled_progress_is_silent(caplog):
    caplog.set_level(logging.INFO)
    assert list(progress([1, 2], "x", enabled=False)) == [1, 2]
    assert lines(caplog) == []


JOB_SCRIPT = '''
import sys
from types import SimpleNamespace
from snakemake.iocontainers import Namedlist
from fmextract import logs
from fmextract.errors import InputError

named = lambda **kw: Namedlist(fromdict=kw)
job = SimpleNamespace(rule="prepare", wildcards=named(panel="reference"), params=named(key=sys.argv[1]),
                      input=Namedlist(["panel.h5ad"]), log=Namedlist(["job.log"]), scriptdir=None)
logs.start(job)
print("computing", file=sys.__stdout__, flush=True)
raise InputError("panel.h5ad: obs column 'donor' not found;\\n set panels.reference.donor_key")
'''


def test_an_input_error_is_one_line_and_a_retry_fails_at_once(tmp_path):
    import subprocess
    import sys

    (tmp_path / "job.py").write_text(JOB_SCRIPT)
    (tmp_path / "panel.h5ad").write_text("x")
    run = lambda key: subprocess.run([sys.executable, "job.py", key], cwd=tmp_path, capture_output=True, text=True,
                                     timeout=120)
    line = ("fmextract: input error in rule prepare: panel.h5ad: obs column 'donor' not found; set "
            "panels.reference.donor_key")
    first = run("a")
    assert first.returncode == 1 and first.stderr == line + "\n" and first.stdout == "computing\n"
    assert (tmp_path / "job.log").read_text().endswith(line + "\n")
    retry = run("a")  # same job, same input: the same line at once, nothing recomputed
    assert retry.returncode == 1 and retry.stderr == line + "\n" and retry.stdout == ""
    assert "failed so before" in (tmp_path / "job.log").read_text()
    changed = run("b")  # another config value: computed again
    assert changed.returncode == 1 and changed.stdout == "computing\n"
