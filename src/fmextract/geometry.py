"""Shared geometry of latents and rulers: the head screen (extraction) and manifold validation (evaluation) both
score a latent against the stage ruler with these, so neither imports the other.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist
from scipy.stats import rankdata, spearmanr


def angular_distances(Z: np.ndarray) -> np.ndarray:
    """Condensed pairwise angles (radians) between rows of Z: the adaptor's latent geometry."""
    cosine_distance = pdist(np.asarray(Z, dtype=np.float64), metric="cosine")
    return np.arccos(np.clip(1.0 - cosine_distance, -1.0, 1.0))


def ruler_pairs(stages, ruler: pd.DataFrame) -> np.ndarray:
    """Condensed ruler distances between the stages of rows (same pair order as `angular_distances`)."""
    stages = np.asarray(stages, dtype=str)
    R = ruler.loc[stages, stages].to_numpy(dtype=float)
    return R[np.triu_indices(len(stages), 1)]


def ruler_spearman(Z: np.ndarray, stages: pd.Series | np.ndarray, ruler: pd.DataFrame, *, groups=None) -> float:
    """Spearman between latent angular distance and ruler hop distance over pairs of rows.

    With `groups` (e.g. donors), only pairs from different groups count, so a shared donor effect cannot
    inflate the score.
    """
    stages = np.asarray(stages, dtype=str)
    iu = np.triu_indices(len(stages), 1)
    keep = np.ones(iu[0].size, dtype=bool)
    if groups is not None:
        g = np.asarray(groups)
        keep = g[iu[0]] != g[iu[1]]
    latent = angular_distances(Z)[keep]
    target = ruler_pairs(stages, ruler)[keep]
    if latent.size < 3 or np.ptp(target) == 0:
        return float("nan")
    return float(spearmanr(latent, target)[0])


def same_group_pairs(meta: pd.DataFrame, keys: Sequence[str] = ("donor", "tissue")) -> np.ndarray:
    """Pair indicators [n_pairs, len(keys)]: 1 where both rows share the key's value (condensed pair order)."""
    i, j = np.triu_indices(len(meta), 1)
    cols = [(meta[k].astype(str).to_numpy()[i] == meta[k].astype(str).to_numpy()[j]) for k in keys]
    return np.column_stack(cols).astype(float) if cols else np.zeros((i.size, 0))


def residualised_spearman(latent: np.ndarray, target: np.ndarray, confounds: np.ndarray) -> float:
    """Spearman of the residuals of both distances after least-squares regression on [1, confounds].

    The head-screen score (docs/method.md): same-donor and same-tissue pair indicators are regressed out of the latent
    and the ruler distance before ranking, so a donor or tissue effect cannot carry the score.
    """
    latent, target = np.asarray(latent, dtype=float), np.asarray(target, dtype=float)
    if latent.size < 3 or np.ptp(target) == 0:
        return float("nan")
    X = np.column_stack([np.ones(latent.size), np.asarray(confounds, dtype=float).reshape(latent.size, -1)])
    beta, *_ = np.linalg.lstsq(X, np.column_stack([latent, target]), rcond=None)
    resid = np.column_stack([latent, target]) - X @ beta
    if np.ptp(resid[:, 1]) < 1e-12 or np.ptp(resid[:, 0]) < 1e-12:
        return float("nan")
    return float(spearmanr(resid[:, 0], resid[:, 1])[0])


