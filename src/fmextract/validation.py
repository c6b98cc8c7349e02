"""Manifold measures on anchors or cells: agreement of latent geometry with the stage ruler, trustworthiness."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist
from scipy.stats import rankdata, spearmanr

from fmextract.logs import progress as progress_log


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


def _unit_ranks(x: np.ndarray) -> np.ndarray:
    """Centred average ranks scaled to unit norm, so Spearman of two vectors is the dot product of theirs."""
    r = rankdata(x)
    r -= r.mean()
    norm = np.linalg.norm(r)
    return r / norm if norm > 0 else np.full_like(r, np.nan)


def blocked_permutation_test(
    Z: np.ndarray, stages, blocks, ruler: pd.DataFrame, *, n_permutations: int, seed: int, groups=None
) -> tuple[float, float, np.ndarray]:
    """Ruler Spearman of Z against a null with stage labels permuted within blocks (e.g. donor x tissue).

    The latent is fixed; only labels move, so the null keeps every block's composition. Same statistic as
    `ruler_spearman`, computed fast: latent ranks once, ruler ranks per permutation by counting (few ruler values).
    Returns (observed, p = (1 + #null >= observed) / (1 + B), null); p is NaN when the observed statistic is.
    """
    rng = np.random.default_rng(seed)
    stages = np.asarray(stages, dtype=str)
    missing = sorted(set(stages) - set(ruler.index.astype(str)))
    if missing:
        raise KeyError(f"stages {missing[:5]} are not in the ruler; the stage table and stage graph must cover them")
    codes = ruler.index.astype(str).get_indexer(stages)
    levels, value_code = np.unique(ruler.to_numpy(dtype=float), return_inverse=True)
    value_code = value_code.reshape(ruler.shape)
    i, j = np.triu_indices(len(stages), 1)
    keep = np.ones(i.size, dtype=bool) if groups is None else np.asarray(groups)[i] != np.asarray(groups)[j]
    i, j = i[keep], j[keep]
    latent = _unit_ranks(angular_distances(Z)[keep])

    def statistic(c: np.ndarray) -> float:
        t = value_code[c[i], c[j]]
        counts = np.bincount(t, minlength=len(levels))
        if latent.size < 3 or np.count_nonzero(counts) < 2:
            return float("nan")
        ranks = (np.cumsum(counts) - (counts - 1) / 2)[t]  # average rank of each ruler value
        ranks -= ranks.mean()
        return float(latent @ ranks / np.linalg.norm(ranks))

    block_index = pd.Series(np.asarray(blocks)).groupby(np.asarray(blocks)).indices
    observed = statistic(codes)
    null = np.empty(n_permutations)
    for b in progress_log(range(n_permutations), "blocked permutation test (permutations)"):
        perm = codes.copy()
        for idx in block_index.values():
            perm[idx] = codes[rng.permutation(idx)]
        null[b] = statistic(perm)
    p = (1 + np.sum(null >= observed)) / (1 + n_permutations) if np.isfinite(observed) else float("nan")
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
    Z = np.asarray(Z, dtype=np.float64)
    centre = Z[root].mean(axis=0)
    zn = Z[in_branch] / np.linalg.norm(Z[in_branch], axis=1, keepdims=True)
    cn = centre / np.linalg.norm(centre)
    angle = np.arccos(np.clip(zn @ cn, -1, 1))
    d = np.asarray(depth, dtype=float)[in_branch]
    if len(d) < 3 or np.ptp(d) == 0:
        return float("nan"), float("nan")
    ra, rd = _unit_ranks(angle), _unit_ranks(d)  # Spearman = dot product of unit ranks; rank once, permute ranks
    rho = float(ra @ rd)
    rng = np.random.default_rng(seed)
    null = np.array([ra @ rd[rng.permutation(len(rd))] for _ in range(n_permutations)])
    return rho, float((1 + np.sum(null >= rho)) / (1 + n_permutations))


def _holdout_scores(F, meta, ruler, folds, adaptor_kw) -> float:
    """Mean ruler Spearman on held-out rows of each fold (adaptor refitted without them); pairs with >= 1 held-out row."""
    from fmextract.adaptor import fit_adaptor

    scores = []
    for held in folds:
        train = ~held
        if train.sum() < 3 or held.sum() < 2:
            continue
        adaptor = fit_adaptor(F[train], meta["stage"].to_numpy()[train], ruler, **adaptor_kw)
        Z = adaptor.transform(F)
        stages = meta["stage"].to_numpy()
        # score pairs with at least one held-out row: group id = held-out rows each unique, train rows share one id
        iu = np.triu_indices(len(Z), 1)
        keep = held[iu[0]] | held[iu[1]]
        latent = angular_distances(Z)[keep]
        target = ruler.loc[stages, stages].to_numpy(dtype=float)[iu][keep]
        if np.ptp(target) > 0:
            scores.append(spearmanr(latent, target)[0])
    return float(np.mean(scores)) if scores else float("nan")


def manifold_metrics(
    F: np.ndarray,
    meta: pd.DataFrame,
    ruler: pd.DataFrame,
    *,
    adaptor_kw: dict,
    n_permutations: int,
    dims: list[int],
    seed: int,
) -> dict[str, float]:
    """Manifold validation of anchor features F (rows described by meta: donor, tissue, stage, branch, depth).

    trustworthiness (latent vs features; ungated, also vs the ruler), ruler Spearman under random (5-fold), donor
    (leave-one-donor-out) and branch (leave-one-branch-out) holdout, blocked-permutation p (stage labels permuted
    within donor x tissue), dimension sweep (donor-holdout Spearman at each d), intrinsic dimension of F (TwoNN,
    PCA 90%).
    """
    from fmextract.adaptor import fit_adaptor

    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    adaptor = fit_adaptor(F, meta["stage"], ruler, **adaptor_kw)
    Z = adaptor.transform(F)
    out["trustworthiness"] = trustworthiness(F, Z)
    out["trustworthiness_ruler"] = ruler_trustworthiness(Z, meta["stage"], ruler, seed=seed)
    fold = rng.permutation(len(F)) % 5
    out["spearman_random_holdout"] = _holdout_scores(F, meta, ruler, [fold == k for k in range(5)], adaptor_kw)
    donors = meta["donor"].to_numpy()
    donor_folds = [donors == d for d in np.unique(donors)]
    out["spearman_donor_holdout"] = _holdout_scores(F, meta, ruler, donor_folds, adaptor_kw)
    branches = meta["branch"].to_numpy()
    out["spearman_branch_holdout"] = _holdout_scores(F, meta, ruler, [branches == b for b in np.unique(branches)], adaptor_kw)
    blocks = meta["donor"].astype(str) + "|" + meta["tissue"].astype(str)
    _, out["blocked_permutation_p"], _ = blocked_permutation_test(
        Z, meta["stage"], blocks, ruler, n_permutations=n_permutations, seed=seed)
    for d in dims:  # the configured width was scored above; no need to refit it
        out[f"spearman_donor_holdout_d{d}"] = (out["spearman_donor_holdout"] if d == adaptor_kw["d_latent"] else
                                               _holdout_scores(F, meta, ruler, donor_folds, {**adaptor_kw, "d_latent": d}))
    out["intrinsic_dimension_twonn"] = twonn_dimension(F)
    out["pca_dimension_90"] = float(pca_dimension(F))
    return out


def shuffle_gene_panel(X: np.ndarray, *, seed: int) -> np.ndarray:
    """Negative control: permute each gene's values across rows independently (no gene-gene or gene-stage structure left)."""
    rng = np.random.default_rng(seed)
    X = np.array(X, copy=True)
    for j in range(X.shape[1]):
        X[:, j] = X[rng.permutation(X.shape[0]), j]
    return X


def zero_shot_metrics(F: np.ndarray, meta: pd.DataFrame, Z: np.ndarray, ruler: pd.DataFrame, *, n_permutations: int,
                      seed: int) -> dict[str, float]:
    """A frozen head's latent Z on an independent panel: trustworthiness (vs features, vs ruler), cross-donor ruler
    Spearman, blocked p."""
    blocks = meta["donor"].astype(str) + "|" + meta["tissue"].astype(str)
    rho, p, _ = blocked_permutation_test(Z, meta["stage"], blocks, ruler, n_permutations=n_permutations, seed=seed,
                                         groups=meta["donor"])
    return {"trustworthiness": trustworthiness(F, Z),
            "trustworthiness_ruler": ruler_trustworthiness(Z, meta["stage"], ruler, seed=seed),
            "spearman_zero_shot": rho, "blocked_permutation_p": p}


def branch_trajectories(Z: np.ndarray, meta: pd.DataFrame, *, n_permutations: int, seed: int) -> dict[str, float]:
    """Per branch: Spearman of latent angle from the root anchors (minimum depth) with depth, and its permutation p."""
    depth = meta["depth"].to_numpy(dtype=float)
    root = depth == depth.min()
    out = {}
    for branch in sorted(meta["branch"].unique()):
        in_branch = (meta["branch"] == branch).to_numpy() | root
        if root.all() or (meta["branch"] == branch).to_numpy()[root].all():
            continue
        rho, p = branch_trajectory(Z, depth, in_branch, root, n_permutations=n_permutations, seed=seed)
        out[f"trajectory_{branch}_rho"], out[f"trajectory_{branch}_p"] = rho, p
    return out


#: gated metrics -> (gate name in config validation.gates, direction)
GATES = {
    "trustworthiness": ("trustworthiness", ">="),
    "spearman_random_holdout": ("spearman", ">="),
    "spearman_donor_holdout": ("spearman", ">="),
    "spearman_branch_holdout": ("spearman", ">="),
    "spearman_zero_shot": ("spearman", ">="),
    "blocked_permutation_p": ("p_value", "<="),
}


def gate_table(values: dict[str, float], panel: str, gates: dict[str, float]) -> pd.DataFrame:
    """Rows (metric, panel, value, threshold, passed); ungated metrics get no threshold and passed = None.

    A last row `all_gates` gives the share of gates passed (value) and the panel's verdict (passed = every gate).
    """
    rows = []
    for metric, value in values.items():
        threshold, passed = np.nan, None
        if metric in GATES:
            name, direction = GATES[metric]
            threshold = gates[name]
            ok = value >= threshold if direction == ">=" else value <= threshold
            passed = bool(np.isfinite(value) and ok)
        rows.append({"metric": metric, "panel": panel, "value": value, "threshold": threshold, "passed": passed})
    verdicts = [r["passed"] for r in rows if r["passed"] is not None]
    if verdicts:  # the panel's verdict: share of gates passed; passed only if every gate passed
        rows.append({"metric": "all_gates", "panel": panel, "value": float(np.mean(verdicts)), "threshold": 1.0,
                     "passed": all(verdicts)})
    return pd.DataFrame(rows)
