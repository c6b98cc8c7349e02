"""Manifold validation on anchors (docs/method.md): internal (the adaptor's own reference anchors, holdout refits),
external (donors the adaptor never saw, FROZEN adaptor: the claim), zero-shot transfer, the controls whose verdict
must fail, gate tables and the per-gate separation of real panels from controls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.logs import progress as progress_log
from fmextract.geometry import (  # noqa: F401  (re-exported: the measures validation is made of)
    angular_distances,
    group_folds,
    holdout_scores,
    residualised_spearman,
    ruler_pairs,
    ruler_spearman,
    ruler_trustworthiness,
    same_group_pairs,
    trustworthiness,
    unit_ranks,
)


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
    latent = unit_ranks(angular_distances(Z)[keep])

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
    ra, rd = unit_ranks(angle), unit_ranks(d)  # Spearman = dot product of unit ranks; rank once, permute ranks
    rho = float(ra @ rd)
    rng = np.random.default_rng(seed)
    null = np.array([ra @ rd[rng.permutation(len(rd))] for _ in range(n_permutations)])
    return rho, float((1 + np.sum(null >= rho)) / (1 + n_permutations))


def holdout_folds(meta: pd.DataFrame, *, seed: int) -> dict[str, list[np.ndarray]]:
    """The three holdout schemes of the gates: random (5 seeded folds), donor and branch (leave-one-out)."""
    fold = np.random.default_rng(seed).permutation(len(meta)) % 5
    return {"random": [fold == k for k in range(5)], "donor": group_folds(meta["donor"]),
            "branch": group_folds(meta["branch"])}


def _blocks(meta: pd.DataFrame) -> pd.Series:
    return meta["donor"].astype(str) + "|" + meta["tissue"].astype(str)


def internal_metrics(
    F: np.ndarray,
    meta: pd.DataFrame,
    ruler: pd.DataFrame,
    *,
    adaptor,
    adaptor_kw: dict | None,
    n_permutations: int,
    dims: list[int],
    seed: int,
) -> dict[str, float]:
    """Internal panel: the reference donors' anchors F, of the donors the `adaptor` was fitted on.

    Trustworthiness and the blocked permutation p use the adaptor's in-sample latent (circular: labelled internal);
    holdout Spearman refits an adaptor (`adaptor_kw`, the anchor recipe) without each fold and scores pairs with a
    held-out anchor (random 5-fold, leave-one-donor-out, leave-one-branch-out), or, with `adaptor_kw` None (the
    cell-trained adaptor, fitted on cells, not anchors), scores the same folds under the frozen adaptor (in-sample);
    dimension sweep (donor holdout at each d; refits only); intrinsic dimension of F (TwoNN, PCA 90%).
    """
    Z = adaptor.transform(F)
    out: dict[str, float] = {"n_anchors": float(len(F)), "n_donors": float(meta["donor"].nunique()),
                             "trustworthiness": trustworthiness(F, Z),
                             "trustworthiness_ruler": ruler_trustworthiness(Z, meta["stage"], ruler, seed=seed)}
    folds = holdout_folds(meta, seed=seed)
    how = dict(adaptor=adaptor) if adaptor_kw is None else dict(adaptor_kw=adaptor_kw)
    for name, fl in folds.items():
        out[f"spearman_{name}_holdout"] = holdout_scores(F, meta, ruler, fl, **how)["spearman"]
    _, out["blocked_permutation_p"], _ = blocked_permutation_test(Z, meta["stage"], _blocks(meta), ruler,
                                                                  n_permutations=n_permutations, seed=seed)
    for d in dims if adaptor_kw is not None else []:  # the configured width was scored above; no need to refit it
        out[f"spearman_donor_holdout_d{d}"] = (
            out["spearman_donor_holdout"] if d == adaptor_kw["d_latent"] else
            holdout_scores(F, meta, ruler, folds["donor"], adaptor_kw={**adaptor_kw, "d_latent": d})["spearman"])
    out["intrinsic_dimension_twonn"] = twonn_dimension(F)
    out["pca_dimension_90"] = float(pca_dimension(F))
    return out


def external_metrics(
    F: np.ndarray, meta: pd.DataFrame, ruler: pd.DataFrame, *, adaptor, n_permutations: int, seed: int
) -> dict[str, float]:
    """External panel: anchors of donors the FROZEN `adaptor` never saw; the same gates, nothing refitted.

    Trustworthiness (latent vs features); holdout Spearman over the same fold schemes as the internal panel, each
    fold scoring the pairs with a held-out anchor under the frozen latent; residualised Spearman over all pairs
    (same-donor and same-tissue indicators regressed out; reported, not gated); blocked permutation p (stage labels
    permuted within donor x tissue): the adaptor never saw these labels, so the null is not circular.
    """
    Z = adaptor.transform(F)
    out: dict[str, float] = {"n_anchors": float(len(F)), "n_donors": float(meta["donor"].nunique()),
                             **frozen_gate_values(F, meta, ruler, adaptor=adaptor, seed=seed),
                             "trustworthiness_ruler": ruler_trustworthiness(Z, meta["stage"], ruler, seed=seed)}
    _, out["blocked_permutation_p"], _ = blocked_permutation_test(Z, meta["stage"], _blocks(meta), ruler,
                                                                  n_permutations=n_permutations, seed=seed)
    return out


def frozen_gate_values(F: np.ndarray, meta: pd.DataFrame, ruler: pd.DataFrame, *, adaptor, seed: int) -> dict[str, float]:
    """The external protocol's values that need no permutation: trustworthiness (latent vs features), holdout ruler
    Spearman under the frozen adaptor (random, donor, branch folds) and the residualised Spearman over all pairs.

    `external_metrics` reports these; the attribution bootstrap recomputes them on donor resamples, for the
    extracted features and each comparator alike.
    """
    Z = adaptor.transform(F)
    out = {"trustworthiness": trustworthiness(F, Z)}
    for name, fl in holdout_folds(meta, seed=seed).items():
        out[f"spearman_{name}_holdout"] = holdout_scores(F, meta, ruler, fl, adaptor=adaptor,
                                                         residualised=False)["spearman"]
    out["residualised_spearman"] = residualised_spearman(angular_distances(Z), ruler_pairs(meta["stage"], ruler),
                                                         same_group_pairs(meta))
    return out


def permuted_ruler(ruler: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """Null-branch ruler: the stage graph relabelled by a seeded permutation of its stages (distances travel along)."""
    perm = np.random.default_rng(seed).permutation(len(ruler))
    R = ruler.to_numpy()[np.ix_(perm, perm)]
    return pd.DataFrame(R, index=ruler.index, columns=ruler.columns)


def permuted_operator(matrix: np.ndarray, *, seed: int) -> np.ndarray:
    """Operator-level control: each G x G block of a G x kG map with its gene labels permuted, P A Pᵀ."""
    M = np.asarray(matrix)
    G = M.shape[0]
    if M.shape[1] % G:
        raise ValueError(f"permuted_operator: a {M.shape} map is not made of {G} x {G} operator blocks")
    perm = np.random.default_rng(seed).permutation(G)
    return np.concatenate([M[:, b * G : (b + 1) * G][np.ix_(perm, perm)] for b in range(M.shape[1] // G)], axis=1)


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
    Spearman and its residualised form, blocked p (of the cross-donor Spearman)."""
    _, p, _ = blocked_permutation_test(Z, meta["stage"], _blocks(meta), ruler, n_permutations=n_permutations, seed=seed,
                                       groups=meta["donor"])
    return {**zero_shot_gate_values(F, meta, Z, ruler),
            "trustworthiness_ruler": ruler_trustworthiness(Z, meta["stage"], ruler, seed=seed),
            "blocked_permutation_p": p}


