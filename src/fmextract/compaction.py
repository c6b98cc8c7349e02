"""The compaction chain's statistics: each rung against the one before it and against pooled drift, as the paper
reports them (BH-significant losses out of the 8 endpoints, paired two-sided Wilcoxon), plus a one-sided
non-inferiority test with a margin.

Every rung is a full extracted pipeline (its own cell-trained adaptor and per-split readouts); `per_split` holds
its endpoint values (split, variant, endpoint, value).

- differences are previous (or pooled) − rung: positive means the rung is worse; a **loss** is a row with
  q < `alpha` and a positive median difference; losses are counted over `loss_endpoints` (the paper's 8);
- BH: one family per comparison (all rungs x endpoints vs previous; vs pooled; non-inferiority);
- non-inferiority vs pooled drift: H0 rung ≤ pooled − margin, H1 rung > pooled − margin; one-sided paired Wilcoxon
  of (rung + margin) vs pooled (``alternative="greater"``); `noninferior` = q < alpha.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.errors import InputError
from fmextract.stats import bh_q_values, wilcoxon_pair

#: columns of compression.tsv.
COLUMNS = ["rung", "variant", "previous", "rank", "size_mb", "n_weights", "float32_bytes", "endpoint", "mean", "sd",
           "n", "median_diff_vs_previous", "p_vs_previous", "q_vs_previous", "loss_vs_previous",
           "median_diff_vs_pooled", "p_vs_pooled", "q_vs_pooled", "loss_vs_pooled", "noninferiority_margin",
           "noninferiority_p", "noninferiority_q", "noninferior", "losses_vs_previous", "losses_vs_pooled",
           "n_loss_endpoints", "noninferior_endpoints"]


def _paired(wide: pd.DataFrame, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of variants a and b over the splits where both are finite."""
    both = wide[[a, b]].dropna()
    return both[a].to_numpy(dtype=float), both[b].to_numpy(dtype=float)


def chain_table(per_split: pd.DataFrame, chain: list[str], *, margin: float, loss_endpoints: list[str],
                alpha: float = 0.05) -> pd.DataFrame:
    """One row per (rung, endpoint) of the chain (order = `chain`, chain[0] = pooled drift); see the module docstring.

    The per-rung counts (`losses_vs_previous`, `losses_vs_pooled` out of `n_loss_endpoints`,
    `noninferior_endpoints`) repeat on each of the rung's rows. Sizes are added by the caller.
    """
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
            row = {"rung": i, "variant": variant, "previous": chain[i - 1] if i else None, "endpoint": endpoint,
                   "mean": values.mean(), "sd": values.std(), "n": len(values)}
            if i and variant in wide:
                for tag, ref in (("previous", chain[i - 1]), ("pooled", pooled)):
                    if ref not in wide:
                        continue
                    r, v = _paired(wide, ref, variant)
                    row[f"median_diff_vs_{tag}"] = float(np.median(r - v)) if r.size else np.nan
                    row[f"p_vs_{tag}"] = wilcoxon_pair(r, v)["p_value"]
                if pooled in wide:
                    r, v = _paired(wide, pooled, variant)
                    row["noninferiority_p"] = wilcoxon_pair(v + margin, r, alternative="greater")["p_value"]
            rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("median_diff_vs_previous", "p_vs_previous", "median_diff_vs_pooled", "p_vs_pooled", "noninferiority_p"):
        if col not in table:
            table[col] = np.nan
    for tag in ("previous", "pooled"):
        table[f"q_vs_{tag}"] = bh_q_values(table[f"p_vs_{tag}"])
        table[f"loss_vs_{tag}"] = (table[f"q_vs_{tag}"] < alpha) & (table[f"median_diff_vs_{tag}"] > 0)
    table["noninferiority_margin"] = margin
    table["noninferiority_q"] = bh_q_values(table["noninferiority_p"])
    table["noninferior"] = table["noninferiority_q"] < alpha
    counted = table[table["endpoint"].isin(loss_endpoints)]
    per_rung = counted.groupby("variant").agg(losses_vs_previous=("loss_vs_previous", "sum"),
                                              losses_vs_pooled=("loss_vs_pooled", "sum"),
                                              n_loss_endpoints=("endpoint", "nunique"),
                                              noninferior_endpoints=("noninferior", "sum"))
    table = table.join(per_rung, on="variant")
    first = table["rung"] == 0  # pooled drift is the reference: no comparisons, nothing to count
    table.loc[first, ["losses_vs_previous", "losses_vs_pooled", "noninferior_endpoints"]] = np.nan
    table["rank"] = table["variant"].str.extract(r"rank(\d+)$")[0].astype(float)
    return table.sort_values(["rung", "endpoint"], kind="stable").reset_index(drop=True)
