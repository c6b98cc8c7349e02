"""Baseline method files (workflow/methods/) on a toy branching trajectory: contract, determinism, sanity of scores."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from fmextract.baselines import (
    branch_proba_from_stages,
    donor_local_pseudotime,
    finite_pseudotime,
    progenitor_distance,
    stage_branch_map,
    subtype_proba_from_stages,
)
from fmextract.errors import InputError

METHODS = Path(__file__).resolve().parents[1] / "workflow" / "methods"
STAGES = {  # stage: (branch, depth)
    "hsc": ("stem", 0), "mpp": ("stem", 1),
    "ery_early": ("ery", 2), "ery_late": ("ery", 3),
    "mye_early": ("mye", 2), "mye_late": ("mye", 3),
}


def toy_trajectory(n_donors: int = 4, cells: int = 75, genes: int = 60, seed: int = 0) -> ad.AnnData:
    """Cells along a fork (stem -> erythroid | myeloid) with smooth gene programs, donor shifts and Poisson counts."""
    rng = np.random.default_rng(seed)
    n = n_donors * cells
    t = rng.uniform(0, 1, n)
    fate = rng.integers(0, 2, n)  # 0 erythroid, 1 myeloid; only matters past t = 0.4
    g = genes // 3
    stem = np.exp(-3 * t)[:, None] * np.ones(g)
    ramp = np.clip((t - 0.3) / 0.7, 0, 1)[:, None]
    ery = ramp * (fate == 0)[:, None] * np.ones(g)
    mye = ramp * (fate == 1)[:, None] * np.ones(genes - 2 * g)
    donor = np.repeat(np.arange(n_donors), cells)
    rate = 0.5 + 6 * np.hstack([stem, ery, mye]) * rng.uniform(0.5, 1.5, genes)
    rate *= np.exp(rng.normal(0, 0.1, (n_donors, genes)))[donor]
    counts = rng.poisson(rate * rng.uniform(0.7, 1.3, (n, 1))).astype(np.float32)
    fork = lambda ti, f: ("ery_" if f == 0 else "mye_") + ("late" if ti >= 0.7 else "early")
    stage = ["hsc" if ti < 0.2 else "mpp" if ti < 0.4 else fork(ti, f) for ti, f in zip(t, fate)]
    obs = pd.DataFrame(
        {"donor": [f"D{d}" for d in donor], "tissue": "bone_marrow", "cell_type": stage, "stage": stage},
        index=[f"c{i}" for i in range(n)],
    )
    obs["branch"] = obs["stage"].map(lambda s: STAGES[s][0])
    obs["depth"] = obs["stage"].map(lambda s: STAGES[s][1]).astype(int)
    obs["t"] = t
    X = sp.csr_matrix(counts)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(genes)]))
    adata.layers["counts"] = X.copy()
    lib = np.asarray(counts.sum(axis=1)).ravel()
    adata.X = sp.csr_matrix(np.log1p(counts / lib[:, None] * 1e4).astype(np.float32))
    return adata


@pytest.fixture(scope="module")
def split():
    """3 training donors, 1 test donor with labels hidden (as fmextract.methods.split_views hides them)."""
    adata = toy_trajectory()
    is_test = (adata.obs["donor"] == "D3").to_numpy()
    train, test = adata[~is_test].copy(), adata[is_test].copy()
    truth = test.obs.copy()
    test.obs = test.obs[["donor", "tissue"]].copy()
    return train, test, truth


def params(**extra) -> dict:
    """Runner-style params: seed, threads, inputs, plus the method's own."""
    return {"seed": 0, "threads": 1, "inputs": {}, **extra}


def run(name: str, kind: str, train, test, p: dict):
    """Load a method file through the contract's loader, call its kind's function, pass its output validator."""
    from fmextract.methods import KIND_FUNCTION, check_output, load_method

    out = getattr(load_method(METHODS / f"{name}.py", kind), KIND_FUNCTION[kind])(train, test, p)
    check_output(kind, out, train, test, name)
    return out


