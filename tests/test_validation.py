"""Manifold measures: ruler Spearman (with the cross-group restriction) and trustworthiness."""

import numpy as np
import pandas as pd
import pytest

from fmextract.validation import angular_distances, ruler_spearman, trustworthiness

STAGES = list("abcd")
RULER = pd.DataFrame([[abs(i - j) for j in range(4)] for i in range(4)], index=STAGES, columns=STAGES)


def arc(stages, noise=0.0, seed=0):
    """Points on a quarter circle ordered like the path a-b-c-d."""
    rng = np.random.default_rng(seed)
    theta = np.array([STAGES.index(s) for s in stages]) * 0.4 + noise * rng.normal(size=len(stages))
    return np.c_[np.cos(theta), np.sin(theta)]


def test_angular_distances():
    np.testing.assert_allclose(angular_distances(np.array([[1, 0], [0, 2], [-1, 0]])), [np.pi / 2, np.pi, np.pi / 2])


def test_ruler_spearman_perfect_and_shuffled():
    stages = np.repeat(STAGES, 5)
    assert ruler_spearman(arc(stages), stages, RULER) > 0.95
    shuffled = np.random.default_rng(0).permutation(stages)
    assert abs(ruler_spearman(arc(shuffled), stages, RULER)) < 0.3


def test_groups_exclude_within_group_pairs():
    stages = np.array(["a", "a", "d", "d"])
    donors = np.array(["x", "y", "x", "y"])
    Z = arc(stages)
    # only cross-donor pairs: (a,a), (a,d), (a,d), (d,d) -> still perfectly ordered
    assert ruler_spearman(Z, stages, RULER, groups=donors) > 0.9
    assert np.isnan(ruler_spearman(Z[:2], stages[:2], RULER, groups=donors[:2]))


def test_trustworthiness_of_identity_is_one():
    X = np.random.default_rng(0).normal(size=(30, 5))
    assert trustworthiness(X, X) == 1.0
    assert trustworthiness(X, np.random.default_rng(1).normal(size=(30, 2))) < 0.9


def toy_anchors(seed=0, donors=4, noise=0.2):
    """Anchors whose features encode position along a path a-b-c-d, with donor x tissue blocks."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    basis = rng.normal(size=(4, 20))
    for d in range(donors):
        for tissue in ("t1", "t2"):
            for i, s in enumerate(STAGES):
                rows.append({"donor": f"d{d}", "tissue": tissue, "stage": s, "branch": "x" if i < 2 else "y", "depth": float(i)})
                feats.append(basis[: i + 1].sum(axis=0) + noise * rng.normal(size=20))
    return np.array(feats), pd.DataFrame(rows)


KW = dict(d_latent=3, alpha=0.1, beta=1 / np.pi, epochs=40, lr=0.02, batch_size=64, seed=0)


def test_manifold_metrics_pass_on_structure_and_fail_on_shuffled_genes():
    from fmextract.validation import gate_table, manifold_metrics, shuffle_gene_panel

    F, meta = toy_anchors()
    good = manifold_metrics(F, meta, RULER, adaptor_kw=KW, n_permutations=200, dims=[2], seed=0)
    gates = {"trustworthiness": 0.8, "spearman": 0.2, "p_value": 0.01}
    table = gate_table(good, "reference", gates)
    assert table.dropna(subset=["threshold"])["passed"].all(), table
    bad = manifold_metrics(shuffle_gene_panel(F, seed=1), meta, RULER, adaptor_kw=KW, n_permutations=200, dims=[2], seed=0)
    assert bad["spearman_donor_holdout"] < good["spearman_donor_holdout"] - 0.3
    assert bad["spearman_donor_holdout"] < 0.2
    verdict = lambda t: t.set_index("metric").loc["all_gates", "passed"]
    assert verdict(table) and not verdict(gate_table(bad, "negative_control", gates))
    assert "intrinsic_dimension_twonn" in good and table["passed"].isna().sum() == 4


def test_ruler_trustworthiness_separates_ruler_order_from_shuffled_labels():
    from fmextract.validation import ruler_trustworthiness

    stages = np.repeat(STAGES, 10)  # ten rows per stage: the ruler alone ties them
    Z = arc(stages, noise=0.02)
    ordered = ruler_trustworthiness(Z, stages, RULER, seed=0)
    shuffled = ruler_trustworthiness(Z, np.random.default_rng(1).permutation(stages), RULER, seed=0)
    assert ordered > 0.95 and shuffled < 0.7
    assert ruler_trustworthiness(Z, stages, RULER, seed=1) == pytest.approx(ordered, abs=0.02)  # tie-break barely matters
    cut = RULER.astype(float).where(RULER < 3, np.inf)  # a disconnected pair (a, d) ranks beyond every path instead of failing
    assert np.isfinite(ruler_trustworthiness(Z, stages, cut, seed=0))


def test_blocked_permutation_p_formula():
    from fmextract.validation import blocked_permutation_test

    F, meta = toy_anchors()
    obs, p, null = blocked_permutation_test(F, meta["stage"], meta["donor"], RULER, n_permutations=99, seed=0)
    assert p == (1 + np.sum(null >= obs)) / 100 and p == 0.01


def test_blocked_permutation_null_is_ruler_spearman_of_within_block_shuffles():
    from fmextract.validation import blocked_permutation_test

    F, meta = toy_anchors()
    Z = F + np.random.default_rng(3).normal(scale=2.0, size=F.shape)  # imperfect latent: ties and noise in the ranks
    stages, donors = meta["stage"].to_numpy(dtype=str), meta["donor"].to_numpy()
    for groups in (None, donors):
        obs, _, null = blocked_permutation_test(Z, stages, donors, RULER, n_permutations=3, seed=5, groups=groups)
        assert obs == pytest.approx(ruler_spearman(Z, stages, RULER, groups=groups), abs=1e-12)
        rng = np.random.default_rng(5)
        for b in range(3):  # replay the documented null: stage labels shuffled within each donor block
            perm = stages.copy()
            for d in np.unique(donors):
                idx = np.flatnonzero(donors == d)
                perm[idx] = stages[rng.permutation(idx)]
            assert null[b] == pytest.approx(ruler_spearman(Z, perm, RULER, groups=groups), abs=1e-12)


def test_twonn_recovers_plane_dimension():
    from fmextract.validation import twonn_dimension

    X = np.random.default_rng(0).random((800, 2)) @ np.random.default_rng(1).normal(size=(2, 10))
    assert 1.6 < twonn_dimension(X) < 2.5
