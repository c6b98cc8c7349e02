"""Paired Wilcoxon + BH: equal to scipy + statsmodels on random data; missing pairs dropped and counted; edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from fmextract.errors import InputError
from fmextract.stats import TEST_COLUMNS, paired_tests, summary_table


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