def trustworthiness(X: np.ndarray, Z: np.ndarray, *, n_neighbors: int = 5) -> float:
    """sklearn trustworthiness of the latent Z with respect to the feature space X (NaN below 4 rows)."""
    from sklearn.manifold import trustworthiness as tw

    if len(X) < 4:
        return float("nan")
    k = max(1, min(n_neighbors, (len(X) - 1) // 2 - 1))
    return float(tw(np.asarray(X), np.asarray(Z), n_neighbors=k))


def ruler_trustworthiness(Z: np.ndarray, stages, ruler: pd.DataFrame, *, seed: int, n_neighbors: int = 5) -> float:
    """sklearn trustworthiness of the latent Z with respect to the ruler (row distance = ruler distance of the stages).

    Supplementary to the gated trustworthiness (latent vs features), which any linear latent of strongly correlated
    features passes: this asks whether latent neighbours are ruler neighbours. Rows share stages, so ruler ties are
    broken by a seeded jitter far below the ruler's smallest step; disconnected stages count as farther than any path.
    """
    from sklearn.manifold import trustworthiness as tw

    stages = np.asarray(stages, dtype=str)
    R = ruler.loc[stages, stages].to_numpy(dtype=float)
    finite = np.unique(R[np.isfinite(R)])
    R[~np.isfinite(R)] = finite.max() + 1 if finite.size else 1.0
    step = np.diff(finite).min() if finite.size > 1 else 1.0
    J = np.random.default_rng(seed).random(R.shape)
    J = 1e-3 * step * (J + J.T) / 2
    np.fill_diagonal(J, 0.0)
    k = max(1, min(n_neighbors, (len(R) - 1) // 2 - 1))
    return float(tw(R + J, np.asarray(Z), n_neighbors=k, metric="precomputed"))


def unit_ranks(x: np.ndarray) -> np.ndarray:
    """Centred average ranks scaled to unit norm, so Spearman of two vectors is the dot product of theirs."""
    r = rankdata(x)
    r -= r.mean()
    norm = np.linalg.norm(r)
    return r / norm if norm > 0 else np.full_like(r, np.nan)


def holdout_scores(
    F: np.ndarray,
    meta: pd.DataFrame,
    ruler: pd.DataFrame,
    folds: Sequence[np.ndarray],
    *,
    adaptor_kw: dict | None = None,
    adaptor=None,
    trust: bool = False,
    residualised: bool = True,
) -> dict[str, float]:
    """Ruler agreement of anchors held out of each fold, averaged over folds.

    Per fold (a boolean mask of held-out rows): the adaptor is refitted on the other rows (`adaptor_kw`), or the
    given frozen `adaptor` is used as is; pairs with at least one held-out row are scored: raw Spearman of latent
    angle vs ruler distance (`spearman`) and the same with same-donor and same-tissue pair indicators regressed
    out of both (`residualised_spearman`); with `trust`, trustworthiness of the held-out rows' latent vs features.
    A fold with < 2 held-out or < 3 training rows is skipped (refits only).
    """
    if (adaptor is None) == (adaptor_kw is None):
        raise ValueError("holdout_scores: give adaptor_kw (refit per fold) or a frozen adaptor, not both")
    from fmextract.adaptor import fit_adaptor

    stages = meta["stage"].to_numpy(dtype=str)
    iu = np.triu_indices(len(F), 1)
    target_all = ruler_pairs(stages, ruler)
    confounds_all = same_group_pairs(meta)
    frozen_D = angular_distances(adaptor.transform(F)) if adaptor is not None else None  # once, not per fold
    scores: dict[str, list[float]] = {"spearman": [], "residualised_spearman": [], "trustworthiness": []}
    for held in folds:
        held = np.asarray(held, dtype=bool)
        if adaptor is None:
            if (~held).sum() < 3 or held.sum() < 2:
                continue
            Z = fit_adaptor(F[~held], stages[~held], ruler, **adaptor_kw).transform(F)
        else:
            if held.sum() < 1:
                continue
            Z = None
        keep = held[iu[0]] | held[iu[1]]
        latent, target = (angular_distances(Z) if Z is not None else frozen_D)[keep], target_all[keep]
        if latent.size < 3 or np.ptp(target) == 0:
            continue
        scores["spearman"].append(float(unit_ranks(latent) @ unit_ranks(target)))  # = Spearman, without scipy's checks
        if residualised:
            scores["residualised_spearman"].append(residualised_spearman(latent, target, confounds_all[keep]))
        if trust:
            Z_held = Z[held] if Z is not None else adaptor.transform(F[held])
            scores["trustworthiness"].append(trustworthiness(F[held], Z_held))
    out = {k: float(np.nanmean(v)) if len(v) and np.isfinite(v).any() else float("nan") for k, v in scores.items()}
    if not trust:
        out.pop("trustworthiness")
    if not residualised:
        out.pop("residualised_spearman")
    return out


def group_folds(labels) -> list[np.ndarray]:
    """One held-out mask per distinct label (leave-one-group-out), in sorted label order."""
    labels = np.asarray(labels, dtype=str)
    return [labels == g for g in np.unique(labels)]
