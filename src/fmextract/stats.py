"""Paired statistics: Wilcoxon signed-rank (reference vs each method) over splits and over unique test donors, BH.

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
- q-values: Benjamini–Hochberg (``pingouin.multicomp(method="fdr_bh")``) within each BH family (``family``
  column: all endpoints and methods of the family together; without ``families`` every row is one family ``all``).
  The workflow's families (``fmextract.methods.method_family``): ``paper`` (the reference vs the baselines, the
  paper's family), ``controls`` and ``extracted_variants`` — so adding a control never lowers a baseline's q; rows
  without pairs (p NaN) are left out of the correction. Given the paper's endpoints (config ``endpoints.paper``, its
  eight classification endpoints), a family holds exactly those; every other endpoint (pseudotime) of a family is
  corrected in a family of its own, ``<family>_other_endpoints``.

Donor-level tests (``donor_level_tests``). The splits reuse a few test donors (the paper: 88 splits, 15 donors), so
splits are not independent and split-level tests overstate n. The unit here is the unique test donor:

- pairs are formed and dropped exactly as above; each paired split's test donors come from the splits table
  (rows with ``role == "test"``); a split may hold out several donors;
- bootstrap: a donor-clustered percentile bootstrap (``scipy.stats.bootstrap``, ``paired=True``) of the mean
  difference. Unique test donors are resampled with replacement; each drawn donor brings every split in which it is a
  test donor, with weight 1/k for a split holding out k donors (multiple-membership weighting: the split is shared
  equally among its test donors). The statistic is the weighted mean Σ w·d / Σ w over the drawn donors, which on the
  original sample is exactly the plain mean over splits (``mean_diff``), so the interval is centred on it; a split
  comes back with full weight only when all its test donors are drawn. Clustering on whole test-donor sets instead
  would not help, since different sets share donors and would not be independent. Fewer than 2 donors: no interval;
- per-donor test: the difference is averaged per unique test donor over the splits where it is tested, then a
  Wilcoxon signed-rank over donors (``wilcoxon_pair`` on the donor means against 0; n = donors). With k > 1 a split
  enters k donor means, so these are still not fully independent, but n is the number of donors, not splits;
- leave-one-donor-out sensitivity: each donor is left out in turn by dropping every split in which it is tested (a
  split's metric pools its test donors' cells, so it cannot be divided), and the mean difference over the remaining
  splits is recomputed; ``lodo_min_diff``/``lodo_max_diff`` give the range (NaN when a donor is in every split);
- q-values: Benjamini–Hochberg within each family on ``lodo_p_value``, as above.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pingouin
from scipy import stats as sps

from fmextract.errors import InputError

TEST_COLUMNS = ["endpoint", "method", "reference", "family", "n", "n_dropped", "median_diff", "mean_reference",
                "mean_method", "statistic", "p_value", "rank_biserial", "q_value"]
DONOR_COLUMNS = ["endpoint", "method", "reference", "family", "n_splits", "n_dropped", "n_donors", "mean_diff",
                 "median_diff", "ci_low", "ci_high", "lodo_n", "lodo_statistic", "lodo_p_value", "rank_biserial",
                 "lodo_min_diff", "lodo_max_diff", "q_value"]


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


def _pairs(m: pd.DataFrame, reference: str, source: str) -> Iterator[tuple[str, str, pd.DataFrame, int]]:
    """(endpoint, method, splits with both values, number of splits with only one) per comparison with the reference."""
    if reference not in set(m["method"]):
        raise InputError(f"{source}: reference method '{reference}' is not in the metrics table "
                         f"(methods: {sorted(set(m['method']))}); set stats.reference to one of them")
    for endpoint, sub in m.groupby("endpoint", sort=True):
        wide = sub.pivot(index="split", columns="method", values="value")
        if reference not in wide.columns or not wide[reference].notna().any():
            continue
        for method in sorted(c for c in wide.columns if c != reference):
            pair = wide[[reference, method]]
            if pair[method].notna().any():
                both = pair.dropna()
                yield endpoint, method, both, int(pair.notna().any(axis=1).sum() - len(both))


def bh_q_values(p_values: pd.Series) -> np.ndarray:
    """Benjamini-Hochberg q-values (pingouin) across the non-missing p-values; missing ones stay NaN."""
    p = p_values.to_numpy(dtype=float)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = pingouin.multicomp(p[ok], method="fdr_bh")[1]
    return q


#: suffix of the BH family of the endpoints outside the paper's (`family_q_values`).
OTHER_ENDPOINTS = "_other_endpoints"


def family_q_values(table: pd.DataFrame, p_column: str, families: dict[str, str] | None,
                    endpoints: Sequence[str] | None = None) -> pd.DataFrame:
    """Add the `family` column (from `families`: method -> family; default `all`) and BH q-values within each family.

    With `endpoints` (the paper's), rows of any other endpoint go to the family `<family>_other_endpoints`.
    """
    table = table.copy()
    family = table["method"].map(families or {})
    unknown = sorted(set(table.loc[family.isna(), "method"])) if families is not None else []
    if unknown:
        raise InputError(f"statistics: method(s) {unknown} have no BH family; pass every method's family")
    table["family"] = family if families is not None else "all"
    if endpoints is not None:
        other = ~table["endpoint"].isin(list(endpoints))
        table.loc[other, "family"] = table.loc[other, "family"] + OTHER_ENDPOINTS
    table["q_value"] = np.nan
    for _, rows in table.groupby("family", sort=False):
        table.loc[rows.index, "q_value"] = bh_q_values(rows[p_column])
    return table


def wilcoxon_pair(reference: np.ndarray, method: np.ndarray, *, alternative: str = "two-sided") -> dict:
    """Paired Wilcoxon of reference vs method: statistic (W), p_value, rank_biserial; all-zero differences -> p = 1."""
    d = np.asarray(reference, dtype=float) - np.asarray(method, dtype=float)
    if d.size == 0:
        return {"statistic": np.nan, "p_value": np.nan, "rank_biserial": np.nan}
    if np.all(d == 0):
        return {"statistic": 0.0, "p_value": 1.0, "rank_biserial": 0.0}
    res = pingouin.wilcoxon(reference, method, alternative=alternative).iloc[0]
    return {"statistic": float(res["W_val"]), "p_value": float(res["p_val"]), "rank_biserial": float(res["RBC"])}


def paired_tests(metrics: pd.DataFrame, *, reference: str = "extracted", alternative: str = "two-sided",
                 families: dict[str, str] | None = None, endpoints: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (endpoint, method ≠ reference): paired Wilcoxon over shared splits, effect sizes, BH q-value within
    each family (`families`: method -> family name; None: one family; `endpoints`: the paper's, see the docstring)."""
    m = _check_metrics(metrics, "paired_tests")
    if alternative not in ("two-sided", "greater", "less"):
        raise InputError(f"paired_tests: alternative '{alternative}' is unknown; use two-sided, greater or less")
    rows = []
    for endpoint, method, both, n_dropped in _pairs(m, reference, "paired_tests"):
        x, y = both[reference].to_numpy(), both[method].to_numpy()
        rows.append({
            "endpoint": endpoint, "method": method, "reference": reference, "n": len(both), "n_dropped": n_dropped,
            "median_diff": float(np.median(x - y)) if len(both) else np.nan,
            "mean_reference": float(x.mean()) if len(both) else np.nan,
            "mean_method": float(y.mean()) if len(both) else np.nan,
            **wilcoxon_pair(x, y, alternative=alternative),
        })
    table = pd.DataFrame(rows, columns=[c for c in TEST_COLUMNS if c not in ("family", "q_value")])
    return family_q_values(table, "p_value", families, endpoints)[TEST_COLUMNS]


def _test_donors(splits: pd.DataFrame) -> dict[str, frozenset[str]]:
    """Split name -> its set of test donors, from the long splits table (split, donor, role)."""
    missing = [c for c in ("split", "donor", "role") if c not in splits.columns]
    if missing:
        raise InputError(f"donor_level_tests: splits table lacks column(s) {missing}; expected split, donor, role "
                         "(results/splits/splits.tsv)")
    test = splits[splits["role"].astype(str) == "test"]
    return {str(k): frozenset(g.astype(str)) for k, g in test.groupby(test["split"].astype(str))["donor"]}


def _weighted_mean(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """Σ num / Σ den along axis: the cluster-weighted mean difference of a (re)sample of donors."""
    return num.sum(axis=axis) / den.sum(axis=axis)


def _donor_row(d: np.ndarray, member: np.ndarray, *, n_boot: int, seed: int, ci: float) -> dict:
    """Donor-level statistics of split differences `d` given the donor x split test-membership matrix."""
    nan = {k: np.nan for k in ("ci_low", "ci_high", "lodo_statistic", "lodo_p_value", "rank_biserial",
                                "lodo_min_diff", "lodo_max_diff")}
    if d.size == 0:
        return {"mean_diff": np.nan, "median_diff": np.nan, "lodo_n": 0, **nan}
    weight = member / member.sum(axis=0)  # a split holding out k donors gives each of them weight 1/k
    out = {"mean_diff": float(d.mean()), "median_diff": float(np.median(d)), "lodo_n": member.shape[0], **nan}
    if member.shape[0] >= 2:
        boot = sps.bootstrap((weight @ d, weight.sum(axis=1)), _weighted_mean, paired=True, vectorized=True,
                             n_resamples=n_boot, confidence_level=ci, method="percentile",
                             rng=np.random.default_rng(seed))
        out["ci_low"], out["ci_high"] = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    donor_mean = (member @ d) / member.sum(axis=1)
    test = wilcoxon_pair(donor_mean, np.zeros_like(donor_mean))
    out.update(lodo_statistic=test["statistic"], lodo_p_value=test["p_value"], rank_biserial=test["rank_biserial"])
    left_out = [d[~row].mean() for row in member if (~row).any()]
    if left_out:
        out["lodo_min_diff"], out["lodo_max_diff"] = float(min(left_out)), float(max(left_out))
    return out


def donor_level_tests(metrics: pd.DataFrame, splits: pd.DataFrame, *, reference: str = "extracted",
                      n_boot: int = 2000, seed: int = 0, ci: float = 0.95,
                      families: dict[str, str] | None = None, endpoints: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (endpoint, method ≠ reference) on unique test donors (see the module docstring).

    Columns: ``n_splits`` paired splits and ``n_dropped`` unpaired ones (as ``n``/``n_dropped`` in paired_tests);
    ``n_donors`` unique test donors of the paired splits; ``mean_diff``/``median_diff`` of reference − method over
    the paired splits; ``ci_low``/``ci_high`` the donor-clustered bootstrap interval (level ``ci``, ``n_boot``
    resamples, seeded) of ``mean_diff``; ``lodo_n``, ``lodo_statistic`` (W), ``lodo_p_value`` and ``rank_biserial``
    of the Wilcoxon over per-donor mean differences; ``lodo_min_diff``/``lodo_max_diff`` the range of the mean
    difference when each donor's splits are left out in turn; ``q_value`` BH over ``lodo_p_value`` within each
    family (as in `paired_tests`).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"donor_level_tests: stats.n_bootstrap is {n_boot!r}; set a positive integer")
    if not 0 < ci < 1:
        raise InputError(f"donor_level_tests: confidence level {ci!r} must lie strictly between 0 and 1")
    m = _check_metrics(metrics, "donor_level_tests")
    m["split"] = m["split"].astype(str)
    test_sets = _test_donors(splits)
    rows = []
    for endpoint, method, both, n_dropped in _pairs(m, reference, "donor_level_tests"):
        unknown = sorted(set(both.index) - set(test_sets))
        if unknown:
            raise InputError(f"donor_level_tests: split(s) {unknown[:3]} have metrics but no test donor in the "
                             "splits table; rerun the splits rule so metrics and splits.tsv agree")
        donors = sorted(set().union(*(test_sets[s] for s in both.index)))
        member = np.array([[dn in test_sets[s] for s in both.index] for dn in donors], dtype=bool)
        d = both[reference].to_numpy() - both[method].to_numpy()
        rows.append({"endpoint": endpoint, "method": method, "reference": reference, "n_splits": len(both),
                     "n_dropped": n_dropped, "n_donors": len(donors),
                     **_donor_row(d, member.reshape(len(donors), len(both)), n_boot=n_boot, seed=seed, ci=ci)})
    table = pd.DataFrame(rows, columns=[c for c in DONOR_COLUMNS if c not in ("family", "q_value")])
    return family_q_values(table, "lodo_p_value", families, endpoints)[DONOR_COLUMNS]


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method and endpoint: mean, sd (ddof 1), median and number of splits with a finite value."""
    m = _check_metrics(metrics, "summary_table").dropna(subset=["value"])
    out = m.groupby(["method", "endpoint"], as_index=False)["value"].agg(mean="mean", sd="std", median="median",
                                                                          n="count")
    return out.sort_values(["endpoint", "method"], kind="stable", ignore_index=True)