def probe_accuracy(z_train, z_test, train, truth) -> float:
    """Stage balanced accuracy of a logistic probe on the embedding (a stand-in for the shared readouts)."""
    probe = LogisticRegression(max_iter=500).fit(z_train, train.obs["stage"])
    return balanced_accuracy_score(truth["stage"], probe.predict(z_test))


def check_proba(df: pd.DataFrame, test) -> None:
    """Probabilities: test cells in order, finite, non-negative, rows summing to 1."""
    assert df.index.equals(test.obs_names)
    assert np.isfinite(df.to_numpy()).all() and (df.to_numpy() >= 0).all()
    np.testing.assert_allclose(df.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ["svd", "scvi", "control_shuffled"])
def test_embeddings_shape_finite_deterministic(split, name):
    train, test, truth = split
    p = params(max_epochs=5) if name == "scvi" else params()
    out = run(name, "embedding", train, test, p)
    z_train, z_test = out[:2]
    assert z_train.shape == (train.n_obs, 10) and z_test.shape == (test.n_obs, 10)
    if name == "svd":  # parameters fitted in the split, for parameters.tsv
        assert out[2] == {"svd_components": 10 * train.n_vars}
    elif name == "scvi":
        assert set(out[2]) == {"scvi_network"} and out[2]["scvi_network"] > 10 * train.n_vars
    else:
        assert len(out) == 2
    assert np.isfinite(z_train).all() and np.isfinite(z_test).all()
    again = run(name, "embedding", train, test, p)
    np.testing.assert_allclose(again[1], z_test, rtol=1e-5, atol=1e-5)
    if name != "control_shuffled":
        assert probe_accuracy(z_train, z_test, train, truth) > 0.6


def test_scvi_trains_when_the_last_mini_batch_is_one_cell(split):
    """n_train = k x batch_size + 1 left a one-cell batch that scVI's batch norm rejects (seen in the paper CI run)."""
    train, test, _ = split
    train = train[: train.n_obs - (train.n_obs % 16) + 1 - (16 if train.n_obs % 16 == 0 else 0)].copy()
    assert train.n_obs % 16 == 1
    z_train, z_test = run("scvi", "embedding", train, test, params(max_epochs=1, batch_size=16))[:2]
    assert z_train.shape == (train.n_obs, 10) and np.isfinite(z_test).all()


def test_control_shuffled_near_chance(split):
    train, test, truth = split
    z_train, z_test = run("control_shuffled", "embedding", train, test, params())
    assert probe_accuracy(z_train, z_test, train, truth) < 0.4  # chance = 1/6
    other = run("control_shuffled", "embedding", train, test, params(seed=1))[1]
    assert not np.allclose(other, z_test)


def test_celltypist_probabilities(split):
    train, test, truth = split
    subtypes = {"ery_mye": {"positive": ["ery_early", "ery_late"], "negative": ["mye_early", "mye_late"]}}
    out = run("celltypist", "classifier", train, test, params(subtypes=subtypes))
    check_proba(out["stage_proba"], test)
    check_proba(out["branch_proba"], test)
    assert set(out["stage_proba"].columns) == set(STAGES)
    assert set(out["branch_proba"].columns) == {"stem", "ery", "mye"}
    assert balanced_accuracy_score(truth["stage"], out["stage_proba"].idxmax(axis=1)) > 0.6
    assert balanced_accuracy_score(truth["branch"], out["branch_proba"].idxmax(axis=1)) > 0.8
    assert out["ery_mye_proba"].shape == (test.n_obs,)
    again = run("celltypist", "classifier", train, test, params(subtypes=subtypes))
    pd.testing.assert_frame_equal(again["stage_proba"], out["stage_proba"])


def test_celltypist_minibatch_is_seeded_from_the_config(split):
    """Mini-batch SGD draws its batches from NumPy's global generator: the method seeds it, so whatever state the
    process is in, the same seed gives the same probabilities; the mode is named in the parameter count."""
    train, test, truth = split
    p = params(use_SGD=True, mini_batch=True, batch_size=50, batch_number=4)
    np.random.seed(123)
    out = run("celltypist", "classifier", train, test, p)
    np.random.seed(456)
    np.random.random(1000)
    again = run("celltypist", "classifier", train, test, p)
    pd.testing.assert_frame_equal(again["stage_proba"], out["stage_proba"])
    assert list(out["n_parameters"]) == ["logistic_sgd_minibatch"]
    assert balanced_accuracy_score(truth["branch"], out["branch_proba"].idxmax(axis=1)) > 0.5  # chance: 1/3


