"""pca: principal components of log1p panel expression, fit on the training donors only (scanpy)."""

import numpy as np
import scanpy as sc


def embed(train, test, params):
    """PCA (params n_comps, default 10) fit on train cells; test cells projected with the same loadings and means."""
    fit = train.copy()
    sc.pp.pca(fit, n_comps=params.get("n_comps", 10), random_state=params["seed"])
    loadings = fit.varm["PCs"]
    mean = np.asarray(train.X.mean(axis=0)).ravel()
    project = lambda a: np.asarray(a.X @ loadings - mean @ loadings, dtype=np.float32)
    return fit.obsm["X_pca"].astype(np.float32), project(test), {"pca_loadings": int(loadings.size)}
