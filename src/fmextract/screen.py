"""Head screen: score every (layer, head) operator on reference anchors after a quick anchor-trained adaptor."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.adaptor import fit_adaptor
from fmextract.validation import ruler_spearman, trustworthiness


def screen_heads(
    operators: np.ndarray,
    profiles: np.ndarray,
    anchors: pd.DataFrame,
    ruler: pd.DataFrame,
    *,
    adaptor_kw: dict,
) -> pd.DataFrame:
    """One row per head: cross-donor ruler Spearman and trustworthiness of its latent, ranked (1 = best).

    Features of a head are `profiles @ A[l, h]`; the adaptor is fitted and scored on the same anchors
    (a screen, not a benchmark: the chosen heads are then evaluated on held-out donors).
    """
    rows = []
    for layer in range(operators.shape[0]):
        for head in range(operators.shape[1]):
            F = profiles @ operators[layer, head]
            adaptor = fit_adaptor(F, anchors["stage"], ruler, **adaptor_kw)
            Z = adaptor.transform(F)
            rows.append({
                "layer": layer,
                "head": head,
                "name": f"L{layer}H{head}",
                "ruler_spearman": ruler_spearman(Z, anchors["stage"], ruler, groups=anchors["donor"]),
                "trustworthiness": trustworthiness(F, Z),
            })
    table = pd.DataFrame(rows)
    table["rank"] = table["ruler_spearman"].rank(ascending=False, method="first").astype(int)
    return table.sort_values("rank", kind="stable").reset_index(drop=True)


def top_heads(table: pd.DataFrame, k: int) -> tuple[list[tuple[int, int]], list[float]]:
    """The k best heads of a screen and weights proportional to their (positive) ruler Spearman."""
    best = table.nsmallest(k, "rank")
    heads = list(zip(best["layer"].astype(int), best["head"].astype(int)))
    score = best["ruler_spearman"].clip(lower=1e-6).to_numpy()
    return heads, (score / score.sum()).tolist()