@pytest.mark.parametrize("name", ["dpt", "palantir"])
def test_pseudotime_follows_depth(split, name):
    train, test, truth = split
    pt = run(name, "pseudotime", train, test, params())
    assert pt.shape == (test.n_obs,) and np.isfinite(pt).all()
    assert spearmanr(pt, truth["depth"])[0] > 0.3
    np.testing.assert_allclose(run(name, "pseudotime", train, test, params()), pt)


@pytest.mark.parametrize("name", ["dpt", "palantir"])
def test_pseudotime_tiny_donors(split, name):
    """Donors of 3, 12 and 40 cells: each is handled (fallback or shrunken graph), every value finite."""
    train, test, _ = split
    small = test[:55].copy()
    small.obs["donor"] = ["A"] * 3 + ["B"] * 12 + ["C"] * 40
    pt = run(name, "pseudotime", train, small, params())
    assert pt.shape == (55,) and np.isfinite(pt).all()


def test_dpt_disconnected_cells_get_latest_value(split):
    """A block of cells with an unrelated program forms its own graph component: finite, set to the max."""
    train, test, _ = split
    cut = test.copy()
    X = cut.X.toarray()
    X[-20:] = 0.0
    X[-20:, :2] = 8.0 + np.random.default_rng(0).normal(0, 0.01, (20, 2))
    cut.X = sp.csr_matrix(X)
    pt = run("dpt", "pseudotime", train, cut, params())
    assert np.isfinite(pt).all()
    np.testing.assert_allclose(pt[-20:], pt.max())


def test_control_perfect_scores_perfectly(split):
    train, test, truth = split
    subtypes = {"ery_mye": {"positive": ["ery_early", "ery_late"], "negative": ["mye_early", "mye_late"]}}
    out = run("control_perfect", "classifier", train, test, params(truth=truth, subtypes=subtypes))
    for key, col in (("stage_proba", "stage"), ("branch_proba", "branch")):
        check_proba(out[key], test)
        assert balanced_accuracy_score(truth[col], out[key].idxmax(axis=1)) == 1.0
    assert spearmanr(out["pseudotime"], truth["depth"])[0] == pytest.approx(1.0)
    assert out["ery_mye_proba"].sum() == truth["branch"].eq("ery").sum()
    with pytest.raises(InputError, match="sees_truth"):
        run("control_perfect", "classifier", train, test, params())


def test_root_rule_uses_train_depth_only(split):
    train, test, truth = split
    dist = progenitor_distance(train, test, seed=0)
    assert truth["depth"].iloc[int(np.argmin(dist))] == 0
    with pytest.raises(InputError, match="depth"):
        progenitor_distance(ad.AnnData(X=train.X, obs=train.obs[["stage"]], var=train.var), test)
    roots = []
    donor_local_pseudotime(train, test, lambda cells, root: roots.append(root) or np.arange(cells.n_obs, dtype=float))
    assert roots == [int(np.argmin(dist))]


def test_stage_to_branch_helpers():
    obs = pd.DataFrame({"stage": ["a", "a", "b", "c"], "branch": ["x", "x", "x", "y"]})
    mapping = stage_branch_map(obs)
    proba = pd.DataFrame([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], columns=["a", "b", "c"], index=["u", "v"])
    branch = branch_proba_from_stages(proba, mapping)
    np.testing.assert_allclose(branch.loc["u", ["x", "y"]], [0.5, 0.5])
    with pytest.raises(InputError):
        branch_proba_from_stages(proba.assign(d=0.0), mapping)
    sub = subtype_proba_from_stages(proba, {"ab": {"positive": ["a"], "negative": ["b"]}})
    np.testing.assert_allclose(sub["ab_proba"], [0.4, 1.0])
    np.testing.assert_allclose(finite_pseudotime(np.array([0.1, np.inf, 0.7, np.nan])), [0.1, 0.7, 0.7, 0.7])
