"""Interpretability of a factorised operator: leave-one-factor-out impact, core sufficiency and subsets, and
gene-program enrichment of the top factors (and of the planted head's leading factors, `factor_programs`)."""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from fmextract.errors import InputError
from fmextract.features import FeatureMap, factor_ids, keep_factors, without_factor


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


#: columns of factor_ablation.tsv (see `ablation_table`).
ABLATION_COLUMNS = ["analysis", "surrogate", "factors", "n_factors", "endpoint", "full", "value", "drop", "impact",
                    "share", "cumulative_share", "rank", "core", "n_splits"]


def factor_programs(
    fmap: FeatureMap, programs: dict[str, list[str]], *, n_factors: int, n_top_genes: int
) -> pd.DataFrame:
    """Program enrichment of the first `n_factors` factors (singular-value order) of a factorised map.

    Per factor: its top `n_top_genes` input-side genes tested against every program (hypergeometric, universe = the
    map's genes), BH across all factor x program tests. With a planted head, its surrogate's leading factors should
    each be enriched for a planted program.
    """
    from fmextract.stats import bh_q_values

    if fmap.left is None:
        raise InputError("factor_programs needs a factorised (rank-r) feature map; build the rank-r surrogate first")
    parts = []
    for k in range(min(n_factors, fmap.left.shape[1])):
        top = factor_top_genes(fmap, k, n_top_genes)
        e = program_enrichment(top, fmap.genes, programs)
        e.insert(0, "factor", k)
        e["top_genes"] = ",".join(top)
        parts.append(e)
    table = pd.concat(parts, ignore_index=True)
    table["q_value"] = bh_q_values(table["p_value"])
    return table


def leave_one_out(fmap: FeatureMap, score: Callable[[FeatureMap], dict[str, float]]) -> pd.DataFrame:
    """Each factor of a factorised map removed in turn: rows (factor, endpoint, full, value), factor = its id.

    `score` maps a feature map to endpoint values with everything else (adaptor, readouts) held fixed.
    """
    full = score(fmap)
    ids = factor_ids(fmap)
    rows = []
    for position, factor in enumerate(ids):
        ablated = score(without_factor(fmap, position))
        rows += [{"factor": int(factor), "endpoint": e, "full": v, "value": ablated.get(e, np.nan)} for e, v in full.items()]
    return pd.DataFrame(rows, columns=["factor", "endpoint", "full", "value"])


def core_subsets(core: list[int]) -> list[tuple[int, ...]]:
    """All non-empty subsets of the core factors (2^n - 1; 15 for a core of 4), smallest first."""
    return [c for n in range(1, len(core) + 1) for c in combinations(sorted(core), n)]


def subset_scores(fmap: FeatureMap, score: Callable[[FeatureMap], dict[str, float]], core: list[int]) -> pd.DataFrame:
    """Only a subset of factors kept (probes fixed), for every non-empty subset of the core (`core` ranked, largest
    impact first): rows (factors, core_ranks, n_factors, endpoint, full, value); `core_ranks` names the subset by the
    factors' ranks in the core ("1+3"), so cores chosen per split aggregate; the whole core is core sufficiency."""
    full = score(fmap)
    position = {f: p for p, f in enumerate(factor_ids(fmap))}
    missing = sorted(set(core) - set(position))
    if missing:
        raise ValueError(f"core factors {missing} are not factors of this map")
    rows = []
    for ranks in core_subsets(list(range(1, len(core) + 1))):
        subset = [core[r - 1] for r in ranks]
        kept = score(keep_factors(fmap, [position[f] for f in subset]))
        rows += [{"factors": "+".join(map(str, subset)), "core_ranks": "+".join(map(str, ranks)),
                  "n_factors": len(subset), "endpoint": e, "full": v, "value": kept.get(e, np.nan)}
                 for e, v in full.items()]
    return pd.DataFrame(rows, columns=["factors", "core_ranks", "n_factors", "endpoint", "full", "value"])


def fixed_probe_scorer(fmap: FeatureMap, adaptor, train, *, subtypes: dict, seed: int):
    """score(m, cells, truth): endpoints of map m on `cells` through `adaptor` and readouts fitted ONCE, on the
    training cells `train` under the full map, then held fixed (the ablations' fixed probes)."""
    from fmextract.metrics import endpoint_metrics
    from fmextract.readouts import fit_readouts

    embed = lambda m, a: adaptor.transform(m.transform(a[:, m.genes].X))
    readouts = fit_readouts(embed(fmap, train), train.obs, subtypes=subtypes, seed=seed)
    return lambda m, cells, truth: endpoint_metrics(truth, readouts.predict(embed(m, cells)), subtypes=subtypes,
                                                    donor_key="donor")


