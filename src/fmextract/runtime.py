"""The benchmark's cost as the paper reports it: one-time cache builds vs per-split cost, and a campaign total.

The paper (supplement S23): frozen-scGPT avg-pool cache 5,163.8 s, then 159.2 s per split; extracted cache (drift +
head training) 99.5 s, then 8.8 s per split; a 12-split campaign 205 s vs 7,074 s = 34.5x. `runtime_summary` builds
the same rows from the pipeline's Snakemake `benchmark:` files: the one-time steps behind each method's declared
inputs (cache rules and what they are fitted from) and its per-split jobs (runtime.tsv).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fmextract.errors import InputError

COLUMNS = ["method", "one_time_seconds", "one_time_steps", "n_splits", "per_split_seconds", "per_split_method_seconds",
           "campaign_splits", "campaign_seconds", "reference", "campaign_ratio", "per_split_ratio", "mode"]


def split_seconds(own: Sequence[float], job_of: Sequence[str], job_wall: Mapping[str, float]) -> list[float]:
    """Each split's wall seconds: its own time inside its job (`own`, measured by the job) plus an equal share of the
    rest of the job's wall (`job_wall` of `job_of`: Python start-up, imports, reading the panel). A job of one split
    gets its whole wall; the splits of an all-in-one job share its start-up, and together they sum to its wall."""
    own = [float(x) for x in own]
    mine: dict[str, list[int]] = {}
    for i, job in enumerate(job_of):
        mine.setdefault(job, []).append(i)
    out = list(own)
    for job, idx in mine.items():
        rest = max(float(job_wall[job]) - sum(own[i] for i in idx), 0.0)
        for i in idx:
            out[i] = own[i] + rest / len(idx)
    return out


def runtime_summary(
    runtime: pd.DataFrame, one_time: Mapping[str, Mapping[str, float]], *, reference: str, campaign_splits: int
) -> pd.DataFrame:
    """One row per method: one-time seconds (and its steps), mean per-split job seconds, campaign total and ratios.

    `runtime`: runtime.tsv (method, split, seconds = job wall time, method_seconds = the method call alone; optional
    mode = the method's training mode, reported as its distinct values, e.g. CellTypist's `sgd`).
    `one_time`: method -> {step: seconds} of the one-time builds behind its declared inputs (empty: none).
    campaign_seconds = one_time_seconds + campaign_splits x per_split_seconds (the paper's 12-split campaign);
    campaign_ratio and per_split_ratio divide by the reference method's (the paper: mlp_probe / extracted = 34.5x).
    """
    missing = {"method", "split", "seconds", "method_seconds"} - set(runtime.columns)
    if missing:
        raise InputError(f"runtime table lacks columns {sorted(missing)}; rerun the collect rule")
    if campaign_splits < 1:
        raise InputError(f"stats.campaign_splits={campaign_splits} must be a positive number of splits")
    per_split = runtime.groupby("method").agg(n_splits=("split", "nunique"), per_split_seconds=("seconds", "mean"),
                                              per_split_method_seconds=("method_seconds", "mean"))
    rows = []
    for method, r in per_split.iterrows():
        steps = dict(one_time.get(method, {}))
        total = float(sum(steps.values()))
        rows.append({"method": method, "one_time_seconds": total,
                     "one_time_steps": "; ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items())) or "none",
                     "n_splits": int(r["n_splits"]), "per_split_seconds": float(r["per_split_seconds"]),
                     "per_split_method_seconds": float(r["per_split_method_seconds"]),
                     "campaign_splits": int(campaign_splits),
                     "campaign_seconds": total + campaign_splits * float(r["per_split_seconds"])})
    table = pd.DataFrame(rows, columns=COLUMNS[:8])
    ref = table.set_index("method")
    has_ref = reference in ref.index
    table["reference"] = reference
    table["campaign_ratio"] = table["campaign_seconds"] / ref.loc[reference, "campaign_seconds"] if has_ref else np.nan
    table["per_split_ratio"] = table["per_split_seconds"] / ref.loc[reference, "per_split_seconds"] if has_ref else np.nan
    modes = runtime.get("mode", pd.Series("", index=runtime.index)).fillna("").astype(str)
    table["mode"] = table["method"].map(modes.groupby(runtime["method"]).agg(lambda m: ";".join(sorted(set(m) - {""}))))
    return table[COLUMNS].sort_values("campaign_seconds", ascending=False, kind="stable").reset_index(drop=True)
