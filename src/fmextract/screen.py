"""Head screen (docs/method.md): every (layer, head) operator gets its own quick anchor-trained adaptor, scored on
reference donors it was not fitted on (leave-one-reference-donor-out) by residualised Spearman and trustworthiness.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.errors import InputError
from fmextract.geometry import group_folds, holdout_scores

#: Columns of a head-screen table (head_screen.tsv), in order.
SCREEN_COLUMNS = ("layer", "head", "name", "rank", "ruler_spearman", "residualised_spearman", "trustworthiness")


def score_features(F: np.ndarray, anchors: pd.DataFrame, ruler: pd.DataFrame, *, adaptor_kw: dict) -> dict[str, float]:
    """Leave-one-donor-out score of anchor features F: raw and residualised ruler Spearman, trustworthiness.

    Per held-out donor a quick adaptor is fitted on the other donors' anchors; pairs with at least one held-out
    anchor are scored (raw Spearman, and with same-donor / same-tissue pair indicators regressed out of both
    distances), and the held-out anchors' latent is compared with their features (trustworthiness); fold means.
    """
    if anchors["donor"].nunique() < 2:
        raise InputError(f"head screen: {anchors['donor'].nunique()} reference donor(s) have anchors; leave-one-donor-"
                         "out needs at least 2 (raise panel.n_reference_donors or lower anchors.min_cells)")
    s = holdout_scores(F, anchors, ruler, group_folds(anchors["donor"]), adaptor_kw=adaptor_kw, trust=True)
    return {"ruler_spearman": s["spearman"], "residualised_spearman": s["residualised_spearman"],
            "trustworthiness": s["trustworthiness"]}


def screen_heads(
    operators: np.ndarray,
    profiles: np.ndarray,
    anchors: pd.DataFrame,
    ruler: pd.DataFrame,
    *,
    adaptor_kw: dict,
) -> pd.DataFrame:
    """One row per head (SCREEN_COLUMNS), ranked by residualised Spearman (1 = best), best first.

    Features of head (l, h) are `profiles @ A[l, h]` (all heads in one product); `anchors` are the reference
    donors' anchors only, so the screen never sees a benchmark (test) donor.
    """
    L, H = operators.shape[:2]
    features = np.einsum("ng,lhgk->lhnk", np.asarray(profiles, dtype=np.float32), operators, optimize=True)
    rows = []
    for layer in range(L):
        for head in range(H):
            scores = score_features(features[layer, head], anchors, ruler, adaptor_kw=adaptor_kw)
            rows.append({"layer": layer, "head": head, "name": f"L{layer}H{head}", **scores})
    table = pd.DataFrame(rows)
    order = table["residualised_spearman"].fillna(-np.inf)
    table["rank"] = order.rank(ascending=False, method="first").astype(int)
    return table[list(SCREEN_COLUMNS)].sort_values("rank", kind="stable").reset_index(drop=True)


def top_heads(table: pd.DataFrame, k: int) -> tuple[list[tuple[int, int]], list[float]]:
    """The k best heads of a screen and weights proportional to their (positive) residualised Spearman."""
    best = table.nsmallest(k, "rank")
    heads = list(zip(best["layer"].astype(int), best["head"].astype(int)))
    score = best["residualised_spearman"].fillna(0).clip(lower=1e-6).to_numpy()
    return heads, (score / score.sum()).tolist()


def definitions_table(
    screens: dict[tuple[str, str], pd.DataFrame],
    pooled: dict[tuple[str, str], pd.DataFrame],
    *,
    configured: str,
    planted: tuple[int, int],
) -> pd.DataFrame:
    """One row per (model, definition): the pooled-drift map's and the best head's screen scores on reference anchors.

    `screens` are head-screen tables and `pooled` one-row score tables of the pooled-drift map, keyed by (model,
    definition); `planted_head_rank` is the rank of the planted head (layer, head) on the planted model.
    """
    rows = []
    for (model, definition), heads in screens.items():
        best = heads.nsmallest(1, "rank").iloc[0]
        pool = pooled[model, definition].iloc[0]
        row = {"model": model, "definition": definition, "configured": definition == configured}
        row.update({f"pooled_drift_{k}": float(pool[k]) for k in SCREEN_COLUMNS[4:]})
        row["best_head"] = best["name"]
        row.update({f"best_head_{k}": float(best[k]) for k in SCREEN_COLUMNS[4:]})
        hit = heads[(heads["layer"] == planted[0]) & (heads["head"] == planted[1])]
        row["planted_head_rank"] = int(hit["rank"].iloc[0]) if model == "planted" and len(hit) else None
        rows.append(row)
    return pd.DataFrame(rows)
