"""Method jobs that failed: the table, the one line per method that failed on every split, the end-of-run summary.

A method that raises on one split is recorded (`status: failed` and the error in its per-split JSON, the traceback
in its log) and loses only that split; a method that fails on every split of the run has nothing to compare, and
the run must say so loudly instead of ending "100% done".
"""

from __future__ import annotations

import json
import os
from typing import Iterable, TextIO

import pandas as pd

COLUMNS = ["method", "split", "error", "log"]


def failed_jobs(jobs: Iterable[tuple[str | os.PathLike, str | os.PathLike]]) -> tuple[pd.DataFrame, pd.Series]:
    """(failed jobs: method, split, error, log; number of recorded splits per method) from (info JSON, log) paths.

    JSON files that do not exist (jobs not run yet, or stopped by `methods_fail_fast`) are skipped.
    """
    rows, totals = [], {}
    for info_path, log_path in jobs:
        if not os.path.exists(info_path):
            continue
        with open(info_path) as fh:
            info = json.load(fh)
        totals[info["method"]] = totals.get(info["method"], 0) + 1
        if info.get("status") == "failed":
            rows.append({"method": info["method"], "split": info["split"], "error": info.get("error", "unknown error"),
                         "log": str(log_path)})
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["method", "split"], kind="stable").reset_index(drop=True)
    return table, pd.Series(totals, dtype=int)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def failed_everywhere(failed: pd.DataFrame, totals: pd.Series) -> dict[str, str]:
    """Method -> its one line, for each method that failed on every split it ran: the first error and its log."""
    lines = {}
    for method, rows in failed.groupby("method", sort=True):
        if len(rows) == totals.get(method, -1):
            first = rows.iloc[0]
            lines[method] = (f"fmextract: method {method} failed on every split ({len(rows)} of {len(rows)}): "
                             f"{_one_line(first['error'])}; log: {first['log']}")
    return lines


def summary(failed: pd.DataFrame, totals: pd.Series) -> list[str]:
    """The lines printed at the end of a run: methods that failed everywhere, then every other failed job."""
    everywhere = failed_everywhere(failed, totals)
    partial = failed[~failed["method"].isin(list(everywhere))]
    lines = list(everywhere.values())
    if len(partial):
        lines.append(f"fmextract: {len(partial)} method job(s) failed and were recorded; their splits are dropped "
                     "from the statistics (results/tables/failures.tsv):")
        lines += [f"  {r.method} on {r.split}: {_one_line(r.error)} (log: {r.log})" for r in partial.itertuples()]
    return lines


def finished_lines(runtime: pd.DataFrame) -> list[str]:
    """One line per method of runtime.tsv (method, split, status): on how many of its splits it finished, e.g.
    "celltypist: 37 of 40 splits"; the statistics run on those."""
    ok = runtime["status"].fillna("ok").eq("ok") if "status" in runtime else pd.Series(True, index=runtime.index)
    counts = pd.DataFrame({"method": runtime["method"], "ok": ok}).groupby("method", sort=True)["ok"].agg(["sum", "size"])
    return [f"{method}: {int(r['sum'])} of {int(r['size'])} splits" for method, r in counts.iterrows()]


def print_summary(jobs: Iterable[tuple[str | os.PathLike, str | os.PathLike]], *, file: TextIO) -> None:
    """Print the summary of the failed jobs among (info JSON, log) paths (the workflow's onsuccess/onerror)."""
    for line in summary(*failed_jobs(jobs)):
        print(line, file=file)
