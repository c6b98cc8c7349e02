"""Feature maps built from exported attention operators: every map is one G x F matrix M, features = x M."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from fmextract.chunks import map_rows

#: Cells per batch of `FeatureMap.transform`: 8,192 cells x 2,400 float32 features is ~80 MB of temporaries.
BATCH_ROWS = 8192


def layer_blocks(n_layers: int, n_blocks: int = 3) -> list[list[int]]:
    """Split layer indices into contiguous early / mid / late blocks (np.array_split: 12 -> 4/4/4, 4 -> 2/1/1)."""
    if n_layers < n_blocks:
        raise ValueError(f"pooled drift needs at least {n_blocks} layers, the model has {n_layers}")
    return [b.tolist() for b in np.array_split(np.arange(n_layers), n_blocks)]


@dataclass
class FeatureMap:
    """A linear feature map over a gene panel: f(x) = x @ M, with M dense, sparse, or factorised (left @ right).

    x is log1p panel expression in `genes` order. Factorised maps (rank-r surrogates) keep only their factors,
    so their file size is what a user would ship.
    """

    genes: list[str]
    kind: str
    matrix: np.ndarray | sp.csr_matrix | None = None
    left: np.ndarray | None = None
    right: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of output features F."""
        return int(self.right.shape[1] if self.left is not None else self.matrix.shape[1])

    def _apply(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Features of one batch: a sparse x dense product (two for a factorised map), float32."""
        out = (X @ self.left) @ self.right if self.left is not None else X @ self.matrix
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float32)

    def transform(
        self,
        X: Any,
        *,
        batch_size: int = BATCH_ROWS,
        then: Callable[[np.ndarray], np.ndarray] | None = None,
        out: Any | None = None,
    ) -> np.ndarray:
        """Features of cells (rows of X), computed `batch_size` cells at a time (sparse x dense per batch).

        X is in memory (dense or sparse) or on disk (a backed panel's X, an h5py dataset), columns in `genes` order.
        `then` maps each feature batch onward (e.g. `adaptor.transform`) so only its output is kept for all cells;
        `out` (e.g. an h5py dataset) receives the rows instead of a new in-memory array.
        """
        fn = self._apply if then is None else (lambda b: then(self._apply(b)))
        n_in = (self.left if self.left is not None else self.matrix).shape[0]
        if X.shape[1] != n_in:
            raise ValueError(f"X has {X.shape[1]} columns, the feature map expects {n_in} genes")
        return map_rows(fn, X, batch_size=batch_size, out=out)

    def dense(self) -> np.ndarray:
        """M as a dense G x F array."""
        if self.left is not None:
            return self.left @ self.right
        return self.matrix.toarray() if sp.issparse(self.matrix) else np.asarray(self.matrix)

    def save(self, path: str) -> None:
        """Save as npz (arrays + genes + kind + meta as JSON), atomically; sparse maps as CSR arrays."""
        import json

        from fmextract.io import atomic_path

        arrays: dict[str, np.ndarray] = {}
        if self.left is not None:
            arrays.update(left=self.left.astype(np.float32), right=self.right.astype(np.float32))
        elif sp.issparse(self.matrix):
            m = sp.csr_matrix(self.matrix, dtype=np.float32)
            arrays.update(data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))
        else:
            arrays.update(matrix=np.asarray(self.matrix, dtype=np.float32))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, genes=np.array(self.genes), kind=np.array(self.kind),
                                    meta=np.array(json.dumps(self.meta)), **arrays)

    @classmethod
    def load(cls, path: str) -> "FeatureMap":
        """Load a map written by `save`."""
        import json

        with np.load(path, allow_pickle=False) as z:
            common = dict(genes=[str(g) for g in z["genes"]], kind=str(z["kind"]), meta=json.loads(str(z["meta"])))
            if "left" in z:
                return cls(left=z["left"], right=z["right"], **common)
            if "data" in z:
                return cls(matrix=sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"])), **common)
            return cls(matrix=z["matrix"], **common)


def pooled_drift_map(operators: np.ndarray, genes: list[str], *, n_blocks: int = 3) -> FeatureMap:
    """Pooled-drift map: heads averaged within early/mid/late layer blocks, f = [x A_e - x A_m ; x A_m - x A_l]."""
    blocks = layer_blocks(operators.shape[0], n_blocks)
    pooled = [operators[b].mean(axis=(0, 1)) for b in blocks]
    drifts = [pooled[i] - pooled[i + 1] for i in range(len(pooled) - 1)]
    return FeatureMap(genes=list(genes), kind="pooled_drift", matrix=np.concatenate(drifts, axis=1).astype(np.float32),
                      meta={"blocks": blocks})


def head_map(operators: np.ndarray, genes: list[str], heads: list[tuple[int, int]], weights: list[float] | None = None) -> FeatureMap:
    """Weighted sum of chosen heads' operators, f = x (sum_i w_i A[l_i, h_i]); weights default to equal."""
    w = np.full(len(heads), 1.0 / len(heads)) if weights is None else np.asarray(weights, dtype=float)
    A = sum(wi * operators[l, h] for wi, (l, h) in zip(w, heads))
    return FeatureMap(genes=list(genes), kind="heads", matrix=np.asarray(A, dtype=np.float32),
                      meta={"heads": [list(map(int, lh)) for lh in heads], "weights": w.tolist()})


def low_rank_map(fmap: FeatureMap, rank: int) -> FeatureMap:
    """Rank-r truncated-SVD surrogate of a map, stored as factors (U S) and V^T."""
    U, S, Vt = np.linalg.svd(fmap.dense().astype(np.float64), full_matrices=False)
    r = min(rank, len(S))
    return FeatureMap(genes=fmap.genes, kind="low_rank", left=(U[:, :r] * S[:r]).astype(np.float32),
                      right=Vt[:r].astype(np.float32), meta={**fmap.meta, "rank": r, "source_kind": fmap.kind})


def sparse_map(fmap: FeatureMap, density: float) -> FeatureMap:
    """Hard-sparse surrogate: keep the largest-magnitude `density` fraction of M's entries (CSR)."""
    M = fmap.dense()
    k = max(1, int(round(density * M.size)))
    threshold = np.partition(np.abs(M).ravel(), M.size - k)[M.size - k]
    kept = np.where(np.abs(M) >= threshold, M, 0.0)
    return FeatureMap(genes=fmap.genes, kind="sparse", matrix=sp.csr_matrix(kept.astype(np.float32)),
                      meta={**fmap.meta, "density": density, "source_kind": fmap.kind})


def without_factor(fmap: FeatureMap, k: int) -> FeatureMap:
    """A factorised map with factor k removed (leave-one-factor-out ablation)."""
    keep = np.arange(fmap.left.shape[1]) != k
    return FeatureMap(genes=fmap.genes, kind=fmap.kind, left=fmap.left[:, keep], right=fmap.right[keep], meta=fmap.meta)
