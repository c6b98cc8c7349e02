"""The extracted algorithm folded into one matrix: latent z = x P + c for log1p panel expression x.

Feature map (f = x M; M dense, sparse or factorised), adaptor centring and scaling and its projection are all
linear after log1p: z = ((x M - b) / s) W^T = x (M W^T / s) - b W^T / s. `fold` computes P (G x d_latent) and c
once, in float64, so applying the algorithm is one sparse x dense product per cell batch (the paper's "one matrix
product per cell"). The frozen-latent cache, the `extracted` methods and `fmextract apply` all use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract import cache
from fmextract.adaptor import Adaptor
from fmextract.chunks import map_rows
from fmextract.errors import InputError
from fmextract.features import BATCH_ROWS, FeatureMap


@dataclass
class FoldedLatent:
    """z = x @ matrix + offset over `genes` (rows of `matrix`), float32."""

    genes: list[str]
    matrix: np.ndarray
    offset: np.ndarray

    @property
    def d_latent(self) -> int:
        """Latent dimensions."""
        return int(self.matrix.shape[1])

    def _apply(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Latent of one batch: one (sparse) x dense product plus the offset."""
        z = X @ self.matrix
        return np.asarray(z, dtype=np.float32) + self.offset

    def transform(self, X: Any, *, batch_size: int = BATCH_ROWS, out: Any | None = None) -> np.ndarray:
        """Latent of cells (rows of X; in memory or on disk, columns in `genes` order), `batch_size` cells at a time.

        `out` (e.g. a `cache.open_writer` target) receives the rows instead of a new in-memory array.
        """
        if X.shape[1] != len(self.genes):
            raise ValueError(f"X has {X.shape[1]} columns, the folded latent expects {len(self.genes)} genes")
        return map_rows(self._apply, X, batch_size=batch_size, out=out)

    def reindex(self, genes: Sequence[str]) -> "FoldedLatent":
        """The same map over another gene order (e.g. every gene of a panel file): absent genes get zero rows.

        Lets a caller multiply a panel's whole matrix (all its columns, read as stored) instead of slicing columns.
        """
        index = pd.Index(self.genes).get_indexer(pd.Index(genes))
        matrix = np.zeros((len(genes), self.d_latent), dtype=np.float32)
        matrix[index >= 0] = self.matrix[index[index >= 0]]
        return FoldedLatent(genes=list(genes), matrix=matrix, offset=self.offset)


def fold(fmap: FeatureMap, adaptor: Adaptor) -> FoldedLatent:
    """Fold a feature map and its frozen adaptor into one G x d_latent matrix and an offset (float64 maths)."""
    if adaptor.W.shape[1] != fmap.n_features:
        raise InputError(f"the adaptor expects {adaptor.W.shape[1]} features but the feature map gives "
                         f"{fmap.n_features}; pass the adaptor trained on this feature map")
    projection = adaptor.W.astype(np.float64).T / adaptor.scale  # F x d
    if fmap.left is not None:
        matrix = fmap.left.astype(np.float64) @ (fmap.right.astype(np.float64) @ projection)
    else:
        M = fmap.matrix.astype(np.float64)
        matrix = M @ projection
    offset = -(adaptor.b.astype(np.float64) @ projection)
    return FoldedLatent(genes=list(fmap.genes), matrix=np.asarray(matrix, dtype=np.float32),
                        offset=offset.astype(np.float32))


def write_latent_cache(folded: FoldedLatent, panel: ad.AnnData, path: str | os.PathLike, *,
                       attrs: Mapping | None = None) -> None:
    """The latent of every cell of `panel` (X = log1p expression, in memory or backed) into a `cache` file.

    Rows in the panel's order, keyed by obs name; X is multiplied as stored (the map is reindexed to the panel's
    genes), one batch at a time, straight into the file.
    """
    absent = sorted(set(folded.genes) - set(map(str, panel.var_names)))
    if absent:
        raise InputError(f"{path}: {len(absent)} genes of the feature map are absent from the panel (e.g. {absent[:3]}); "
                         "rebuild the feature map from this panel")
    with cache.open_writer(path, panel.obs_names, folded.d_latent, attrs=attrs) as out:
        folded.reindex(list(map(str, panel.var_names))).transform(panel.X, out=out)
