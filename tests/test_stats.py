"""Paired Wilcoxon + BH equal to scipy + statsmodels; donor-level bootstrap, per-donor Wilcoxon, LODO; edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap, rankdata, wilcoxon
from statsmodels.stats.multitest import multipletests

from fmextract.errors import InputError
from fmextract.stats import DONOR_COLUMNS, TEST_COLUMNS, donor_level_tests, paired_tests, summary_table


def random_metrics(seed: int = 0, n_splits: int = 15, decimals: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    shifts = {"extracted": 0.05, "pca": 0.0, "raw": 0.04, "scvi": -0.02}
    for endpoint in ("stage_balanced_accuracy", "branch_macro_f1", "cd4_cd8_auroc"):
        base = rng.uniform(0.5, 0.8, n_splits)
        for method, shift in shifts.items():
            v = base + shift + rng.normal(0, 0.03, n_splits)
            if decimals is not None:
                v = np.round(v, decimals)
            rows += [{"split": f"split{i:03d}", "method": method, "endpoint": endpoint, "value": x}
                     for i, x in enumerate(v)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("decimals", [None, 2])  # continuous (exact test) and tied (normal approximation)
def test_matches_scipy_and_statsmodels(decimals):
    m = random_metrics(decimals=decimals)
    t = paired_tests(m, reference="extracted")
    assert list(t.columns) == TEST_COLUMNS and len(t) == 3 * 3
    assert set(t["method"]) == {"pca", "raw", "scvi"} and (t["reference"] == "extracted").all()
    for row in t.itertuples():
        sub = m[m["endpoint"] == row.endpoint].pivot(index="split", columns="method", values="value")
        x, y = sub["extracted"].to_numpy(), sub[row.method].to_numpy()
        ref = wilcoxon(x, y, correction=True)
        assert row.statistic == pytest.approx(ref.statistic) and row.p_value == pytest.approx(ref.pvalue)
        assert row.median_diff == pytest.approx(np.median(x - y)) and row.n == 15 and row.n_dropped == 0
        assert row.mean_reference == pytest.approx(x.mean()) and row.mean_method == pytest.approx(y.mean())
    q = multipletests(t["p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(t["q_value"], q)
    assert not np.allclose(t["q_value"], multipletests(t["p_value"], method="holm")[1])


def test_rank_biserial_sign_and_value():
    x = np.array([0.9, 0.8, 0.85, 0.7, 0.95, 0.6])
    y = x - np.array([0.1, 0.2, -0.05, 0.3, 0.15, 0.25])
    m = pd.concat([pd.DataFrame({"split": range(6), "method": name, "endpoint": "e", "value": v})
                   for name, v in (("extracted", x), ("pca", y))])
    row = paired_tests(m).iloc[0]
    # ranks of |d|: 0.05->1, 0.1->2, 0.15->3, 0.2->4, 0.25->5, 0.3->6; negative sum 1 of 21
    assert row["rank_biserial"] == pytest.approx((20 - 1) / 21) and row["median_diff"] > 0
    assert row["statistic"] == pytest.approx(1.0)


def test_missing_pairs_dropped_and_counted():
    m = random_metrics(seed=1)
    drop = ((m["method"] == "pca") & m["split"].isin(["split000", "split001"])) | \
           ((m["method"] == "extracted") & (m["split"] == "split002")) | \
           ((m["method"] == "raw") & (m["split"] == "split003"))
    m.loc[(m["method"] == "scvi") & (m["split"] == "split004"), "value"] = np.nan  # NaN counts as missing
    t = paired_tests(m[~drop]).set_index(["endpoint", "method"])
    e = "stage_balanced_accuracy"
    assert (t.loc[(e, "pca"), "n"], t.loc[(e, "pca"), "n_dropped"]) == (12, 3)
    assert (t.loc[(e, "raw"), "n"], t.loc[(e, "raw"), "n_dropped"]) == (13, 2)
    assert (t.loc[(e, "scvi"), "n"], t.loc[(e, "scvi"), "n_dropped"]) == (13, 2)
    sub = m[~drop & (m["endpoint"] == e)].pivot(index="split", columns="method", values="value")
    pair = sub[["extracted", "pca"]].dropna()
    assert t.loc[(e, "pca"), "p_value"] == pytest.approx(wilcoxon(pair["extracted"], pair["pca"], correction=True).pvalue)


def test_all_zero_differences_and_unsupported_endpoints():
    rows = [{"split": s, "method": meth, "endpoint": "stage_macro_f1", "value": 0.7}
            for s in ("a", "b", "c") for meth in ("extracted", "same")]
    rows += [{"split": s, "method": "extracted", "endpoint": "pseudotime_depth_spearman", "value": v}
             for s, v in zip("abc", (0.5, 0.6, 0.7))]
    rows += [{"split": s, "method": "dpt", "endpoint": "pseudotime_depth_spearman", "value": v}
             for s, v in zip("abc", (0.1, 0.2, 0.4))]
    t = paired_tests(pd.DataFrame(rows))
    assert len(t) == 2  # 'same' has no pseudotime, 'dpt' no stage endpoint: no rows for those
    same = t[t["method"] == "same"].iloc[0]
    assert (same["statistic"], same["p_value"], same["rank_biserial"], same["median_diff"]) == (0, 1, 0, 0)
    assert np.isfinite(t["q_value"]).all()


def test_no_shared_split_gives_nan_without_breaking_bh():
    rows = [{"split": "a", "method": "extracted", "endpoint": "e", "value": 0.5},
            {"split": "b", "method": "other", "endpoint": "e", "value": 0.4}]
    rows += [{"split": s, "method": meth, "endpoint": "f", "value": v}
             for s in "abcdef" for meth, v in (("extracted", 0.9), ("other", 0.1 + 0.01 * ord(s) % 7))]
    t = paired_tests(pd.DataFrame(rows)).set_index("endpoint")
    assert t.loc["e", "n"] == 0 and t.loc["e", "n_dropped"] == 2 and np.isnan(t.loc["e", "p_value"])
    assert np.isnan(t.loc["e", "q_value"]) and t.loc["f", "q_value"] == pytest.approx(t.loc["f", "p_value"])


def test_bad_inputs():
    m = random_metrics()
    with pytest.raises(InputError, match="stats.reference"):
        paired_tests(m, reference="nope")
    with pytest.raises(InputError, match="repeats split"):
        paired_tests(pd.concat([m, m.iloc[:1]]))
    with pytest.raises(InputError, match="lacks column"):
        paired_tests(m.drop(columns="value"))
    with pytest.raises(InputError, match="alternative"):
        paired_tests(m, alternative="bigger")


def test_summary_table():
    m = random_metrics()
    m.loc[0, "value"] = np.nan
    s = summary_table(m).set_index(["method", "endpoint"])
    assert {"mean", "sd", "median", "n"} <= set(s.columns) and len(s) == 12
    v = m[(m["method"] == "pca") & (m["endpoint"] == "cd4_cd8_auroc")]["value"]
    assert s.loc[("pca", "cd4_cd8_auroc"), "mean"] == pytest.approx(v.mean())
    assert s.loc[("pca", "cd4_cd8_auroc"), "sd"] == pytest.approx(v.std(ddof=1))
    first = m.iloc[0]
    assert s.loc[(first["method"], first["endpoint"]), "n"] == 14


# ---- donor-level tests: clustered bootstrap, per-donor Wilcoxon, leave-one-donor-out ----------------------------

def donor_panel(seed: int = 0, n_donors: int = 12, n_splits: int = 60, k: int = 2, delta: float = 0.03,
                donor_sd: float = 0.03, noise_sd: float = 0.005) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits from make_splits; reference − pca = delta + mean donor effect of the split's test donors + noise."""
    from fmextract.splits import make_splits

    rng = np.random.default_rng(seed)
    splits = make_splits([f"D{i:02d}" for i in range(n_donors)], n_test_donors=k, seed=seed, n_splits=n_splits)
    effect = dict(zip(sorted(set(splits["donor"])), rng.normal(0, donor_sd, n_donors)))
    rows = []
    for split, donors in splits[splits["role"] == "test"].groupby("split")["donor"]:
        base = rng.uniform(0.5, 0.8)
        diff = delta + np.mean([effect[d] for d in donors]) + rng.normal(0, noise_sd)
        rows += [{"split": split, "method": "extracted", "endpoint": "e", "value": base + diff},
                 {"split": split, "method": "pca", "endpoint": "e", "value": base}]
    return pd.DataFrame(rows), splits


