"""The compaction chain's statistics, as the paper counts them (BH-significant losses out of its 8 endpoints, paired
two-sided Wilcoxon, each rung against the previous one on its chain pooled -> best head -> rank 64 -> rank 32 ->
hard-sparse), with beside it each rung against the one before it on our longer chain (extra ranks) and against
pooled drift, and a one-sided non-inferiority test with a margin.

Every rung is a full extracted pipeline (its own cell-trained adaptor and per-split readouts); `per_split` holds
its endpoint values (split, variant, endpoint, value).

- differences are previous (or pooled) − rung: positive means the rung is worse; a **loss** is a row with
  q < `alpha` and a positive median difference; losses are counted over `loss_endpoints` (the paper's 8);
- BH: one family per comparison (the paper's chain, previous rung, vs pooled, non-inferiority), each over the
  `loss_endpoints` rows only (other endpoints keep their p, with q empty);
- non-inferiority vs pooled drift: H0 rung ≤ pooled − margin, H1 rung > pooled − margin; one-sided paired Wilcoxon
  of (rung + margin) vs pooled (``alternative="greater"``); `noninferior` = q < alpha.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.errors import InputError
from fmextract.stats import bh_q_values, wilcoxon_pair

#: columns of compression.tsv.
COLUMNS = ["rung", "variant", "previous", "paper_previous", "rank", "size_mb", "n_weights", "float32_bytes", "endpoint",
           "mean", "sd", "n", "median_diff_vs_paper_previous", "p_vs_paper_previous", "q_vs_paper_previous",
           "loss_vs_paper_previous", "median_diff_vs_previous", "p_vs_previous", "q_vs_previous", "loss_vs_previous",
           "median_diff_vs_pooled", "p_vs_pooled", "q_vs_pooled", "loss_vs_pooled", "noninferiority_margin",
           "noninferiority_p", "noninferiority_q", "noninferior", "losses_vs_paper_previous", "losses_vs_previous",
           "losses_vs_pooled",
           "n_loss_endpoints", "noninferior_endpoints"]


def _paired(wide: pd.DataFrame, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of variants a and b over the splits where both are finite."""
    both = wide[[a, b]].dropna()
    return both[a].to_numpy(dtype=float), both[b].to_numpy(dtype=float)


def paper_chain(chain: list[str], base: str) -> list[str]:
    """The paper's rungs present in our chain, in order: pooled drift, the best head `base`, its rank-64 and rank-32
    surrogates and its hard-sparse one."""
    wanted = [chain[0], base, f"{base}_rank64", f"{base}_rank32", f"{base}_sparse"]
    return [v for v in wanted if v in chain]


def chain_table(per_split: pd.DataFrame, chain: list[str], *, margin: float, loss_endpoints: list[str],
                paper: list[str] | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (rung, endpoint) of the chain (order = `chain`, chain[0] = pooled drift); see the module docstring.

    `paper` is the paper's chain (a sub-sequence of `chain`, `paper_chain`): its rungs get `paper_previous` and the
    comparisons against it (the headline); rungs off it (extra ranks) leave those empty. The per-rung counts
    (`losses_vs_paper_previous`, `losses_vs_previous`, `losses_vs_pooled` out of `n_loss_endpoints`,
    `noninferior_endpoints`) repeat on each of the rung's rows. Sizes are added by the caller. Endpoints of
    `loss_endpoints` absent from the run are skipped.
    """
    paper = list(paper) if paper is not None else list(chain)
    if [v for v in chain if v in paper] != paper:
        raise ValueError(f"compression: the paper's chain {paper} is not an ordered part of the chain {chain}")
    paper_previous = {v: paper[i - 1] for i, v in enumerate(paper) if i}
    missing = sorted(set(chain) - set(per_split["variant"]))
    if missing:
        raise InputError(f"compression: variant(s) {missing} have no per-split values; rerun compression_split")
    if margin <= 0:
        raise InputError(f"compression.noninferiority_margin is {margin}; set a positive margin (endpoint units)")
    pooled = chain[0]
    rows = []
    for endpoint, sub in per_split.groupby("endpoint", sort=True):
        wide = sub.pivot(index="split", columns="variant", values="value")
        for i, variant in enumerate(chain):
            values = wide[variant].dropna() if variant in wide else pd.Series(dtype=float)
            row = {"rung": i, "variant": variant, "previous": chain[i - 1] if i else None,
                   "paper_previous": paper_previous.get(variant), "endpoint": endpoint,
                   "mean": values.mean(), "sd": values.std(), "n": len(values)}
            if i and variant in wide:
                refs = (("paper_previous", paper_previous.get(variant)), ("previous", chain[i - 1]), ("pooled", pooled))
                for tag, ref in refs:
                    if ref is None or ref not in wide:
                        continue
                    r, v = _paired(wide, ref, variant)
                    row[f"median_diff_vs_{tag}"] = float(np.median(r - v)) if r.size else np.nan
                    row[f"p_vs_{tag}"] = wilcoxon_pair(r, v)["p_value"]
                if pooled in wide:
                    r, v = _paired(wide, pooled, variant)
                    row["noninferiority_p"] = wilcoxon_pair(v + margin, r, alternative="greater")["p_value"]
            rows.append(row)
    table = pd.DataFrame(rows)
    tags = ("paper_previous", "previous", "pooled")
    for col in (*(f"{k}_vs_{t}" for t in tags for k in ("median_diff", "p")), "noninferiority_p"):
        if col not in table:
            table[col] = np.nan
    family = table["endpoint"].isin(loss_endpoints).to_numpy()  # the BH families: the paper's endpoints only

    def q_values(p: pd.Series) -> np.ndarray:
        q = np.full(len(p), np.nan)
        q[family] = bh_q_values(p[family])
        return q

    for tag in tags:
        table[f"q_vs_{tag}"] = q_values(table[f"p_vs_{tag}"])
        table[f"loss_vs_{tag}"] = (table[f"q_vs_{tag}"] < alpha) & (table[f"median_diff_vs_{tag}"] > 0)
    table["noninferiority_margin"] = margin
    table["noninferiority_q"] = q_values(table["noninferiority_p"])
    table["noninferior"] = table["noninferiority_q"] < alpha
    counted = table[family]
    per_rung = counted.groupby("variant").agg(losses_vs_paper_previous=("loss_vs_paper_previous", "sum"),
                                              losses_vs_previous=("loss_vs_previous", "sum"),
                                              losses_vs_pooled=("loss_vs_pooled", "sum"),
                                              n_loss_endpoints=("endpoint", "nunique"),
                                              noninferior_endpoints=("noninferior", "sum"))
    table = table.join(per_rung, on="variant")
    first = table["rung"] == 0  # pooled drift is the reference: no comparisons, nothing to count
    table.loc[first, ["losses_vs_paper_previous", "losses_vs_previous", "losses_vs_pooled",
                      "noninferior_endpoints"]] = np.nan
    table.loc[table["paper_previous"].isna(), "losses_vs_paper_previous"] = np.nan  # off the paper's chain
    table["rank"] = table["variant"].str.extract(r"rank(\d+)$")[0].astype(float)
    return table.sort_values(["rung", "endpoint"], kind="stable").reset_index(drop=True)
