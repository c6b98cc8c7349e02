"""The driver shared by bench_apply.py and bench_caches.py: each step in a fresh process, its wall time and peak RSS.

A benchmark script defines `step_<name>(args, work) -> dict` functions, a `--step` option (run one step in this
process, print its report as one JSON line) and calls `run(...)` from its main.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence


def spawn(script: str, step: str, argv: list[str], work: Path) -> dict:
    """Run one step of `script` in a fresh process; its report plus wall time and peak RSS (`os.wait4`)."""
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, *argv, "--step", step, "--workdir", str(work)],
                            stdout=subprocess.PIPE)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"step {step} failed (status {status})")
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    report.update(wall_s=time.perf_counter() - start, peak_rss_gb=usage.ru_maxrss * 1024 / 1e9)
    return report


def run(script: str, args: argparse.Namespace, argv: Sequence[str] | None, steps: Sequence[str],
        steps_here: dict[str, Callable], markdown: Callable[[argparse.Namespace, dict], str], *,
        reuse: dict[str, str]) -> None:
    """`--step`: run that step here; otherwise every step not in `args.skip` in its own process, then the table.

    `reuse` maps a step to the file it makes: with a kept `--workdir` where that file exists, the step is skipped.
    """
    if args.step:
        print(json.dumps(steps_here[f"step_{args.step}"](args, args.workdir)))
        return
    argv = list(argv if argv is not None else sys.argv[1:])
    keep = args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"{Path(script).stem}_"))
    work.mkdir(parents=True, exist_ok=True)
    base = [a for i, a in enumerate(argv) if a != "--workdir" and (i == 0 or argv[i - 1] != "--workdir")]
    reports = {}
    try:
        for step in steps:
            if step in args.skip or (keep and step in reuse and (work / reuse[step]).exists()):
                continue
            reports[step] = spawn(script, step, base, work)
            print(f"{step}: {reports[step]['wall_s']:.1f} s, {reports[step]['peak_rss_gb']:.2f} GB", flush=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(args, reports)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