def split_diffs(metrics: pd.DataFrame, endpoint: str = "e", method: str = "pca") -> pd.Series:
    wide = metrics[metrics["endpoint"] == endpoint].pivot(index="split", columns="method", values="value")
    return (wide["extracted"] - wide[method]).dropna()


def donor_means(diffs: pd.Series, splits: pd.DataFrame) -> pd.Series:
    test = splits[(splits["role"] == "test") & splits["split"].isin(diffs.index)]
    return test.assign(d=test["split"].map(diffs)).groupby("donor")["d"].mean()


def test_donor_bootstrap_deterministic_and_covers_truth():
    m, splits = donor_panel()
    row = donor_level_tests(m, splits, seed=3).iloc[0]
    again = donor_level_tests(m, splits, seed=3).iloc[0]
    other = donor_level_tests(m, splits, seed=4).iloc[0]
    assert (row["ci_low"], row["ci_high"]) == (again["ci_low"], again["ci_high"])
    assert (row["ci_low"], row["ci_high"]) != (other["ci_low"], other["ci_high"])
    d = split_diffs(m)
    assert row["mean_diff"] == pytest.approx(d.mean()) and row["median_diff"] == pytest.approx(d.median())
    assert row["ci_low"] < 0.03 < row["ci_high"] and row["ci_low"] < row["mean_diff"] < row["ci_high"]
    # treating splits as independent gives a narrower interval than resampling donors
    naive = bootstrap((d.to_numpy(),), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(3))
    assert row["ci_high"] - row["ci_low"] > 1.25 * (naive.confidence_interval.high - naive.confidence_interval.low)