def split_core_subsets(fmap: FeatureMap, adaptor, train, test, truth, *, endpoints: list[str], n_core: int,
                       subtypes: dict, seed: int) -> tuple[list[int], pd.DataFrame]:
    """The factor core chosen out of sample, and its subsets scored on the test donors: (core, subset rows).

    The core is the `n_core` factors of largest leave-one-out impact measured on this split's TRAINING cells only
    (fixed probes fitted on them; `choose` never sees `test`); core sufficiency and every subset of the core are then
    scored on the test donors with the same probes.
    """
    score = fixed_probe_scorer(fmap, adaptor, train, subtypes=subtypes, seed=seed)
    core = core_factors(leave_one_out(fmap, lambda m: score(m, train, train.obs)), endpoints, n_core)
    return core, subset_scores(fmap, lambda m: score(m, test, truth), core)


def factor_impact(loo: pd.DataFrame, endpoints: list[str]) -> pd.Series:
    """Impact of each factor: its mean drop (full - ablated) over `endpoints` and splits (leave-one-out rows)."""
    sub = loo[loo["endpoint"].isin(endpoints)]
    if sub.empty:
        raise ValueError(f"no leave-one-out rows for endpoints {endpoints}; check compression.ablation_endpoints")
    return (sub["full"] - sub["value"]).groupby(sub["factor"]).mean()


def core_factors(loo: pd.DataFrame, endpoints: list[str], n: int) -> list[int]:
    """The core, ranked: the n factors of largest impact (ties broken by factor id), from leave-one-out rows (one
    split's training cells for the out-of-sample core; all splits for the pooled, descriptive share)."""
    return [int(f) for f in impact_shares(factor_impact(loo, endpoints).sort_index())["factor"].head(n)]


def ablation_table(loo: pd.DataFrame, sparse_loo: pd.DataFrame, subsets: pd.DataFrame, *, endpoints: list[str],
                   n_core: int, surrogate: str, sparse_surrogate: str) -> pd.DataFrame:
    """factor_ablation.tsv from per-split rows (each with a `split` column); means over splits.

    analysis `leave_one_out` / `sparse_leave_one_out`: per factor and endpoint, full, value (factor removed) and
    drop, with the factor's impact (mean drop over `endpoints`), share and cumulative share of the positive impact,
    rank, and whether it is in the pooled core; `core_sufficiency` (only the core kept) and `core_subset` (the other
    non-empty subsets of the core; with core_sufficiency all 2^n - 1) per endpoint, each split's core chosen on its
    training donors (`split_core_subsets`) and scored on its test donors, subsets named by core rank ("top1+top3",
    means over splits); `core_share` (descriptive, in sample): the share of impact the pooled top-n factors (from
    every split's test-donor leave-one-out) carry in the rank-r surrogate and in the hard-sparse one (the pooled core
    factors it kept; n_factors says how many).
    """
    core = core_factors(loo, endpoints, n_core)
    out = []
    for analysis, name, rows in (("leave_one_out", surrogate, loo), ("sparse_leave_one_out", sparse_surrogate, sparse_loo)):
        shares = impact_shares(factor_impact(rows, endpoints)).set_index("factor")
        mean = rows.groupby(["factor", "endpoint"], as_index=False).agg(full=("full", "mean"), value=("value", "mean"),
                                                                        n_splits=("value", "count"))
        mean = mean.join(shares, on="factor")
        mean["factors"] = mean["factor"].astype(int).astype(str)
        out.append(mean.assign(analysis=analysis, surrogate=name, n_factors=1, core=mean["factor"].isin(core)))
        in_core = shares.index.isin(core)
        share = float(shares.loc[in_core, "share"].sum()) if in_core.any() else 0.0
        out.append(pd.DataFrame([{"analysis": "core_share", "surrogate": name, "factors": "+".join(map(str, core)),
                                  "n_factors": int(in_core.sum()), "endpoint": "impact", "value": share,
                                  "core": True, "n_splits": rows["split"].nunique()}]))
    sub = subsets.groupby(["core_ranks", "n_factors", "endpoint"], as_index=False).agg(
        full=("full", "mean"), value=("value", "mean"), n_splits=("value", "count"))
    sub["factors"] = sub["core_ranks"].map(lambda r: "+".join(f"top{k}" for k in r.split("+")))
    sub = sub.drop(columns="core_ranks")
    sub["analysis"] = np.where(sub["n_factors"] == len(core), "core_sufficiency", "core_subset")
    out.append(sub.assign(surrogate=surrogate, core=True))
    table = pd.concat(out, ignore_index=True)
    table["drop"] = table["full"] - table["value"]
    order = {"leave_one_out": 0, "core_share": 1, "core_sufficiency": 2, "core_subset": 3, "sparse_leave_one_out": 4}
    table = table.sort_values(["analysis", "surrogate", "rank", "n_factors", "factors", "endpoint"],
                              key=lambda c: c.map(order) if c.name == "analysis" else c, kind="stable")
    return table[ABLATION_COLUMNS].reset_index(drop=True)
