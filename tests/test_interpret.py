"""Factor interpretation: impact shares, leave-one-out, core sufficiency and subsets, program enrichment."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

from fmextract.features import FeatureMap, keep_factors
from fmextract.interpret import (ablation_table, core_factors, core_subsets, factor_top_genes, impact_shares,
                                 leave_one_out, program_enrichment, subset_scores)


def test_impact_shares_rank_and_cumulate():
    t = impact_shares(pd.Series([0.1, 0.5, -0.2, 0.4], index=[0, 1, 2, 3]))
    assert t["factor"].tolist() == [1, 3, 0, 2]
    np.testing.assert_allclose(t["share"].iloc[:3], [0.5, 0.4, 0.1])
    np.testing.assert_allclose(t["cumulative_share"].iloc[2], 1.0)


def test_top_genes_follow_loadings():
    left = np.array([[0.1, 3.0], [-5.0, 0.0], [2.0, 1.0]])
    fmap = FeatureMap(genes=["a", "b", "c"], kind="low_rank", left=left, right=np.eye(2))
    assert factor_top_genes(fmap, 0, 2) == ["b", "c"] and factor_top_genes(fmap, 1, 1) == ["a"]


def test_enrichment_matches_fisher_one_sided():
    universe = [f"g{i}" for i in range(100)]
    programs = {"p1": universe[:10], "p2": universe[50:70]}
    top = universe[:6] + universe[50:52] + universe[90:92]
    t = program_enrichment(top, universe, programs).set_index("program")
    assert t.loc["p1", "overlap"] == 6 and t.loc["p2", "overlap"] == 2
    expected = fisher_exact([[6, 4], [4, 86]], alternative="greater")[1]
    np.testing.assert_allclose(t.loc["p1", "p_value"], expected, rtol=1e-8)
    assert t.loc["p1", "q_value"] < 0.01 < t.loc["p2", "q_value"]


def additive_map(weights):
    """A factorised map whose factor k adds weights[k] to one output: score = that output, so impacts are known."""
    r = len(weights)
    left = np.eye(r, dtype=np.float32)  # gene k reads factor k
    right = np.zeros((r, 1), dtype=np.float32)
    right[:, 0] = weights
    return FeatureMap(genes=[f"g{k}" for k in range(r)], kind="low_rank", left=left, right=right)


def additive_score(m):
    """Endpoint 'e' = the single feature of an all-ones cell (the sum of the kept factors' weights)."""
    return {"e": float(m.transform(np.ones((1, len(m.genes))))[0, 0])}


def test_leave_one_out_measures_each_factor():
    t = leave_one_out(additive_map([0.5, 0.1, 0.3]), additive_score)
    np.testing.assert_allclose((t["full"] - t["value"]).to_numpy(), [0.5, 0.1, 0.3], rtol=1e-6)
    assert t["factor"].tolist() == [0, 1, 2]


def test_core_subsets_cover_every_non_empty_subset():
    subsets = core_subsets([7, 3, 9, 1])
    assert len(subsets) == 15 and subsets[-1] == (1, 3, 7, 9) and len(set(subsets)) == 15
    t = subset_scores(additive_map([0.5, 0.1, 0.3, 0.05]), additive_score, [2, 0])  # ranked: factor 2 first
    assert t["factors"].tolist() == ["2", "0", "2+0"] and t["core_ranks"].tolist() == ["1", "2", "1+2"]
    np.testing.assert_allclose(t["value"], [0.3, 0.5, 0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="not factors"):
        subset_scores(additive_map([0.5, 0.1]), additive_score, [5])


def test_ablation_table_core_sufficiency_and_sparse_share():
    weights = [0.5, 0.1, 0.3, 0.05, 0.05]
    fmap = additive_map(weights)
    loo = pd.concat([leave_one_out(fmap, additive_score).assign(split=s) for s in ("s0", "s1")])
    assert core_factors(loo, ["e"], 2) == [0, 2]
    sparse = keep_factors(fmap, [0, 1, 3])  # the sparse surrogate kept factors 0, 1, 3: core factor 2 is gone
    sparse_loo = leave_one_out(sparse, additive_score).assign(split="s0")
    subsets = subset_scores(fmap, additive_score, [0, 2]).assign(split="s0")
    t = ablation_table(loo, sparse_loo, subsets, endpoints=["e"], n_core=2, surrogate="r5", sparse_surrogate="sp")
    assert {"leave_one_out", "sparse_leave_one_out", "core_share", "core_sufficiency", "core_subset"} == set(t["analysis"])
    loo_rows = t[t["analysis"] == "leave_one_out"].set_index("factors")
    np.testing.assert_allclose(loo_rows.loc["0", "share"], 0.5, rtol=1e-6)
    assert loo_rows.loc["0", "rank"] == 1 and bool(loo_rows.loc["2", "core"]) and not bool(loo_rows.loc["1", "core"])
    suff = t[t["analysis"] == "core_sufficiency"].iloc[0]
    assert suff["factors"] == "top1+top2" and np.isclose(suff["value"], 0.8) and np.isclose(suff["full"], 1.0)
    assert (t["analysis"] == "core_subset").sum() == 2  # with core sufficiency: all 2^2 - 1 subsets
    share = t[t["analysis"] == "core_share"].set_index("surrogate")
    np.testing.assert_allclose(share.loc["r5", "value"], 0.8, rtol=1e-6)  # (0.5 + 0.3) / 1.0
    np.testing.assert_allclose(share.loc["sp", "value"], 0.5 / 0.65, rtol=1e-6)  # only factor 0 of the core kept
    assert share.loc["sp", "n_factors"] == 1


def test_factor_core_is_chosen_on_training_donors_only():
    """The split's core comes from leave-one-out impact on its training cells: other test donors, same core; the
    subsets are scored on the test donors (their values move with them)."""
    import anndata as ad

    from fmextract.interpret import split_core_subsets

    rng = np.random.default_rng(0)
    n_genes, rank = 12, 5
    left = rng.normal(size=(n_genes, rank)).astype(np.float32)
    fmap = FeatureMap(genes=[f"g{i}" for i in range(n_genes)], kind="low_rank", left=left,
                      right=rng.normal(size=(rank, 4)).astype(np.float32))

    class Identity:
        def transform(self, F):
            return np.asarray(F, dtype=np.float32)

    def cells(n, donors, seed):
        r = np.random.default_rng(seed)
        stage = r.choice(["a", "b", "c"], n)
        shift = {"a": 0.0, "b": 1.5, "c": 3.0}
        X = r.normal(size=(n, n_genes)) + np.array([shift[s] for s in stage])[:, None] * (np.arange(n_genes) % 3 == 0)
        obs = pd.DataFrame({"donor": r.choice(donors, n), "stage": stage, "branch": np.where(stage == "c", "y", "x"),
                            "depth": [{"a": 0, "b": 1, "c": 2}[s] for s in stage]}, index=[f"{seed}_{i}" for i in range(n)])
        return ad.AnnData(X=X.astype(np.float32), obs=obs, var=pd.DataFrame(index=fmap.genes))

    train = cells(300, ["d0", "d1", "d2"], 1)
    kw = dict(endpoints=["stage_balanced_accuracy"], n_core=2, subtypes={}, seed=0)
    tests = [cells(80, ["t0"], 2), cells(80, ["t1"], 3)]
    core_a, sub_a = split_core_subsets(fmap, Identity(), train, tests[0], tests[0].obs, **kw)
    core_b, sub_b = split_core_subsets(fmap, Identity(), train, tests[1], tests[1].obs, **kw)
    assert core_a == core_b and len(core_a) == 2
    assert sub_a["factors"].iloc[-1] == "+".join(map(str, core_a))
    assert not np.allclose(sub_a["value"].to_numpy(float), sub_b["value"].to_numpy(float), equal_nan=True)
