"""Shared readouts: train-only scaling, class probabilities, subtype probes, depth, parameter counts, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmextract.errors import InputError
from fmextract.readouts import fit_readouts

SUBTYPES = {
    "cd4_cd8": {"positive": ["naive_cd4_t", "memory_cd4_t", "treg"], "negative": ["naive_cd8_t", "effector_cd8_t"]},
    "mono_macro": {"positive": ["macrophage"], "negative": ["classical_monocyte", "nonclassical_monocyte"]},
}
STAGES = {  # stage -> (branch, depth)
    "hsc": ("stem", 0.0), "naive_cd4_t": ("t_nk", 3.0), "memory_cd4_t": ("t_nk", 4.0), "naive_cd8_t": ("t_nk", 3.0),
    "effector_cd8_t": ("t_nk", 4.0), "classical_monocyte": ("mono", 2.0), "macrophage": ("mono", 3.0),
}


def toy(n_per_stage: int = 40, d: int = 6, seed: int = 0, stages=tuple(STAGES), shift: float = 0.0):
    """Embeddings with one Gaussian cluster per stage (well separated); depth also on a linear axis."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(scale=4.0, size=(len(STAGES), d))
    rows, obs = [], []
    for s in stages:
        i = list(STAGES).index(s)
        z = centres[i] + rng.normal(scale=0.5, size=(n_per_stage, d)) + shift
        z[:, 0] = STAGES[s][1] * 3 + rng.normal(scale=0.2, size=n_per_stage)
        rows.append(z)
        obs += [{"stage": s, "branch": STAGES[s][0], "depth": STAGES[s][1], "donor": "D0"}] * n_per_stage
    return np.vstack(rows), pd.DataFrame(obs)


def test_predictions_shapes_and_quality():
    Z, obs = toy()
    Zt, obs_t = toy(n_per_stage=15, seed=1)
    r = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0)
    pred = r.predict(Zt)
    assert set(pred) == {"branch_proba", "stage_proba", "cd4_cd8_proba", "mono_macro_proba", "pseudotime"}
    for key, col in (("branch_proba", "branch"), ("stage_proba", "stage")):
        p = pred[key]
        assert p.shape == (len(Zt), obs[col].nunique()) and set(p.columns) == set(obs[col])
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
        assert (p.idxmax(axis=1).to_numpy() == obs_t[col].to_numpy()).mean() > 0.95
    cd4 = obs_t["stage"].isin(["naive_cd4_t", "memory_cd4_t"])
    cd8 = obs_t["stage"].isin(["naive_cd8_t", "effector_cd8_t"])
    assert pred["cd4_cd8_proba"][cd4].min() > pred["cd4_cd8_proba"][cd8].max()
    assert np.corrcoef(pred["pseudotime"], obs_t["depth"])[0, 1] > 0.95
    index = pd.Index([f"t{i}" for i in range(len(Zt))])
    assert r.predict(Zt, index=index)["stage_proba"].index.equals(index)


def test_scaler_fit_on_train_only_and_rows_independent():
    Z, obs = toy()
    r = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0)
    np.testing.assert_allclose(r.scaler.mean_, Z.mean(axis=0))
    Zt, _ = toy(n_per_stage=10, seed=2, shift=5.0)  # a shifted test set must not be re-standardised
    full = r.predict(Zt)
    part = r.predict(Zt[:7])
    np.testing.assert_allclose(full["stage_proba"].to_numpy()[:7], part["stage_proba"].to_numpy())
    np.testing.assert_allclose(full["pseudotime"][:7], part["pseudotime"])
    np.testing.assert_allclose(r.scaler.mean_, Z.mean(axis=0))


def test_parameter_counts():
    Z, obs = toy(d=6)
    counts = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0).n_parameters()
    n_branch, n_stage = obs["branch"].nunique(), obs["stage"].nunique()
    assert counts == {"branch": n_branch * 6 + n_branch, "stage": n_stage * 6 + n_stage, "cd4_cd8": 7,
                      "mono_macro": 7, "depth": 7}


def test_one_class_subtype_is_skipped_not_fatal():
    stages = ("hsc", "naive_cd4_t", "memory_cd4_t", "classical_monocyte", "macrophage")  # no CD8 in train
    Z, obs = toy(stages=stages)
    r = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0)
    assert "cd4_cd8" in r.skipped and "cd4_cd8" not in r.n_parameters()
    Zt, _ = toy(n_per_stage=5, seed=1)  # test has stages never seen in training: still predicts
    pred = r.predict(Zt)
    assert pred["cd4_cd8_proba"].isna().all() and pred["mono_macro_proba"].notna().all()
    assert list(pred["stage_proba"].columns) == sorted(stages)


def test_single_branch_gives_constant_probability():
    Z, obs = toy(stages=("naive_cd4_t", "naive_cd8_t"))
    r = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0)
    pred = r.predict(Z[:3])
    assert list(pred["branch_proba"].columns) == ["t_nk"] and (pred["branch_proba"]["t_nk"] == 1).all()
    assert "branch" not in r.n_parameters() and "stage" in r.n_parameters()


def test_deterministic():
    Z, obs = toy()
    a = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0).predict(Z)
    b = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0).predict(Z)
    pd.testing.assert_frame_equal(a["stage_proba"], b["stage_proba"])


def test_bad_inputs():
    Z, obs = toy()
    with pytest.raises(InputError, match="rows but obs_train has"):
        fit_readouts(Z[:-1], obs, subtypes=SUBTYPES, seed=0)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['depth'\]"):
        fit_readouts(Z, obs.drop(columns="depth"), subtypes=SUBTYPES, seed=0)
    with pytest.raises(InputError, match="in both lists"):
        fit_readouts(Z, obs, subtypes={"x": {"positive": ["hsc"], "negative": ["hsc"]}}, seed=0)
    bad = Z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        fit_readouts(bad, obs, subtypes=SUBTYPES, seed=0)
    r = fit_readouts(Z, obs, subtypes=SUBTYPES, seed=0)
    with pytest.raises(InputError, match="same model"):
        r.predict(Z[:, :3])
