"""svd: truncated SVD (uncentred, sparse-friendly) of log1p panel expression, fit on the training donors (sklearn)."""

import numpy as np
from sklearn.decomposition import TruncatedSVD


def embed(train, test, params):
    """TruncatedSVD (params n_comps, default 10) fit on train cells' X; test cells transformed with the same factors."""
    svd = TruncatedSVD(n_components=params.get("n_comps", 10), random_state=params["seed"])
    z_train = svd.fit_transform(train.X)
    return z_train.astype(np.float32), svd.transform(test.X).astype(np.float32), {"svd_components": int(svd.components_.size)}