def zero_shot_gate_values(F: np.ndarray, meta: pd.DataFrame, Z: np.ndarray, ruler: pd.DataFrame) -> dict[str, float]:
    """Zero-shot values that need no permutation: trustworthiness, the cross-donor ruler Spearman (pairs of different
    donors; the blocked test's observed statistic) and the residualised Spearman over all pairs (same-donor and
    same-tissue indicators regressed out; the paper's 0.476)."""
    return {"trustworthiness": trustworthiness(F, Z),
            "spearman_zero_shot": ruler_spearman(Z, meta["stage"], ruler, groups=meta["donor"]),
            "residualised_spearman": residualised_spearman(angular_distances(Z), ruler_pairs(meta["stage"], ruler),
                                                           same_group_pairs(meta))}


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


def panel_role(panel: str) -> str:
    """What a manifold_validation panel is: real, control (its verdict must fail), positive_control, comparator (raw
    expression through the same protocol: it may pass), supplementary."""
    if panel.startswith("comparator_"):
        return "comparator"
    if panel == "planted_model":
        return "positive_control"
    if panel.startswith("communication"):
        return "supplementary"
    if panel.startswith("control_"):
        return "control"
    return "real"


def gate_separation(table: pd.DataFrame) -> pd.DataFrame:
    """`panel_separation` per adaptor (the table's `adaptor` column, first column of the result) when it has one."""
    if "adaptor" not in table:
        return panel_separation(table)
    parts = [panel_separation(sub).assign(adaptor=name) for name, sub in table.groupby("adaptor", sort=False)]
    out = pd.concat(parts, ignore_index=True)
    return out[["adaptor", *[c for c in out.columns if c != "adaptor"]]]


def panel_separation(table: pd.DataFrame) -> pd.DataFrame:
    """Per gate (and the verdict, `all_gates`): its value on every panel, one column each, and how it separates.

    Columns after the panels: `real_passed` (real panels passing / real panels), `controls_failed` (controls failing
    / controls), `positive_passed` (the planted model passes) and `separates` (every real panel passes, every
    control fails and the positive control passes; empty where the gate has no real panel or no control): which
    gates actually discriminate on this data. Comparators have a column but count in none of these.
    """
    gated = table[table["threshold"].notna()]
    panels = list(dict.fromkeys(gated["panel"]))
    rows = []
    for metric in dict.fromkeys(gated["metric"]):
        sub = gated[gated["metric"] == metric].set_index("panel")
        row = {"metric": metric, "threshold": float(sub["threshold"].iloc[0])}
        row.update({p: float(sub.loc[p, "value"]) if p in sub.index else np.nan for p in panels})
        passed = {p: bool(sub.loc[p, "passed"]) for p in sub.index}
        by_role = {r: [p for p in passed if panel_role(p) == r] for r in ("real", "control", "positive_control")}
        real_ok = sum(passed[p] for p in by_role["real"])
        ctrl_fail = sum(not passed[p] for p in by_role["control"])
        pos_ok = all(passed[p] for p in by_role["positive_control"])
        row["real_passed"] = f"{real_ok}/{len(by_role['real'])}"
        row["controls_failed"] = f"{ctrl_fail}/{len(by_role['control'])}"
        row["positive_passed"] = bool(pos_ok) if by_role["positive_control"] else None
        row["separates"] = (real_ok == len(by_role["real"]) and ctrl_fail == len(by_role["control"]) and pos_ok
                            if by_role["real"] and by_role["control"] else None)
        rows.append(row)
    return pd.DataFrame(rows)