def test_donor_bootstrap_matches_explicit_cluster_resampling():
    m, splits = donor_panel(seed=1, n_donors=8, n_splits=28, k=2)  # every pair of 8 donors once
    first_test = splits.index[splits["role"] == "test"][::2]
    odd = splits.loc[first_test, "split"].isin([f"split{i:03d}" for i in range(0, 28, 2)])
    splits.loc[first_test[odd.to_numpy()], "role"] = "train"  # half the splits now hold out one donor, half two
    single = (m["method"] == "extracted") & m["split"].isin([f"split{i:03d}" for i in range(0, 28, 2)])
    m.loc[single, "value"] += 0.05  # so that weighting splits by 1/k matters
    row = donor_level_tests(m, splits, n_boot=4000, seed=0).iloc[0]
    d = split_diffs(m)
    test = splits[splits["role"] == "test"]
    k = test.groupby("split").size()
    assert set(k) == {1, 2}
    by_donor = {donor: list(g["split"]) for donor, g in test.groupby("donor")}
    donors = sorted(by_donor)
    rng = np.random.default_rng(123)
    stats = []
    for _ in range(4000):  # each drawn donor brings its splits, a split with k test donors weighted 1/k
        drawn = [s for i in rng.integers(0, len(donors), len(donors)) for s in by_donor[donors[i]]]
        stats.append(np.average(d[drawn], weights=1 / k[drawn]))
    low, high = np.quantile(stats, [0.025, 0.975])
    width = high - low
    assert abs(row["ci_low"] - low) < 0.1 * width and abs(row["ci_high"] - high) < 0.1 * width


