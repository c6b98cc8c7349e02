"""Failed method jobs: the table, one line per method that failed on every split, the end-of-run summary."""

from __future__ import annotations

import io
import json

from fmextract.failures import failed_everywhere, failed_jobs, print_summary, summary


def jobs(tmp_path, statuses: dict[tuple[str, str], str | None]) -> list[tuple[str, str]]:
    """Per-split info JSONs as rule run_method writes them; None = job not run (no JSON)."""
    out = []
    for (method, split), error in statuses.items():
        info = tmp_path / f"{method}_{split}.json"
        if error != "missing":
            body = {"method": method, "split": split, "status": "failed" if error else "ok"}
            info.write_text(json.dumps({**body, **({"error": error} if error else {})}))
        out.append((str(info), f"results/logs/methods/{method}/{split}.log"))
    return out


def test_failures_partial_and_everywhere(tmp_path):
    paths = jobs(tmp_path, {
        ("ok", "split000"): None, ("ok", "split001"): None,
        ("flaky", "split000"): None, ("flaky", "split001"): "RuntimeError: planted",
        ("broken", "split000"): "ValueError: bad\nshape", ("broken", "split001"): "ValueError: again",
        ("late", "split000"): "KeyError: x", ("late", "split001"): "missing",
    })
    table, totals = failed_jobs(paths)
    assert table[["method", "split"]].values.tolist() == [
        ["broken", "split000"], ["broken", "split001"], ["flaky", "split001"], ["late", "split000"]]
    assert failed_everywhere(table, totals) == {
        "broken": "fmextract: method broken failed on every split (2 of 2): ValueError: bad shape; "
                  "log: results/logs/methods/broken/split000.log",
        "late": "fmextract: method late failed on every split (1 of 1): KeyError: x; "
                "log: results/logs/methods/late/split000.log",
    }
    lines = summary(table, totals)
    assert lines[2].startswith("fmextract: 1 method job(s) failed") and len(lines) == 4
    assert lines[3] == "  flaky on split001: RuntimeError: planted (log: results/logs/methods/flaky/split001.log)"
    buf = io.StringIO()
    print_summary(paths, file=buf)
    assert buf.getvalue().splitlines() == lines


def test_no_failures_prints_nothing(tmp_path):
    table, totals = failed_jobs(jobs(tmp_path, {("ok", "split000"): None}))
    assert table.empty and summary(table, totals) == [] and failed_everywhere(table, totals) == {}


def test_finished_lines_count_the_splits_the_statistics_use():
    import pandas as pd

    from fmextract.failures import finished_lines

    runtime = pd.DataFrame({"method": ["celltypist"] * 3 + ["pca"] * 2, "split": ["s0", "s1", "s2", "s0", "s1"],
                            "status": ["ok", "failed", "ok", "ok", "ok"]})
    assert finished_lines(runtime) == ["celltypist: 2 of 3 splits", "pca: 2 of 2 splits"]
