"""LET adaptor (latent embedding transfer): a linear map z = W (f - b) / s trained to match the stage ruler.

Loss (METHOD.md): mean over pairs of (beta * arccos(cos(z_i, z_j)) - d_ruler(i, j))^2
+ alpha * mean ||W^T z + b - f||^2 (on scaled features), plus, for the cell-trained variant,
gamma * cross-entropy of a linear stage classifier on z. Ruler distances are hop counts divided by
the graph diameter so that both sides of the first term live in [0, 1] (beta = 1/pi maps angles there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Adaptor:
    """A frozen, linear adaptor: z = ((f - b) / scale) @ W.T."""

    W: np.ndarray
    b: np.ndarray
    scale: float
    history: list[float] = field(default_factory=list)

    def transform(self, F: np.ndarray) -> np.ndarray:
        """Latent coordinates of feature rows F."""
        return (((np.asarray(F, dtype=np.float32) - self.b) / self.scale) @ self.W.T).astype(np.float32)

    @property
    def n_parameters(self) -> int:
        """Trainable parameters of the adaptor (W and b)."""
        return int(self.W.size + self.b.size)

    def save(self, path: str) -> None:
        """Save as npz, atomically."""
        from fmextract.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, W=self.W, b=self.b, scale=np.float64(self.scale), history=np.asarray(self.history))

    @classmethod
    def load(cls, path: str) -> "Adaptor":
        """Load an adaptor written by `save`."""
        with np.load(path) as z:
            return cls(W=z["W"], b=z["b"], scale=float(z["scale"]), history=z["history"].tolist())


def fit_adaptor(
    F: np.ndarray,
    stages: pd.Series | np.ndarray,
    ruler: pd.DataFrame,
    *,
    d_latent: int,
    alpha: float,
    beta: float,
    gamma: float = 0.0,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> Adaptor:
    """Train the adaptor on feature rows F (anchors or cells) labelled with `stages`.

    `ruler` is a square DataFrame of stage-to-stage hop counts (index = columns = stage ids).
    gamma > 0 adds the stage-classification term of the cell-trained variant. Deterministic given seed.
    Initialised at the top-`d_latent` principal axes of the scaled features.
    """
    import torch

    stages = np.asarray(stages, dtype=str)
    missing = sorted(set(stages) - set(ruler.index))
    if missing:
        raise ValueError(f"stages absent from the ruler: {missing[:5]}")
    Fs, b, scale = _scaled(F)
    W0 = _principal_axes(Fs, d_latent)

    stage_ids = sorted(set(stages))
    codes = np.searchsorted(stage_ids, stages)
    R = ruler.loc[stage_ids, stage_ids].to_numpy(dtype=np.float64)
    R = R / max(R.max(), 1.0)

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = torch.tensor(Fs, dtype=torch.float32)
    y = torch.tensor(codes, dtype=torch.long)
    Rt = torch.tensor(R, dtype=torch.float32)
    W = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float32))
    params = [W]
    clf = None
    if gamma > 0:
        clf = torch.nn.Linear(d_latent, len(stage_ids))
        params += list(clf.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    n = X.shape[0]
    history: list[float] = []
    eps = 1e-6
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.numel() < 2:
                continue
            xb, yb = X[idx], y[idx]
            z = xb @ W.T
            zn = torch.nn.functional.normalize(z, dim=1, eps=1e-8)
            cos = (zn @ zn.T).clamp(-1 + eps, 1 - eps)
            iu = torch.triu_indices(len(idx), len(idx), offset=1)
            ang = beta * torch.arccos(cos[iu[0], iu[1]])
            target = Rt[yb[iu[0]], yb[iu[1]]]
            loss = ((ang - target) ** 2).mean() + alpha * ((z @ W - xb) ** 2).sum(dim=1).mean()
            if clf is not None:
                loss = loss + gamma * torch.nn.functional.cross_entropy(clf(z), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / n)
    return Adaptor(W=W.detach().numpy().astype(np.float32), b=b.astype(np.float32), scale=scale, history=history)


def balanced_sample(labels: pd.Series, *, per_label: int, seed: int) -> np.ndarray:
    """Positions of at most `per_label` cells of each label (stage-balanced training set), seeded."""
    rng = np.random.default_rng(seed)
    labels = pd.Series(np.asarray(labels))
    picks = []
    for _, pos in sorted(labels.groupby(labels).indices.items()):
        picks.append(rng.choice(pos, size=min(per_label, len(pos)), replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.array([], dtype=int)


def _scaled(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(F - b) / scale as ONE new float32 array, b (float64 column means) and scale (RMS norm of centred rows).

    Float32 with float64 accumulators: at paper scale (68k cells x 2,400 features) a float64 copy alone is 1.3 GB.
    """
    Fs = np.array(F, dtype=np.float32)
    b = Fs.mean(axis=0, dtype=np.float64)
    Fs -= b.astype(np.float32)
    scale = float(np.sqrt(np.einsum("ij,ij->", Fs, Fs, dtype=np.float64) / max(len(Fs), 1))) or 1.0
    Fs /= np.float32(scale)
    return Fs, b, scale


def _principal_axes(Fs: np.ndarray, k: int) -> np.ndarray:
    """Top-k right singular vectors of Fs (k x F, float64; zero rows beyond min(n, F)), from the F x F Gram matrix.

    Same axes as an SVD of Fs without its n x F factor (the memory of one F x F matrix); signs are fixed so that each
    axis's largest-magnitude loading is positive, which makes the adaptor's start deterministic across LAPACKs.
    """
    values, vectors = np.linalg.eigh(_gram(Fs))
    order = np.argsort(values)[::-1][: min(k, len(Fs))]
    axes = vectors[:, order].T
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    return np.vstack([axes, np.zeros((k - len(axes), Fs.shape[1]))]) if len(axes) < k else axes


def _gram(Fs: np.ndarray, rows: int = 4096) -> np.ndarray:
    """Fs^T Fs accumulated in float64 over row blocks (no float64 copy of Fs)."""
    gram = np.zeros((Fs.shape[1], Fs.shape[1]))
    for start in range(0, len(Fs), rows):
        block = Fs[start : start + rows].astype(np.float64)
        gram += block.T @ block
    return gram
