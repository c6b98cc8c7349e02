"""LET adaptor: learns the ruler from features, is deterministic; the cell-trained recipe's four terms each act."""

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from fmextract.adaptor import (
    Adaptor, balanced_sample, cell_adaptor_kwargs, fit_adaptor, principal_axes, ruler_diameter,
)

STAGES = ["a", "b", "c", "d", "e"]
#: a path graph a-b-c-d-e
RULER = pd.DataFrame([[abs(i - j) for j in range(5)] for i in range(5)], index=STAGES, columns=STAGES)


def toy(n_per=20, dim=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.cumsum(rng.normal(size=(5, dim)), axis=0)
    labels = np.repeat(STAGES, n_per)
    F = centres[np.repeat(np.arange(5), n_per)] + 0.3 * rng.normal(size=(5 * n_per, dim))
    return F.astype(np.float32), labels


def fit(F, labels, **kw):
    args = dict(d_latent=3, alpha=0.1, beta=1 / np.pi, epochs=60, lr=0.02, batch_size=64, seed=0)
    return fit_adaptor(F, labels, RULER, **{**args, **kw})


def pair_rho(Z, labels):
    zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    ang = np.arccos(np.clip(zn @ zn.T, -1, 1))
    idx = pd.Series(labels).map({s: i for i, s in enumerate(STAGES)}).to_numpy()
    iu = np.triu_indices(len(Z), 1)
    return spearmanr(ang[iu], RULER.to_numpy()[idx[iu[0]], idx[iu[1]]])[0]


def test_adaptor_learns_the_ruler_and_is_deterministic():
    F, labels = toy()
    a, b = fit(F, labels), fit(F, labels)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.history[-1] < a.history[0]
    assert pair_rho(a.transform(F), labels) > 0.6


def test_adaptor_transform_is_linear_and_saves(tmp_path):
    F, labels = toy()
    a = fit(F, labels, epochs=5)
    np.testing.assert_allclose(a.transform(F[:3]), ((F[:3] - a.b) / a.scale) @ a.W.T, rtol=1e-5)
    a.save(str(tmp_path / "a.npz"))
    back = Adaptor.load(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.transform(F), a.transform(F))
    assert a.n_parameters == 3 * 30  # W only: b and scale are fitted statistics, not trained


def test_cell_trained_variant_runs_with_classification_term():
    F, labels = toy()
    a = fit(F, labels, gamma=1.0)
    assert a.W.shape == (3, 30) and np.isfinite(a.history).all()


def knn_overlap(F, Z, k=5):
    """Mean share of each row's k nearest rows (angle of centred rows) in F that are also its k nearest in Z."""
    def nbrs(X):
        X = X - X.mean(0)
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        sim = X @ X.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1)[:, :k]
    return np.mean([len(set(x) & set(y)) / k for x, y in zip(nbrs(F), nbrs(Z))])


def test_local_term_preserves_feature_neighbourhoods():
    """Local structure hidden below the top principal axes: the local term alone brings it into the latent."""
    rng = np.random.default_rng(3)
    centres = 6.0 * rng.normal(size=(5, 3))  # between-cluster spread: the top principal axes
    labels = np.repeat(STAGES, 40)
    within = 2.0 * rng.normal(size=(200, 3))  # within-cluster neighbourhoods live in three other dimensions
    F = np.hstack([centres[np.repeat(np.arange(5), 40)], within]).astype(np.float32)
    base = dict(ruler_weight=0.0, alpha=0.0, epochs=150, batch_size=200, lr=0.02)
    pca = fit(F, labels, **base, local=0.0)  # no loss term: the initial principal axes
    local = fit(F, labels, **base, local=1.0, local_k=5)
    assert knn_overlap(F, local.transform(F)) > knn_overlap(F, pca.transform(F)) + 0.2  # measured: 0.61 vs 0.27
    np.testing.assert_array_equal(local.W, fit(F, labels, **base, local=1.0, local_k=5).W)


def test_weights_switch_terms_off():
    F, labels = toy()
    a = fit(F, labels, ruler_weight=0.0, alpha=0.0, gamma=0.0, local=0.0, epochs=3)
    np.testing.assert_allclose(a.history, 0.0)  # every term off: nothing to optimise, W stays at its init
    np.testing.assert_allclose(np.abs(a.W), np.abs(principal_axes((F - F.mean(0)) / fit(F, labels, epochs=1).scale, 3,
                                                                   seed=0)), atol=1e-5)


def test_cell_recipe_from_config():
    cfg = {"d_latent": 10, "beta": 0.3, "lr": 0.01, "cell_epochs": 120, "cell_batch_size": 896, "cell_local_k": 10,
           "cell_weights": {"ruler": 1.0, "local": 0.1, "reconstruction": 0.08, "classification": 0.4}}
    kw = cell_adaptor_kwargs(cfg)
    assert (kw["ruler_weight"], kw["local"], kw["alpha"], kw["gamma"]) == (1.0, 0.1, 0.08, 0.4)
    assert (kw["epochs"], kw["batch_size"], kw["d_latent"]) == (120, 896, 10)


def test_principal_axes_randomized_matches_exact():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(600, 3)) * [10, 5, 2]) @ rng.normal(size=(3, 200)) + 0.01 * rng.normal(size=(600, 200))
    exact = np.linalg.svd(X, full_matrices=False)[2][:3]
    approx = principal_axes(X, 3, seed=0)
    assert approx.dtype == np.float32 and approx.shape == (3, 200)
    np.testing.assert_allclose(np.abs((approx * exact).sum(1)), 1.0, atol=1e-4)  # same axes up to sign
    assert principal_axes(X[:4], 6, seed=0).shape == (6, 200)  # fewer rows than axes: padded with zeros


def test_balanced_sample_caps_each_label():
    labels = pd.Series(["x"] * 50 + ["y"] * 5)
    pos = balanced_sample(labels, per_label=10, seed=0)
    assert (labels.iloc[pos] == "x").sum() == 10 and (labels.iloc[pos] == "y").sum() == 5
    np.testing.assert_array_equal(pos, balanced_sample(labels, per_label=10, seed=0))


def test_balanced_sample_skips_cells_without_a_stage():
    labels = pd.Series(["x"] * 5 + [np.nan] * 5 + ["y"] * 3)
    pos = balanced_sample(labels, per_label=4, seed=0)
    assert labels.iloc[pos].notna().all() and len(pos) == 7


def test_ruler_scale_is_the_graph_diameter_whatever_stages_a_fold_holds():
    """Distances are divided by the whole graph's diameter (4 on the path a-e), not by the largest distance among the
    stages present: a fold holding a-c only trains on the same scale as the full fit."""
    assert ruler_diameter(RULER) == 4.0
    assert ruler_diameter(pd.DataFrame([[0, np.inf], [np.inf, 0]])) == 1.0  # disconnected: finite part, at least 1
    F, labels = toy()
    keep = np.isin(labels, ["a", "b", "c"])
    subset = fit(F[keep], labels[keep], epochs=5)
    small = RULER.loc[["a", "b", "c"], ["a", "b", "c"]]  # a ruler of the fold's stages only: diameter 2, another scale
    assert not np.allclose(subset.W, fit_adaptor(F[keep], labels[keep], small, d_latent=3, alpha=0.1, beta=1 / np.pi,
                                                 epochs=5, lr=0.02, batch_size=64, seed=0).W)