def test_donor_bootstrap_coverage():  # 60 panels, 12 donors each tested in 8 splits: donor CI covers, split CI not
    hits_donor, hits_split = 0, 0
    for seed in range(60):
        m, splits = donor_panel(seed=100 + seed, n_donors=12, n_splits=96, k=1)
        row = donor_level_tests(m, splits, n_boot=400, seed=seed).iloc[0]
        hits_donor += row["ci_low"] < 0.03 < row["ci_high"]
        naive = bootstrap((split_diffs(m).to_numpy(),), np.mean, n_resamples=400, method="percentile",
                          rng=np.random.default_rng(seed)).confidence_interval
        hits_split += naive.low < 0.03 < naive.high
    assert hits_donor >= 0.85 * 60 and hits_split <= 0.6 * 60


def test_duplicated_donors_are_less_significant_than_splits():
    m, splits = donor_panel(seed=2, n_donors=6, n_splits=60, k=1, donor_sd=0.005)  # every donor tested 10 times
    row = donor_level_tests(m, splits).iloc[0]
    split_level = paired_tests(m).iloc[0]
    assert (row["n_splits"], row["n_donors"], row["lodo_n"]) == (60, 6, 6)
    assert split_level["p_value"] < 1e-6 and row["lodo_p_value"] == pytest.approx(2 / 2 ** 6)
    assert row["lodo_p_value"] > split_level["p_value"]


@pytest.mark.parametrize("k", [1, 2])
def test_lodo_wilcoxon_and_range_by_hand(k):
    m, splits = donor_panel(seed=5, n_donors=10, n_splits=40, k=k, delta=0.005)
    row = donor_level_tests(m, splits).iloc[0]
    d = split_diffs(m)
    means = donor_means(d, splits)
    ref = wilcoxon(means.to_numpy(), correction=True)
    assert row["n_donors"] == row["lodo_n"] == 10
    assert row["lodo_statistic"] == pytest.approx(ref.statistic) and row["lodo_p_value"] == pytest.approx(ref.pvalue)
    ranks = rankdata(means.abs())
    assert row["rank_biserial"] == pytest.approx((ranks[means > 0].sum() - ranks[means < 0].sum()) / ranks.sum())
    test = splits[splits["role"] == "test"]
    left_out = [d.drop(test.loc[test["donor"] == donor, "split"]).mean() for donor in means.index]
    assert (row["lodo_min_diff"], row["lodo_max_diff"]) == pytest.approx((min(left_out), max(left_out)))


def test_donor_level_bh_and_missing_pairs():
    m = random_metrics(seed=2)
    from fmextract.splits import make_splits

    splits = make_splits([f"D{i}" for i in range(6)], n_test_donors=2, seed=0, n_splits=15)
    drop = ((m["method"] == "pca") & m["split"].isin(["split000", "split001"])) | \
           ((m["method"] == "extracted") & (m["split"] == "split002"))
    t = donor_level_tests(m[~drop], splits, n_boot=200)
    assert list(t.columns) == DONOR_COLUMNS and len(t) == 9
    np.testing.assert_allclose(t["q_value"], multipletests(t["lodo_p_value"], method="fdr_bh")[1])
    assert not np.allclose(t["q_value"], multipletests(t["lodo_p_value"], method="holm")[1])
    split_level = paired_tests(m[~drop])
    assert (t["n_splits"].to_numpy() == split_level["n"].to_numpy()).all()
    assert (t["n_dropped"].to_numpy() == split_level["n_dropped"].to_numpy()).all()
    assert t.loc[t["method"] == "pca", "n_dropped"].eq(3).all() and (t["n_donors"] == 6).all()


