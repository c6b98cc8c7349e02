"""Manifold validation: ruler Spearman, trustworthiness, permutation nulls, internal vs external protocols, the
calibration of the external null, the controls and the per-gate separation table."""

import numpy as np
import pandas as pd
import pytest
import torch

from fmextract.validation import angular_distances, ruler_spearman, trustworthiness

torch.set_num_threads(1)  # tiny adaptors: threads only add contention
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


GATES = {"trustworthiness": 0.8, "spearman": 0.2, "p_value": 0.01}


def verdict(table):
    return bool(table.set_index("metric").loc["all_gates", "passed"])


def split(F, meta, reference=("d0", "d1")):
    """(reference anchors, external anchors): the adaptor's donors and the donors it never sees."""
    ref = meta["donor"].isin(reference).to_numpy()
    return (F[ref], meta[ref].reset_index(drop=True)), (F[~ref], meta[~ref].reset_index(drop=True))


def test_internal_and_external_pass_on_structure_and_fail_on_shuffled_genes():
    from fmextract.adaptor import fit_adaptor
    from fmextract.validation import external_metrics, gate_table, internal_metrics, shuffle_gene_panel

    F, meta = toy_anchors(donors=5)
    (F_ref, M_ref), (F_ext, M_ext) = split(F, meta)
    frozen = fit_adaptor(F_ref, M_ref["stage"], RULER, **KW)
    internal = internal_metrics(F_ref, M_ref, RULER, adaptor=frozen, adaptor_kw=KW, n_permutations=200, dims=[2], seed=0)
    table = gate_table(internal, "internal", GATES)
    assert verdict(table) and "intrinsic_dimension_twonn" in internal and "spearman_donor_holdout_d2" in internal
    external = external_metrics(F_ext, M_ext, RULER, adaptor=frozen, n_permutations=200, seed=0)
    assert verdict(gate_table(external, "external", GATES)) and external["n_donors"] == 3
    assert "residualised_spearman" in external and not any(k.endswith("_d2") for k in external)
    S_ref, S_ext = shuffle_gene_panel(F_ref, seed=1), shuffle_gene_panel(F_ext, seed=2)
    bad = external_metrics(S_ext, M_ext, RULER, adaptor=fit_adaptor(S_ref, M_ref["stage"], RULER, **KW),
                           n_permutations=200, seed=0)
    assert bad["spearman_donor_holdout"] < 0.2 and not verdict(gate_table(bad, "control_shuffled_genes", GATES))


def test_external_permutation_p_is_calibrated_on_pure_noise():
    """Calibration: features of pure noise, the shapes of a real panel (more features than anchors), through the
    external protocol (adaptor fitted on reference anchors, frozen, permutation on the other donors' anchors): p is
    not significant. The internal protocol's in-sample p on the same noise is what made the old null circular."""
    from fmextract.adaptor import fit_adaptor
    from fmextract.validation import blocked_permutation_test, external_metrics

    _, meta = toy_anchors(donors=6)
    kw = {**KW, "d_latent": 10, "epochs": 200}
    external_p, internal_p = [], []
    for seed in range(10):
        noise = np.random.default_rng(seed).normal(size=(len(meta), 400))
        (F_ref, M_ref), (F_ext, M_ext) = split(noise, meta, reference=("d0", "d1", "d2"))
        adaptor = fit_adaptor(F_ref, M_ref["stage"], RULER, **{**kw, "seed": seed})
        external_p.append(external_metrics(F_ext, M_ext, RULER, adaptor=adaptor, n_permutations=200,
                                           seed=seed)["blocked_permutation_p"])
        blocks = M_ref["donor"] + "|" + M_ref["tissue"]
        internal_p.append(blocked_permutation_test(adaptor.transform(F_ref), M_ref["stage"], blocks, RULER,
                                                   n_permutations=200, seed=seed)[1])
    assert min(external_p) > 0.001 and np.mean(np.array(external_p) <= 0.05) <= 0.2 and np.mean(external_p) > 0.3
    assert max(internal_p) <= 0.01  # in sample, the adaptor fitted the noise to these very labels


def test_null_ruler_and_permuted_operator_controls():
    from fmextract.validation import permuted_operator, permuted_ruler

    null = permuted_ruler(RULER, seed=0)
    assert (null.index == RULER.index).all() and sorted(null.to_numpy().ravel()) == sorted(RULER.to_numpy().ravel())
    assert not null.equals(RULER) and np.allclose(null, null.T) and (np.diag(null) == 0).all()
    rng = np.random.default_rng(0)
    A, B = rng.random((5, 5)), rng.random((5, 5))
    M = permuted_operator(np.c_[A, B], seed=3)
    P = np.eye(5)[np.random.default_rng(3).permutation(5)]
    np.testing.assert_allclose(M, np.c_[P @ A @ P.T, P @ B @ P.T])
    with pytest.raises(ValueError, match="blocks"):
        permuted_operator(rng.random((5, 7)), seed=0)


def test_gate_separation_table():
    from fmextract.validation import gate_separation, gate_table

    good = {"trustworthiness": 0.99, "spearman_donor_holdout": 0.5, "blocked_permutation_p": 0.001}
    control = {"trustworthiness": 0.98, "spearman_donor_holdout": 0.05, "blocked_permutation_p": 0.4}
    t = pd.concat([gate_table(good, "external", GATES), gate_table(control, "control_shuffled_genes", GATES),
                   gate_table(good, "planted_model", GATES)], ignore_index=True)
    sep = gate_separation(t).set_index("metric")
    assert list(sep.columns[:4]) == ["threshold", "external", "control_shuffled_genes", "planted_model"]
    assert not sep.loc["trustworthiness", "separates"] and sep.loc["trustworthiness", "controls_failed"] == "0/1"
    assert sep.loc["spearman_donor_holdout", "separates"] and sep.loc["all_gates", "separates"]
    assert sep.loc["all_gates", "positive_passed"]


def test_gate_separation_per_adaptor_and_comparators_count_nowhere():
    """A comparator passing every gate is neither a real panel nor a control; each adaptor gets its own rows."""
    from fmextract.validation import gate_separation, gate_table, panel_role

    good = {"trustworthiness": 0.99, "spearman_donor_holdout": 0.5, "blocked_permutation_p": 0.001}
    control = {"trustworthiness": 0.98, "spearman_donor_holdout": 0.05, "blocked_permutation_p": 0.4}
    t = pd.concat([gate_table(v, p, GATES).assign(adaptor=a) for a in ("anchor", "cell")
                   for p, v in (("external", good), ("control_shuffled_genes", control),
                                ("comparator_raw_expression", good))], ignore_index=True)
    sep = gate_separation(t)
    assert list(sep.columns[:2]) == ["adaptor", "metric"] and set(sep["adaptor"]) == {"anchor", "cell"}
    row = sep[(sep["adaptor"] == "cell") & (sep["metric"] == "all_gates")].iloc[0]
    assert row["real_passed"] == "1/1" and row["controls_failed"] == "1/1" and row["comparator_raw_expression"] == 1.0
    assert panel_role("comparator_raw_pca_immune") == "comparator"


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
