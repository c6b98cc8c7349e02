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


def blocked_permutation_test(
    Z: np.ndarray, stages, blocks, ruler: pd.DataFrame, *, n_permutations: int, seed: int, groups=None
) -> tuple[float, float, np.ndarray]:
    """Ruler Spearman of Z against a null with stage labels permuted within blocks (e.g. donor x tissue).

    The latent is fixed; only labels move, so the null keeps every block's composition.
    Returns (observed, p = (1 + #null >= observed) / (1 + B), null).
    """
    rng = np.random.default_rng(seed)
    stages = np.asarray(stages, dtype=str)
    block_index = pd.Series(np.asarray(blocks)).groupby(np.asarray(blocks)).indices
    observed = ruler_spearman(Z, stages, ruler, groups=groups)
    null = np.empty(n_permutations)
    for b in range(n_permutations):
        perm = stages.copy()
        for idx in block_index.values():
            perm[idx] = stages[rng.permutation(idx)]
        null[b] = ruler_spearman(Z, perm, ruler, groups=groups)
    p = (1 + np.sum(null >= observed)) / (1 + n_permutations)
    return observed, float(p), null


def twonn_dimension(X: np.ndarray) -> float:
    """TwoNN intrinsic-dimension estimate (Facco et al. 2017): MLE from ratios of 2nd to 1st neighbour distances."""
    from sklearn.neighbors import NearestNeighbors

    X = np.unique(np.asarray(X, dtype=np.float64), axis=0)
    dist, _ = NearestNeighbors(n_neighbors=3).fit(X).kneighbors(X)
    mu = dist[:, 2] / np.maximum(dist[:, 1], 1e-12)
    mu = mu[np.isfinite(mu) & (mu > 1)]
    return float(len(mu) / np.log(mu).sum())


def pca_dimension(X: np.ndarray, *, variance: float = 0.9) -> int:
    """Number of principal components that explain `variance` of X's variance."""
    X = np.asarray(X, dtype=np.float64)
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(s) / s.sum(), variance) + 1)


def branch_trajectory(
    Z: np.ndarray, depth, in_branch: np.ndarray, root: np.ndarray, *, n_permutations: int, seed: int
) -> tuple[float, float]:
    """Spearman between latent angle from the root centroid and depth along one branch, with a permutation p."""
    from scipy.stats import spearmanr

    Z = np.asarray(Z, dtype=np.float64)
    centre = Z[root].mean(axis=0)
    zn = Z[in_branch] / np.linalg.norm(Z[in_branch], axis=1, keepdims=True)
    cn = centre / np.linalg.norm(centre)
    angle = np.arccos(np.clip(zn @ cn, -1, 1))
    d = np.asarray(depth, dtype=float)[in_branch]
    if len(d) < 3 or np.ptp(d) == 0:
        return float("nan"), float("nan")
    rho = float(spearmanr(angle, d)[0])
    rng = np.random.default_rng(seed)
    null = np.array([spearmanr(angle, rng.permutation(d))[0] for _ in range(n_permutations)])
    return rho, float((1 + np.sum(null >= rho)) / (1 + n_permutations))