def test_donor_level_rows_without_pairs_or_with_one_donor():
    splits = pd.DataFrame({"split": ["a", "a", "b", "b", "c", "c"], "donor": ["x", "y"] * 3,
                           "role": ["test", "train"] * 3})  # donor x is the only test donor
    rows = [{"split": "a", "method": "extracted", "endpoint": "e", "value": 0.5},
            {"split": "b", "method": "other", "endpoint": "e", "value": 0.4}]
    rows += [{"split": s, "method": meth, "endpoint": "f", "value": v}
             for s in "abc" for meth, v in (("extracted", 0.9), ("other", 0.5 + 0.1 * "abc".index(s)))]
    t = donor_level_tests(pd.DataFrame(rows), splits).set_index("endpoint")
    e, f = t.loc["e"], t.loc["f"]
    assert (e["n_splits"], e["n_dropped"], e["n_donors"], e["lodo_n"]) == (0, 2, 0, 0)
    assert e[["mean_diff", "ci_low", "ci_high", "lodo_p_value", "lodo_min_diff", "q_value"]].isna().all()
    assert (f["n_splits"], f["n_donors"]) == (3, 1) and f["mean_diff"] == pytest.approx(0.3)
    assert np.isnan(f["ci_low"]) and np.isnan(f["lodo_min_diff"])  # one donor: nothing to resample or leave out
    assert f["lodo_p_value"] == 1 and f["q_value"] == 1


def test_donor_level_bad_inputs():
    m, splits = donor_panel(n_splits=10)
    with pytest.raises(InputError, match="lacks column"):
        donor_level_tests(m, splits.drop(columns="role"))
    with pytest.raises(InputError, match="no test donor"):
        donor_level_tests(m, splits[splits["split"] != "split003"])
    with pytest.raises(InputError, match="n_bootstrap"):
        donor_level_tests(m, splits, n_boot=0)
    with pytest.raises(InputError, match="confidence level"):
        donor_level_tests(m, splits, ci=95)
    with pytest.raises(InputError, match="stats.reference"):
        donor_level_tests(m, splits, reference="nope")


def test_bh_families_are_separate():
    """BH within each family: adding controls never changes a baseline's q (the paper's family stays as published)."""
    m = random_metrics(seed=3)
    families = {"pca": "paper", "raw": "paper", "scvi": "controls"}
    with_controls = paired_tests(m, families=families)
    baselines_only = paired_tests(m[m["method"] != "scvi"], families=families)
    paper = with_controls[with_controls["family"] == "paper"].reset_index(drop=True)
    np.testing.assert_allclose(paper["q_value"], baselines_only["q_value"])
    np.testing.assert_allclose(paper["q_value"], multipletests(paper["p_value"], method="fdr_bh")[1])
    assert set(with_controls["family"]) == {"paper", "controls"}
    one = paired_tests(m)
    assert (one["family"] == "all").all()
    np.testing.assert_allclose(one["q_value"], multipletests(one["p_value"], method="fdr_bh")[1])
    donor = donor_level_tests(m, splits_of(m), families=families)
    assert list(donor.columns) == DONOR_COLUMNS and set(donor["family"]) == {"paper", "controls"}
    with pytest.raises(InputError, match="no BH family"):
        paired_tests(m, families={"pca": "paper"})


def splits_of(metrics: pd.DataFrame) -> pd.DataFrame:
    """One test donor per split (split i tests donor i % 5)."""
    splits = sorted(metrics["split"].unique())
    return pd.DataFrame([(s, f"d{i % 5}", "test") for i, s in enumerate(splits)], columns=["split", "donor", "role"])


def test_bh_families_hold_exactly_the_paper_endpoints():
    from fmextract.stats import OTHER_ENDPOINTS, family_q_values

    table = pd.DataFrame({"endpoint": ["stage_macro_f1", "cd4_cd8_auroc", "pseudotime_depth_spearman"] * 2,
                          "method": ["raw"] * 3 + ["control_shuffled"] * 3, "p_value": [0.01, 0.04, 0.02] * 2})
    families = {"raw": "paper", "control_shuffled": "controls"}
    out = family_q_values(table, "p_value", families, endpoints=["stage_macro_f1", "cd4_cd8_auroc"])
    assert list(out["family"]) == ["paper", "paper", "paper" + OTHER_ENDPOINTS, "controls", "controls",
                                   "controls" + OTHER_ENDPOINTS]
    np.testing.assert_allclose(out["q_value"], [0.02, 0.04, 0.02] * 2)  # BH over the two paper endpoints only
    pooled = family_q_values(table, "p_value", families)
    np.testing.assert_allclose(pooled["q_value"], [0.03, 0.04, 0.03] * 2)  # without: all three together
