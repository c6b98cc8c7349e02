"""Manifold measures on anchors or cells: agreement of latent geometry with the stage ruler, trustworthiness."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr


def angular_distances(Z: np.ndarray) -> np.ndarray:
    """Condensed pairwise angles (radians) between rows of Z: the adaptor's latent geometry."""
    cosine_distance = pdist(np.asarray(Z, dtype=np.float64), metric="cosine")
    return np.arccos(np.clip(1.0 - cosine_distance, -1.0, 1.0))


def ruler_spearman(Z: np.ndarray, stages: pd.Series | np.ndarray, ruler: pd.DataFrame, *, groups=None) -> float:
    """Spearman between latent angular distance and ruler hop distance over pairs of rows.

    With `groups` (e.g. donors), only pairs from different groups count, so a shared donor effect cannot
    inflate the score.
    """
    stages = np.asarray(stages, dtype=str)
    R = ruler.loc[stages, stages].to_numpy(dtype=float)
    iu = np.triu_indices(len(stages), 1)
    keep = np.ones(iu[0].size, dtype=bool)
    if groups is not None:
        g = np.asarray(groups)
        keep = g[iu[0]] != g[iu[1]]
    latent = angular_distances(Z)[keep]
    target = R[iu][keep]
    if latent.size < 3 or np.ptp(target) == 0:
        return float("nan")
    return float(spearmanr(latent, target)[0])


def trustworthiness(X: np.ndarray, Z: np.ndarray, *, n_neighbors: int = 5) -> float:
    """sklearn trustworthiness of the latent Z with respect to the feature space X."""
    from sklearn.manifold import trustworthiness as tw

    k = max(1, min(n_neighbors, (len(X) - 1) // 2 - 1))
    return float(tw(np.asarray(X), np.asarray(Z), n_neighbors=k))
