"""The folded algorithm: one G x d matrix + offset equals feature map -> adaptor; its cache over a backed panel."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmextract import cache
from fmextract.adaptor import Adaptor
from fmextract.chunks import open_backed
from fmextract.errors import InputError
from fmextract.features import hard_sparse_map, low_rank_map, pooled_drift_map
from fmextract.latent import fold, write_latent_cache

G = 80


@pytest.fixture(scope="module")
def parts():
    """A pooled-drift map of random row-stochastic operators, log1p expression and an adaptor fitted to its scale."""
    rng = np.random.default_rng(0)
    ops = rng.dirichlet(np.ones(G), size=(3, 2, G)).astype(np.float32)
    fmap = pooled_drift_map(ops, [f"g{i}" for i in range(G)])
    X = sp.random(500, G, density=0.2, format="csr", random_state=1, dtype=np.float32)
    X.data = np.log1p(X.data * 50)
    F = fmap.transform(X)
    adaptor = Adaptor(W=rng.normal(size=(10, fmap.n_features)).astype(np.float32), b=F.mean(0),
                      scale=float(np.sqrt(((F - F.mean(0)) ** 2).sum(1).mean())))
    return fmap, adaptor, X


@pytest.mark.parametrize("kind", ["dense", "low_rank", "sparse"])
def test_folded_equals_feature_map_then_adaptor(parts, kind):
    fmap, adaptor, X = parts
    fmap = {"dense": fmap, "low_rank": low_rank_map(fmap, 16),
            "sparse": hard_sparse_map(low_rank_map(fmap, 16), n_factors=4, n_genes=10)}[kind]
    unfolded = fmap.transform(X, then=adaptor.transform)
    folded = fold(fmap, adaptor)
    assert folded.matrix.shape == (G, 10) and folded.offset.shape == (10,) and folded.matrix.dtype == np.float32
    z = folded.transform(X, batch_size=77)
    np.testing.assert_allclose(z, unfolded, rtol=0, atol=1e-5 * np.abs(unfolded).max())
    np.testing.assert_allclose(folded.transform(X.toarray()), z, rtol=0, atol=1e-5 * np.abs(z).max())  # dense input


def test_reindex_and_errors(parts):
    fmap, adaptor, X = parts
    folded = fold(fmap, adaptor)
    other = ["extra", *reversed(folded.genes), "more"]
    wider = folded.reindex(other)
    X_other = sp.hstack([sp.csr_matrix((X.shape[0], 1)), X[:, ::-1], sp.csr_matrix(np.ones((X.shape[0], 1)))]).tocsr()
    np.testing.assert_allclose(wider.transform(X_other), folded.transform(X), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="adaptor expects"):
        fold(fmap, Adaptor(W=np.ones((10, 3), dtype=np.float32), b=np.zeros(3, dtype=np.float32), scale=1.0))
    with pytest.raises(ValueError, match="expects 80 genes"):
        folded.transform(X[:, :5])


def test_latent_cache_from_a_backed_panel(parts, tmp_path):
    """The frozen_latent rule's path: the panel's X multiplied as stored (other gene order, extra genes)."""
    fmap, adaptor, X = parts
    genes = fmap.genes[::-1] + ["OTHER"]
    panel = ad.AnnData(X=sp.hstack([X[:, ::-1], sp.csr_matrix(np.ones((X.shape[0], 1)))]).tocsr(),
                       obs=pd.DataFrame(index=[f"cell{i}" for i in range(X.shape[0])]),
                       var=pd.DataFrame(index=genes))
    panel.write_h5ad(tmp_path / "panel.h5ad")
    folded = fold(fmap, adaptor)
    with open_backed(tmp_path / "panel.h5ad") as backed:
        write_latent_cache(folded, backed, tmp_path / "latent.h5", attrs={"kind": "frozen_latent"})
    cells = ["cell7", "cell499", "cell0"]
    np.testing.assert_allclose(cache.read_rows(tmp_path / "latent.h5", cells), folded.transform(X)[[7, 499, 0]],
                               rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="absent from the panel"):
        write_latent_cache(folded, panel[:, :5], tmp_path / "bad.h5")
