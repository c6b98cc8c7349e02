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

    x is log1p panel expression in `genes` order. Factorised maps (rank-r surrogates) keep only their factors, dense
    or sparse (the hard-sparse surrogate), so their file size is what a user would ship.
    """

    genes: list[str]
    kind: str
    matrix: np.ndarray | sp.csr_matrix | None = None
    left: np.ndarray | sp.csr_matrix | None = None
    right: np.ndarray | sp.csr_matrix | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_weights(self) -> int:
        """Stored weights (non-zeros of sparse parts): what the map costs as raw float32 (4 bytes each)."""
        parts = (self.left, self.right) if self.left is not None else (self.matrix,)
        return int(sum(p.nnz if sp.issparse(p) else np.size(p) for p in parts))

    @property
    def n_factors(self) -> int:
        """Number of factors of a factorised map."""
        if self.left is None:
            raise ValueError(f"a {self.kind} map is not factorised")
        return int(self.left.shape[1])

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
        m = self.left @ self.right if self.left is not None else self.matrix
        return m.toarray() if sp.issparse(m) else np.asarray(m)

    def save(self, path: str) -> None:
        """Save as npz (arrays + genes + kind + meta as JSON), atomically; sparse parts as CSR arrays."""
        import json

        from fmextract.io import atomic_path

        arrays: dict[str, np.ndarray] = {}
        parts = {"left": self.left, "right": self.right} if self.left is not None else {"matrix": self.matrix}
        for name, m in parts.items():
            arrays.update(_pack(name, m))
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
            names = ("left", "right") if any(f.startswith("left") for f in z.files) else ("matrix",)
            return cls(**{name: _unpack(z, name) for name in names}, **common)


def _pack(name: str, m: np.ndarray | sp.spmatrix) -> dict[str, np.ndarray]:
    """npz members of one matrix: `name` (dense) or `name_data/_indices/_indptr/_shape` (CSR), float32."""
    if sp.issparse(m):
        m = sp.csr_matrix(m, dtype=np.float32)
        return {f"{name}_data": m.data, f"{name}_indices": m.indices, f"{name}_indptr": m.indptr,
                f"{name}_shape": np.array(m.shape)}
    return {name: np.asarray(m, dtype=np.float32)}


def _unpack(z, name: str) -> np.ndarray | sp.csr_matrix:
    """The matrix `_pack` stored under `name`."""
    if name in z.files:
        return z[name]
    return sp.csr_matrix((z[f"{name}_data"], z[f"{name}_indices"], z[f"{name}_indptr"]), shape=tuple(z[f"{name}_shape"]))


def identity_map(genes: list[str]) -> FeatureMap:
    """The identity operator: features = the panel expression itself (the direct-learnability control adaptor_raw)."""
    n = len(genes)
    return FeatureMap(genes=list(genes), kind="identity", matrix=sp.identity(n, dtype=np.float32, format="csr"))


def pca_map(X: Any, genes: list[str], n_comps: int, *, seed: int) -> FeatureMap:
    """PCA of panel expression as a feature map (the comparator `raw_pca`): f = x V, V the top `n_comps` loadings.

    sklearn's PCA fitted on the rows of X (log1p expression of reference donors' cells, `genes` order); the
    centring is left to the adaptor, whose offset b is the training features' mean, so the map stays linear.
    """
    from sklearn.decomposition import PCA

    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    k = int(min(n_comps, X.shape[0] - 1, X.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(np.asarray(X, dtype=np.float64))
    return FeatureMap(genes=list(genes), kind="pca", matrix=pca.components_.T.astype(np.float32),
                      meta={"n_comps": k, "explained_variance": float(pca.explained_variance_ratio_.sum())})


def map_rank(fmap: FeatureMap) -> int:
    """Numerical rank of a map's matrix: the width of the linear read it makes of expression (G x 2G pooled drift: <= G)."""
    return int(np.linalg.matrix_rank(fmap.dense().astype(np.float64)))


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


def hard_sparse_map(fmap: FeatureMap, *, n_factors: int, n_genes: int) -> FeatureMap:
    """Hard-sparse surrogate of a rank-r map (the paper's): its `n_factors` largest factors (by singular value), each
    keeping only its `n_genes` largest-magnitude read loadings (input genes, U S) and write loadings (outputs, V^T).

    16 factors x 60 read + 60 write genes = 1,920 weights. meta["factors"] lists the kept factors' indices in the
    source map, so ablations of both maps name the same factors.
    """
    if fmap.left is None:
        raise ValueError(f"hard-sparse needs a factorised (rank-r) map, got a {fmap.kind} map")
    left, right = np.asarray(fmap.left), np.asarray(fmap.right)
    strength = np.linalg.norm(left, axis=0) * np.linalg.norm(right, axis=1)  # = singular values for an SVD map
    factors = np.sort(np.argsort(-strength, kind="stable")[: min(n_factors, left.shape[1])])

    def keep_top(v: np.ndarray) -> np.ndarray:
        out = np.zeros_like(v)
        top = np.argsort(-np.abs(v), kind="stable")[: min(n_genes, v.size)]
        out[top] = v[top]
        return out

    L = np.stack([keep_top(left[:, f]) for f in factors], axis=1)
    R = np.stack([keep_top(right[f]) for f in factors], axis=0)
    ids = factor_ids(fmap)
    return FeatureMap(genes=fmap.genes, kind="hard_sparse", left=sp.csr_matrix(L), right=sp.csr_matrix(R),
                      meta={**fmap.meta, "source_kind": fmap.kind, "factors": [int(ids[f]) for f in factors],
                            "n_genes": n_genes})


def factor_ids(fmap: FeatureMap) -> list[int]:
    """Identities of a factorised map's factors: their indices in the rank-r source map (meta['factors']) or 0..r-1."""
    return list(fmap.meta.get("factors", range(fmap.n_factors)))


def keep_factors(fmap: FeatureMap, positions: list[int]) -> FeatureMap:
    """A factorised map with only the factors at `positions` (column positions of left, rows of right)."""
    positions = list(positions)
    ids = factor_ids(fmap)
    return FeatureMap(genes=fmap.genes, kind=fmap.kind, left=fmap.left[:, positions], right=fmap.right[positions],
                      meta={**fmap.meta, "factors": [ids[p] for p in positions]})


def without_factor(fmap: FeatureMap, k: int) -> FeatureMap:
    """A factorised map with the factor at position k removed (leave-one-factor-out ablation)."""
    return keep_factors(fmap, [p for p in range(fmap.n_factors) if p != k])
