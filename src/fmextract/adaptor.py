"""LET adaptor (latent embedding transfer): a linear map z = W (f - b) / s trained to match the stage ruler.

Loss (docs/method.md, stage 2), as a weighted sum of up to four terms over mini-batches (weights: `ruler`, `local`,
`alpha`, `gamma`):

- stage ruler: mean over pairs of (beta * arccos(cos(z_i, z_j)) - d_ruler(i, j))^2; ruler distances are hop counts
  divided by the graph diameter so that both sides live in [0, 1] (beta = 1/pi maps angles there);
- local (our definition; the paper names the term without defining it): neighbourhood retrieval, as in SNE/NCA.
  Each row's `local_k` nearest rows of the batch in (centred, scaled) feature space, by angle, should be its nearest
  rows in the latent: -mean log q_ij over those pairs, q_i. = softmax over the batch of -angle(z_i, z_j) / tau
  (tau = 0.1 x the batch's mean latent angle, held fixed in the step, so the term is scale-free), divided by
  log(batch size - 1) so a uniform q scores 1. It rewards what the trustworthiness gate measures (latent neighbours
  are feature neighbours) without fixing any distance, so it does not fight the ruler term's global geometry;
- reconstruction: alpha * mean ||W^T z + b - f||^2 (on scaled features);
- classification: gamma * cross-entropy of a linear stage classifier on z (the classifier is discarded).

The anchor-trained variant uses ruler + reconstruction; the cell-trained variant (the paper's benchmark winner) all
four, with the paper's weights 1.0 / 0.1 / 0.08 / 0.4 as config defaults.
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
        """Trainable parameters of the adaptor: W (d_latent x features).

        b (the training features' mean) and the scale are fitted statistics, not trained, and are not counted, as
        the readouts' scaler is not (the paper: 2,400 x 10 for pooled drift).
        """
        return int(self.W.size)

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


def principal_axes(X: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """Top-k right singular vectors of X (k x features), float32; randomized SVD when X is large, rows padded with 0.

    The adaptor's initialisation: float32 throughout, so a 68k x 2,400 training matrix costs one copy (~0.65 GB).
    """
    from sklearn.utils.extmath import randomized_svd

    X = np.asarray(X, dtype=np.float32)
    if min(X.shape) > 4 * (k + 10):
        _, _, vt = randomized_svd(X, n_components=k, random_state=seed)
    else:
        vt = np.linalg.svd(X, full_matrices=False)[2][:k]
    vt = vt.astype(np.float32)
    if vt.shape[0] < k:
        vt = np.vstack([vt, np.zeros((k - vt.shape[0], X.shape[1]), dtype=np.float32)])
    return vt


def fit_adaptor(
    F: np.ndarray,
    stages: pd.Series | np.ndarray,
    ruler: pd.DataFrame,
    *,
    d_latent: int,
    alpha: float,
    beta: float,
    gamma: float = 0.0,
    local: float = 0.0,
    local_k: int = 10,
    ruler_weight: float = 1.0,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> Adaptor:
    """Train the adaptor on feature rows F (anchors or cells) labelled with `stages`.

    `ruler` is a square DataFrame of stage-to-stage hop counts (index = columns = stage ids) over the whole stage
    graph: distances are divided by its diameter (`ruler_diameter`), whichever stages F holds. Term weights:
    `ruler_weight` (stage ruler), `local` (neighbourhood preservation over `local_k` batch neighbours), `alpha`
    (reconstruction), `gamma` (stage classification); see the module docstring. Deterministic given seed.
    Initialised at the top-`d_latent` principal axes of the scaled features.
    """
    import torch

    stages = np.asarray(stages, dtype=str)
    missing = sorted(set(stages) - set(ruler.index))
    if missing:
        raise ValueError(f"stages absent from the ruler: {missing[:5]}")
    F = np.asarray(F, dtype=np.float32)
    b = F.mean(axis=0, dtype=np.float64).astype(np.float32)
    Fs = F - b
    scale = float(np.sqrt(np.mean(np.sum(Fs.astype(np.float64) ** 2, axis=1)))) or 1.0
    Fs /= np.float32(scale)
    W0 = principal_axes(Fs, d_latent, seed=seed)

    stage_ids = sorted(set(stages))
    codes = np.searchsorted(stage_ids, stages)
    R = ruler.loc[stage_ids, stage_ids].to_numpy(dtype=np.float64) / ruler_diameter(ruler)

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = torch.from_numpy(Fs)
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

    def cosines(v: torch.Tensor) -> torch.Tensor:
        """Pairwise cosine similarities of the rows of v."""
        vn = torch.nn.functional.normalize(v, dim=1, eps=1e-8)
        return vn @ vn.T

    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            m = idx.numel()
            if m < 2:
                continue
            xb, yb = X[idx], y[idx]
            z = xb @ W.T
            ang = beta * torch.arccos(cosines(z).clamp(-1 + eps, 1 - eps))
            off = 1.0 - torch.eye(m)  # pair terms are means over i != j (the matrices are symmetric)
            loss = alpha * ((z @ W - xb) ** 2).sum(dim=1).mean()
            if ruler_weight > 0:
                loss = loss + ruler_weight * (((ang - Rt[yb][:, yb]) ** 2) * off).sum() / (m * (m - 1))
            if local > 0:
                with torch.no_grad():  # feature-space neighbours (largest cosine = smallest angle) are targets
                    nbr = torch.topk(cosines(xb) - 3.0 * torch.eye(m), min(local_k, m - 1), dim=1).indices
                    tau = 0.1 * ((ang * off).sum() / (m * (m - 1))).clamp(min=eps)
                logq = torch.log_softmax(-(ang + 1e9 * torch.eye(m)) / tau, dim=1)
                loss = loss - local * torch.gather(logq, 1, nbr).mean() / np.log(m - 1)
            if clf is not None:
                loss = loss + gamma * torch.nn.functional.cross_entropy(clf(z), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / n)
    return Adaptor(W=W.detach().numpy().astype(np.float32), b=b, scale=scale, history=history)


def ruler_diameter(ruler: pd.DataFrame) -> float:
    """The stage graph's diameter: the largest finite hop distance of the whole ruler (>= 1).

    The adaptor divides ruler distances by it, so the scale is fixed by the graph, never by the stages a fold holds.
    """
    R = ruler.to_numpy(dtype=np.float64)
    finite = R[np.isfinite(R)]
    return float(max(finite.max(), 1.0)) if finite.size else 1.0


def cell_adaptor_kwargs(cfg: dict) -> dict:
    """`fit_adaptor` arguments of the cell-trained recipe from config `adaptor` (its `cell_*` keys)."""
    w = cfg["cell_weights"]
    return dict(d_latent=cfg["d_latent"], beta=cfg["beta"], lr=cfg["lr"], epochs=cfg["cell_epochs"],
                batch_size=cfg["cell_batch_size"], ruler_weight=w["ruler"], local=w["local"],
                local_k=cfg["cell_local_k"], alpha=w["reconstruction"], gamma=w["classification"])


def balanced_sample(labels: pd.Series, *, per_label: int, seed: int) -> np.ndarray:
    """Positions of at most `per_label` cells of each label (stage-balanced training set), seeded.

    Cells without a label (NaN: e.g. a coarse label that carries a branch but no stage) are never drawn.
    """
    rng = np.random.default_rng(seed)
    labels = pd.Series(np.asarray(labels, dtype=object))
    picks = []
    for _, pos in sorted(labels.dropna().groupby(labels.dropna()).indices.items()):
        index = labels.dropna().index.to_numpy()[pos]
        picks.append(rng.choice(index, size=min(per_label, len(index)), replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.array([], dtype=int)



def cell_training_set(cells, *, per_stage: int, seed: int, source: str):
    """The cell-trained recipe's training rows: stage-balanced reference cells (<= `per_stage` per stage, seeded),
    cells without a fine stage left out. Returns (their AnnData rows, meta donor/tissue/stage/branch/depth + cell id).

    The adaptor rule and manifold validation's cell-recipe refits both draw their cells here, so every cell-trained
    adaptor of the same panel sees the same cells.
    """
    from fmextract.errors import InputError

    staged = cells[cells.obs["stage"].notna().to_numpy()]
    if staged.obs["stage"].nunique() < 2:
        raise InputError(f"{source}: the reference donors have {staged.n_obs} cells with a fine stage, over "
                         f"{staged.obs['stage'].nunique()} stage(s); the cell-trained adaptor needs 2 stages: reserve "
                         "other reference donors (panel.n_reference_donors) or check the stage table")
    pos = balanced_sample(staged.obs["stage"], per_label=per_stage, seed=seed)
    rows = staged[pos]
    return rows, rows.obs[["donor", "tissue", "stage", "branch", "depth"]].reset_index()
