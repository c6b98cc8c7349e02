"""Helpers the baseline method files share: the label-free root rule, donor-local pseudotime, stage->branch sums.

Root rule (DPT, Palantir): fit a PCA on the training cells' log1p panel expression, take the centroid of the
training cells at the smallest ``depth`` (the stem/progenitor stage), and in each test donor choose the cell
nearest to that centroid. Only training labels are used; the test cells contribute expression alone.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from fmextract.errors import InputError

log = logging.getLogger(__name__)


def progenitor_distance(train: ad.AnnData, test: ad.AnnData, *, n_comps: int = 20, seed: int = 0) -> np.ndarray:
    """Distance of every test cell to the training progenitor centroid, in a PCA fit on train (no test labels)."""
    if "depth" not in train.obs:
        raise InputError("train.obs: column 'depth' is missing; the root rule needs training depths (stage table)")
    n_comps = max(1, min(n_comps, train.n_obs - 1, train.n_vars - 1))
    fit = ad.AnnData(X=train.X.copy(), var=pd.DataFrame(index=train.var_names))
    sc.pp.pca(fit, n_comps=n_comps, random_state=seed)
    loadings = fit.varm["PCs"]
    mean = np.asarray(train.X.mean(axis=0)).ravel()
    depth = train.obs["depth"].to_numpy(dtype=float)
    progenitor = fit.obsm["X_pca"][depth == np.nanmin(depth)].mean(axis=0)
    z_test = np.asarray(test.X @ loadings - mean @ loadings)
    return np.linalg.norm(z_test - progenitor, axis=1)


def finite_pseudotime(pt: np.ndarray) -> np.ndarray:
    """Replace non-finite values (cells disconnected from the root) by the largest finite value: 'latest'."""
    pt = np.asarray(pt, dtype=float).copy()
    bad = ~np.isfinite(pt)
    if bad.any():
        log.info("%d of %d cells have no finite pseudotime (disconnected); set to the max finite", bad.sum(), pt.size)
        pt[bad] = pt[~bad].max() if (~bad).any() else 0.0
    return pt


def donor_local_pseudotime(
    train: ad.AnnData,
    test: ad.AnnData,
    fit_donor: Callable[[ad.AnnData, int], np.ndarray],
    *,
    min_cells: int = 5,
    n_comps: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Run `fit_donor(donor_cells, root_position)` on each test donor separately; roots from the label-free rule.

    A donor with fewer than `min_cells` cells is too small for a graph: its pseudotime is the cell's distance to
    the progenitor centroid (the same quantity that picks the root), so it still orders cells without labels.
    """
    dist = progenitor_distance(train, test, n_comps=n_comps, seed=seed)
    donors = test.obs["donor"].astype(str).to_numpy()
    out = np.zeros(test.n_obs, dtype=float)
    for donor in pd.unique(donors):
        idx = np.flatnonzero(donors == donor)
        if idx.size < min_cells:
            log.info("donor %s: %d cells (< %d); pseudotime = distance to progenitor", donor, idx.size, min_cells)
            out[idx] = dist[idx]
            continue
        root = int(np.argmin(dist[idx]))
        out[idx] = finite_pseudotime(fit_donor(test[idx].copy(), root))
    return out


def stage_branch_map(obs: pd.DataFrame) -> pd.Series:
    """Each training stage's branch (its most frequent branch among training cells; coarse labels have no stage)."""
    pairs = obs.loc[obs["stage"].notna(), ["stage", "branch"]].astype(str)
    return pairs.groupby("stage")["branch"].agg(lambda b: b.value_counts().index[0])


def branch_proba_from_stages(stage_proba: pd.DataFrame, stage_to_branch: pd.Series) -> pd.DataFrame:
    """Branch probabilities as sums of stage probabilities within each branch."""
    missing = set(stage_proba.columns) - set(stage_to_branch.index)
    if missing:
        raise InputError(f"stage_proba: stages {sorted(missing)} have no branch; pass a stage->branch map with them")
    branches = stage_to_branch.loc[stage_proba.columns].to_numpy()
    return stage_proba.T.groupby(branches).sum().T


def subtype_proba_from_stages(stage_proba: pd.DataFrame, subtypes: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """Positive-class probability per subtype: P(positive stages) / P(positive or negative stages)."""
    out = {}
    for name, spec in subtypes.items():
        pos = stage_proba.reindex(columns=list(spec["positive"]), fill_value=0.0).sum(axis=1).to_numpy()
        neg = stage_proba.reindex(columns=list(spec["negative"]), fill_value=0.0).sum(axis=1).to_numpy()
        total = pos + neg
        out[f"{name}_proba"] = np.divide(pos, total, out=np.full_like(pos, 0.5), where=total > 0)
    return out
