"""Endpoints per test donor then averaged: values against sklearn/scipy by hand, skipping rules, partial predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from fmextract.errors import InputError
from fmextract.metrics import check_paper_endpoints, endpoint_metrics, endpoint_names, metrics_table, per_donor_metrics

SUBTYPES = {
    "cd4_cd8": {"positive": ["naive_cd4_t", "memory_cd4_t", "treg"], "negative": ["naive_cd8_t", "effector_cd8_t"]},
    "mono_macro": {"positive": ["macrophage"], "negative": ["classical_monocyte", "nonclassical_monocyte"]},
}


def onehot(labels, classes) -> pd.DataFrame:
    return pd.DataFrame((np.asarray(labels)[:, None] == np.asarray(classes)[None, :]).astype(float), columns=classes)


def test_classification_is_per_donor_then_averaged():
    truth = pd.DataFrame({"donor": ["A"] * 6 + ["B"] * 4,
                          "branch": ["x", "x", "x", "x", "y", "y", "x", "y", "y", "y"]})
    predicted = np.array(["x", "x", "x", "y", "y", "x", "y", "y", "y", "y"])
    pred = {"branch_proba": onehot(predicted, ["x", "y", "z"])}
    out = endpoint_metrics(truth, pred, subtypes=SUBTYPES)
    assert set(out) == {"branch_balanced_accuracy", "branch_macro_f1"}
    a, b = slice(0, 6), slice(6, 10)
    t = truth["branch"].to_numpy()
    bacc = np.mean([balanced_accuracy_score(t[s], predicted[s]) for s in (a, b)])
    f1 = np.mean([f1_score(t[s], predicted[s], average="macro") for s in (a, b)])
    assert out["branch_balanced_accuracy"] == pytest.approx(bacc)
    assert out["branch_macro_f1"] == pytest.approx(f1)
    assert bacc != pytest.approx(balanced_accuracy_score(t, predicted))  # pooled would differ


def test_macro_f1_counts_predicted_labels_absent_from_truth():
    truth = pd.DataFrame({"donor": ["A"] * 4, "stage": ["s1", "s1", "s2", "s2"]})
    predicted = np.array(["s1", "s3", "s2", "s2"])  # s3 is not in this donor's truth
    out = endpoint_metrics(truth, {"stage_proba": onehot(predicted, ["s1", "s2", "s3"])}, subtypes={})
    f1_s1, f1_s2, f1_s3 = 2 / 3, 1.0, 0.0
    assert out["stage_macro_f1"] == pytest.approx((f1_s1 + f1_s2 + f1_s3) / 3)
    assert out["stage_balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # recall over truth classes only


def test_subtype_auroc_excludes_other_cells_and_skips_one_class_donors():
    stage = ["naive_cd4_t", "treg", "naive_cd8_t", "effector_cd8_t", "hsc", "hsc",  # donor A
             "naive_cd4_t", "memory_cd4_t", "hsc"]                                 # donor B: no CD8
    truth = pd.DataFrame({"donor": ["A"] * 6 + ["B"] * 3, "stage": stage})
    score = np.array([0.9, 0.4, 0.6, 0.1, 0.99, 0.0, 0.8, 0.7, 0.1])
    out = endpoint_metrics(truth, {"cd4_cd8_proba": score}, subtypes=SUBTYPES)
    assert set(out) == {"cd4_cd8_auroc", "cd4_cd8_balanced_accuracy"}  # mono_macro: no prediction, no endpoint
    assert out["cd4_cd8_auroc"] == pytest.approx(roc_auc_score([1, 1, 0, 0], score[:4]))  # 0.75, donor B skipped
    assert out["cd4_cd8_balanced_accuracy"] == pytest.approx(balanced_accuracy_score([1, 1, 0, 0], [1, 0, 1, 0]))
    per = per_donor_metrics(truth, {"cd4_cd8_proba": score}, subtypes=SUBTYPES)
    assert np.isnan(per.loc["B", "cd4_cd8_auroc"])
    mono = endpoint_metrics(truth, {"mono_macro_proba": score}, subtypes=SUBTYPES)
    assert set(mono) == {"mono_macro_auroc", "mono_macro_balanced_accuracy"}  # both reported, for every subtype
    assert np.isnan(mono["mono_macro_auroc"]) and np.isnan(mono["mono_macro_balanced_accuracy"])  # no donor has both


def test_nan_subtype_scores_give_nan():
    truth = pd.DataFrame({"donor": ["A"] * 4, "stage": ["naive_cd4_t", "treg", "naive_cd8_t", "effector_cd8_t"]})
    out = endpoint_metrics(truth, {"cd4_cd8_proba": pd.Series(np.full(4, np.nan))}, subtypes=SUBTYPES)
    assert np.isnan(out["cd4_cd8_auroc"])


def test_pseudotime_only_signed_and_abs():
    rng = np.random.default_rng(0)
    depth = np.tile(np.arange(10.0), 2)
    t = np.concatenate([depth[:10] + rng.normal(0, 2, 10), -depth[10:] + rng.normal(0, 2, 10)])
    truth = pd.DataFrame({"donor": ["A"] * 10 + ["B"] * 10, "depth": depth})
    out = endpoint_metrics(truth, {"pseudotime": t}, subtypes=SUBTYPES)
    assert set(out) == {"pseudotime_depth_spearman", "pseudotime_depth_abs_spearman"}
    ra, rb = spearmanr(t[:10], depth[:10]).statistic, spearmanr(t[10:], depth[10:]).statistic
    assert ra > 0 > rb
    assert out["pseudotime_depth_spearman"] == pytest.approx((ra + rb) / 2)
    assert out["pseudotime_depth_abs_spearman"] == pytest.approx((abs(ra) + abs(rb)) / 2)


def test_pseudotime_skips_constant_and_tiny_donors():
    truth = pd.DataFrame({"donor": ["A"] * 4 + ["B"] * 4 + ["C"] * 2, "depth": [0, 1, 2, 3, 1, 1, 1, 1, 0, 1.0]})
    t = np.array([0, 1, 3, 2, 0, 1, 2, 3, 0, 1.0])
    per = per_donor_metrics(truth, {"pseudotime": t}, subtypes={})
    assert per["pseudotime_depth_spearman"].notna().tolist() == [True, False, False]
    assert endpoint_metrics(truth, {"pseudotime": t}, subtypes={})["pseudotime_depth_spearman"] == pytest.approx(0.8)


def test_pandas_predictions_are_aligned_to_obs_order():
    truth = pd.DataFrame({"donor": ["A"] * 4, "branch": ["x", "y", "x", "y"]}, index=["c0", "c1", "c2", "c3"])
    proba = onehot(truth["branch"].to_numpy(), ["x", "y"])
    proba.index = truth.index
    out = endpoint_metrics(truth, {"branch_proba": proba.iloc[[3, 1, 0, 2]]}, subtypes={})
    assert out["branch_balanced_accuracy"] == 1.0


def test_full_prediction_gives_the_paper_endpoints():
    from fmextract.readouts import fit_readouts

    rng = np.random.default_rng(1)
    stages = ["hsc", "naive_cd4_t", "treg", "naive_cd8_t", "classical_monocyte", "macrophage"]
    branch = {"hsc": "stem", "classical_monocyte": "mono", "macrophage": "mono"}
    obs = pd.DataFrame({"stage": np.repeat(stages, 20), "donor": np.tile(["A", "B"], 60)})
    obs["branch"] = obs["stage"].map(branch).fillna("t_nk")
    obs["depth"] = obs["stage"].map({s: float(i) for i, s in enumerate(stages)})
    Z = pd.get_dummies(obs["stage"]).to_numpy(float) * 6 + rng.normal(size=(120, 6))
    pred = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0).predict(Z)
    out = endpoint_metrics(obs, pred, subtypes=SUBTYPES)
    assert set(out) == set(endpoint_names(SUBTYPES))
    assert {"mono_macro_auroc", "mono_macro_balanced_accuracy", "cd4_cd8_balanced_accuracy"} <= set(out)
    assert all(0.9 <= v <= 1 for v in out.values())


def test_paper_endpoints_are_the_configs_eight(root):
    import yaml

    for name in ("config.yaml", "paper.yaml"):
        cfg = yaml.safe_load((root / "config" / name).read_text())["endpoints"]
        paper = check_paper_endpoints(cfg["paper"], cfg["subtypes"])
        assert len(paper) == 8 and not any(e.startswith("pseudotime") for e in paper)
        assert {"mono_macro_balanced_accuracy", "cd4_cd8_auroc", "stage_macro_f1"} <= set(paper)
    with pytest.raises(InputError, match="endpoints.paper: 'pseudotime_depth' is not an endpoint"):
        check_paper_endpoints(["branch_macro_f1", "pseudotime_depth"], SUBTYPES)


def test_bad_inputs():
    truth = pd.DataFrame({"donor": ["A"] * 3, "stage": ["a", "b", "c"]})
    with pytest.raises(InputError, match="unknown key"):
        endpoint_metrics(truth, {"cd4cd8_proba": np.zeros(3)}, subtypes=SUBTYPES)
    with pytest.raises(InputError, match=r"needs obs_test\['depth'\]"):
        endpoint_metrics(truth, {"pseudotime": np.zeros(3)}, subtypes=SUBTYPES)
    with pytest.raises(InputError, match="expected 3 test cells"):
        endpoint_metrics(truth.assign(depth=1.0), {"pseudotime": np.zeros(4)}, subtypes=SUBTYPES)
    with pytest.raises(InputError, match="no column 'donor'"):
        endpoint_metrics(truth.drop(columns="donor"), {"pseudotime": np.zeros(3)}, subtypes=SUBTYPES)
    with pytest.raises(InputError, match="must be a DataFrame"):
        endpoint_metrics(truth, {"stage_proba": np.zeros(3)}, subtypes=SUBTYPES)


def test_metrics_table_long_format_drops_nan():
    rows = [{"split": "split000", "method": "m", "endpoint": "a", "value": 0.5},
            {"split": "split000", "method": "m", "endpoint": "b", "value": np.nan}]
    t = metrics_table(rows)
    assert list(t.columns) == ["split", "method", "endpoint", "value"] and len(t) == 1
    assert len(metrics_table(rows, dropna=False)) == 2
    assert list(metrics_table([]).columns) == ["split", "method", "endpoint", "value"]
    with pytest.raises(InputError, match="lack key"):
        metrics_table([{"split": "s", "value": 1.0}])


def test_coarse_cells_count_for_branch_but_not_for_stage_subtype_or_pseudotime():
    """A coarse label (e.g. 'T cell'): branch endpoints use it; stage, subtype and pseudotime endpoints skip it."""
    from fmextract.readouts import fit_readouts

    rng = np.random.default_rng(0)
    stages = np.array(["naive_cd4_t", "naive_cd8_t", "macrophage", "classical_monocyte"] * 30, dtype=object)
    branch = np.where(np.isin(stages, ["naive_cd4_t", "naive_cd8_t"]), "t_nk", "monocyte_macrophage_dc")
    depth = np.where(stages == "macrophage", 5.0, 4.0)
    obs = pd.DataFrame({"donor": np.repeat(["A", "B"], 60), "stage": stages, "branch": branch, "depth": depth})
    coarse = np.arange(len(obs)) % 5 == 0
    obs.loc[coarse, ["stage", "depth"]] = np.nan
    Z = rng.normal(size=(len(obs), 4)) + pd.get_dummies(stages).to_numpy() @ rng.normal(size=(4, 4)) * 3
    readouts = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0)
    assert "nan" not in set(readouts.classifiers["stage"].classes_)
    pred = readouts.predict(Z)
    per_donor = per_donor_metrics(obs, pred, subtypes=SUBTYPES)
    staged = obs[~coarse].reset_index(drop=True)
    pred_staged = {k: (v[~coarse].reset_index(drop=True) if isinstance(v, (pd.DataFrame, pd.Series)) else v[~coarse])
                   for k, v in pred.items()}
    only_staged = per_donor_metrics(staged, pred_staged, subtypes=SUBTYPES)
    for endpoint in ("stage_balanced_accuracy", "cd4_cd8_auroc", "mono_macro_auroc", "pseudotime_depth_spearman"):
        np.testing.assert_allclose(per_donor[endpoint], only_staged[endpoint])  # coarse cells change nothing
    predicted = pred["branch_proba"].idxmax(axis=1).to_numpy()
    for donor, rows in obs.groupby("donor").indices.items():  # branch: every cell, coarse ones included
        assert per_donor.loc[donor, "branch_balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(obs["branch"].to_numpy()[rows], predicted[rows]))
