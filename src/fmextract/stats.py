"""Paired statistics over splits: Wilcoxon signed-rank (reference vs each method), BH across all comparisons.

Conventions:

- pairs are the splits where both the reference and the method have a finite value for the endpoint; splits where
  only one of them does are dropped and counted (``n_dropped``); a (method, endpoint) the method or the reference
  never reports (e.g. a pseudotime-only method on a classification endpoint) gets no row;
- differences are reference − method: positive ``median_diff`` and ``rank_biserial`` favour the reference;
  ``mean_reference`` and ``mean_method`` are over the paired splits only; ``n`` counts pairs, zero differences
  included (the test itself drops them);
- the test is ``pingouin.wilcoxon`` (scipy's signed-rank test with zero differences dropped — ``zero_method="wilcox"``
  — exact for small samples without ties, normal approximation with continuity correction otherwise);
- when every difference is zero the test is undefined; we report statistic 0, p = 1, rank-biserial 0;
- q-values: Benjamini–Hochberg (``pingouin.multicomp(method="fdr_bh")``) across every row of the table (all
  endpoints and methods together); rows without pairs (p NaN) are left out of the correction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin

from fmextract.errors import InputError

TEST_COLUMNS = ["endpoint", "method", "reference", "n", "n_dropped", "median_diff", "mean_reference", "mean_method",
                "statistic", "p_value", "rank_biserial", "q_value"]


def _check_metrics(metrics: pd.DataFrame, source: str) -> pd.DataFrame:
    """The long metrics table with numeric values; one value per (split, method, endpoint)."""
    missing = [c for c in ("split", "method", "endpoint", "value") if c not in metrics.columns]
    if missing:
        raise InputError(f"{source}: metrics table lacks column(s) {missing}; expected split, method, endpoint, value")
    m = metrics[["split", "method", "endpoint", "value"]].copy()
    m["value"] = pd.to_numeric(m["value"], errors="coerce").astype(float)
    dup = m.duplicated(["split", "method", "endpoint"])
    if dup.any():
        first = m[dup].iloc[0]
        raise InputError(f"{source}: metrics table repeats split '{first['split']}', method '{first['method']}', "
                         f"endpoint '{first['endpoint']}'; keep one value per split, method and endpoint")
    return m


def wilcoxon_pair(reference: np.ndarray, method: np.ndarray, *, alternative: str = "two-sided") -> dict:
    """Paired Wilcoxon of reference vs method: statistic (W), p_value, rank_biserial; all-zero differences -> p = 1."""
    d = np.asarray(reference, dtype=float) - np.asarray(method, dtype=float)
    if d.size == 0:
        return {"statistic": np.nan, "p_value": np.nan, "rank_biserial": np.nan}
    if np.all(d == 0):
        return {"statistic": 0.0, "p_value": 1.0, "rank_biserial": 0.0}
    res = pingouin.wilcoxon(reference, method, alternative=alternative).iloc[0]
    return {"statistic": float(res["W_val"]), "p_value": float(res["p_val"]), "rank_biserial": float(res["RBC"])}


def paired_tests(metrics: pd.DataFrame, *, reference: str = "extracted", alternative: str = "two-sided") -> pd.DataFrame:
    """One row per (endpoint, method ≠ reference): paired Wilcoxon over shared splits, effect sizes, BH q-value."""
    m = _check_metrics(metrics, "paired_tests")
    if reference not in set(m["method"]):
        raise InputError(f"paired_tests: reference method '{reference}' is not in the metrics table "
                         f"(methods: {sorted(set(m['method']))}); set stats.reference to one of them")
    if alternative not in ("two-sided", "greater", "less"):
        raise InputError(f"paired_tests: alternative '{alternative}' is unknown; use two-sided, greater or less")
    rows = []
    for endpoint, sub in m.groupby("endpoint", sort=True):
        wide = sub.pivot(index="split", columns="method", values="value")
        if reference not in wide.columns or not wide[reference].notna().any():
            continue
        for method in sorted(c for c in wide.columns if c != reference):
            pair = wide[[reference, method]]
            if not pair[method].notna().any():
                continue
            both = pair.dropna()
            either = pair.notna().any(axis=1).sum()
            x, y = both[reference].to_numpy(), both[method].to_numpy()
            rows.append({
                "endpoint": endpoint, "method": method, "reference": reference, "n": len(both),
                "n_dropped": int(either - len(both)),
                "median_diff": float(np.median(x - y)) if len(both) else np.nan,
                "mean_reference": float(x.mean()) if len(both) else np.nan,
                "mean_method": float(y.mean()) if len(both) else np.nan,
                **wilcoxon_pair(x, y, alternative=alternative),
            })
    table = pd.DataFrame(rows, columns=TEST_COLUMNS[:-1])
    table["q_value"] = np.nan
    ok = table["p_value"].notna().to_numpy()
    if ok.any():
        table.loc[ok, "q_value"] = pingouin.multicomp(table.loc[ok, "p_value"].to_numpy(), method="fdr_bh")[1]
    return table[TEST_COLUMNS]


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method and endpoint: mean, sd (ddof 1), median and number of splits with a finite value."""
    m = _check_metrics(metrics, "summary_table").dropna(subset=["value"])
    out = m.groupby(["method", "endpoint"], as_index=False)["value"].agg(mean="mean", sd="std", median="median",
                                                                          n="count")
    return out.sort_values(["endpoint", "method"], kind="stable", ignore_index=True)
