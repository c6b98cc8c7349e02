"""Interpretability of a factorised operator: leave-one-factor-out impact and gene-program enrichment."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from fmextract.features import FeatureMap


def impact_shares(impact: pd.Series) -> pd.DataFrame:
    """Rank factors by impact (endpoint drop when removed); share and cumulative share of the positive total."""
    table = pd.DataFrame({"factor": impact.index, "impact": impact.to_numpy()})
    table = table.sort_values("impact", ascending=False, kind="stable").reset_index(drop=True)
    positive = table["impact"].clip(lower=0)
    total = positive.sum()
    table["share"] = positive / total if total > 0 else np.nan
    table["cumulative_share"] = table["share"].cumsum()
    table["rank"] = np.arange(1, len(table) + 1)
    return table


def factor_top_genes(fmap: FeatureMap, factor: int, n_top: int) -> list[str]:
    """Genes with the largest |loading| on the input side (U S) of one factor."""
    loading = np.abs(fmap.left[:, factor])
    order = np.argsort(-loading, kind="stable")[:n_top]
    return [fmap.genes[i] for i in order]


def program_enrichment(top: list[str], universe: list[str], programs: dict[str, list[str]]) -> pd.DataFrame:
    """Hypergeometric enrichment of `top` genes in each marker program (universe: the gene panel), BH-corrected."""
    from fmextract.stats import bh_q_values

    universe_set = set(universe)
    top_set = set(top) & universe_set
    rows = []
    for name, genes in sorted(programs.items()):
        members = set(genes) & universe_set
        overlap = top_set & members
        p = hypergeom.sf(len(overlap) - 1, len(universe_set), len(members), len(top_set)) if members else 1.0
        rows.append({"program": name, "n_program": len(members), "n_top": len(top_set), "overlap": len(overlap),
                     "genes": ",".join(sorted(overlap)), "p_value": float(p)})
    table = pd.DataFrame(rows)
    table["q_value"] = bh_q_values(table["p_value"]) if len(table) else []
    return table
