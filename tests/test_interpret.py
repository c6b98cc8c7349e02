"""Factor interpretation: impact shares and hypergeometric program enrichment."""

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from fmextract.features import FeatureMap
from fmextract.interpret import factor_top_genes, impact_shares, program_enrichment


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
