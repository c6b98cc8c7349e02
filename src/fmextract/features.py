"""Feature maps built from exported attention operators: every map is one G x F matrix M, features = x M."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


def layer_blocks(n_layers: int, n_blocks: int = 3) -> list[list[int]]:
    """Split layer indices into contiguous early / mid / late blocks (np.array_split: 12 -> 4/4/4, 4 -> 2/1/1)."""
    if n_layers < n_blocks:
        raise ValueError(f"pooled drift needs at least {n_blocks} layers, the model has {n_layers}")
    return [b.tolist() for b in np.array_split(np.arange(n_layers), n_blocks)]


@dataclass
class FeatureMap:
    """A linear feature map over a gene panel: f(x) = x @ matrix (x: log1p panel expression)."""

    genes: list[str]
    matrix: np.ndarray
    kind: str
    meta: dict = field(default_factory=dict)

    def transform(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Features of cells (rows of X, columns in `genes` order): one sparse x dense product."""
        out = X @ self.matrix
        return np.asarray(out, dtype=np.float32)

    def save(self, path: str) -> None:
        """Save as npz (matrix + genes + kind + meta as JSON) atomically."""
        import json

        from fmextract.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, matrix=self.matrix.astype(np.float32), genes=np.array(self.genes),
                         kind=np.array(self.kind), meta=np.array(json.dumps(self.meta)))

    @classmethod
    def load(cls, path: str) -> "FeatureMap":
        """Load a map written by `save`."""
        import json

        with np.load(path, allow_pickle=False) as z:
            return cls(genes=[str(g) for g in z["genes"]], matrix=z["matrix"], kind=str(z["kind"]), meta=json.loads(str(z["meta"])))


def pooled_drift_map(operators: np.ndarray, genes: list[str], *, n_blocks: int = 3) -> FeatureMap:
    """Pooled-drift map: heads averaged within early/mid/late layer blocks, f = [x A_e - x A_m ; x A_m - x A_l]."""
    blocks = layer_blocks(operators.shape[0], n_blocks)
    pooled = [operators[b].mean(axis=(0, 1)) for b in blocks]
    drifts = [pooled[i] - pooled[i + 1] for i in range(len(pooled) - 1)]
    return FeatureMap(genes=list(genes), matrix=np.concatenate(drifts, axis=1).astype(np.float32), kind="pooled_drift",
                      meta={"blocks": blocks})


def head_map(operators: np.ndarray, genes: list[str], heads: list[tuple[int, int]], weights: list[float] | None = None) -> FeatureMap:
    """Weighted sum of chosen heads' operators, f = x (sum_i w_i A[l_i, h_i]); weights default to equal."""
    w = np.full(len(heads), 1.0 / len(heads)) if weights is None else np.asarray(weights, dtype=float)
    A = sum(wi * operators[l, h] for wi, (l, h) in zip(w, heads))
    return FeatureMap(genes=list(genes), matrix=np.asarray(A, dtype=np.float32), kind="heads",
                      meta={"heads": [list(map(int, lh)) for lh in heads], "weights": w.tolist()})
