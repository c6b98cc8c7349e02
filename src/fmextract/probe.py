"""The paper's `mlp_probe` readout: a 3-layer MLP trained on frozen foundation-model cell embeddings (also `raw_mlp`).

One multi-task MLP (``d -> hidden[0] -> ... -> outputs``, ReLU; mlp_probe: two hidden layers, raw_mlp: one) predicts every endpoint at once: branch and
stage logits (cross-entropy), one logit per subtype endpoint (binary cross-entropy on the training cells whose
stage is in that endpoint's lists) and depth (mean squared error on standardised depth, used as pseudotime). With
scGPT's 512-d embeddings and hidden (256, 128) this is ~170k trainable parameters, the paper's ~172k. Inputs are
standardised with training statistics; training is seeded, full precision, on CPU (deterministic).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from fmextract.errors import InputError
from fmextract.readouts import check_subtypes, subtype_target

log = logging.getLogger(__name__)


@dataclass
class MLPProbe:
    """A fitted probe: the network, the input standardisation and the output layout."""

    net: nn.Sequential
    mean: np.ndarray
    scale: np.ndarray
    branches: list[str]
    stages: list[str]
    subtypes: list[str]
    depth_mean: float
    depth_scale: float

    def predict(self, Z: np.ndarray, *, index: pd.Index) -> dict:
        """Predictions in the format of the shared readouts: class probabilities, subtype scores, pseudotime."""
        x = torch.as_tensor((np.asarray(Z, dtype=np.float32) - self.mean) / self.scale)
        with torch.no_grad():
            out = self.net.eval()(x).numpy().astype(float)
        nb, ns = len(self.branches), len(self.stages)
        softmax = lambda a: np.exp(a - a.max(1, keepdims=True)) / np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True)
        pred: dict = {
            "branch_proba": pd.DataFrame(softmax(out[:, :nb]), index=index, columns=self.branches),
            "stage_proba": pd.DataFrame(softmax(out[:, nb:nb + ns]), index=index, columns=self.stages),
        }
        for j, name in enumerate(self.subtypes):
            pred[f"{name}_proba"] = 1.0 / (1.0 + np.exp(-out[:, nb + ns + j]))
        pred["pseudotime"] = out[:, -1] * self.depth_scale + self.depth_mean
        return pred

    def n_parameters(self) -> int:
        """Trainable parameters of the MLP."""
        return int(sum(p.numel() for p in self.net.parameters()))


def fit_mlp_probe(
    Z_train: np.ndarray, obs_train: pd.DataFrame, *, subtypes: Mapping[str, Mapping], seed: int,
    hidden: Sequence[int] = (256, 128), epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
    weight_decay: float = 1e-4,
) -> MLPProbe:
    """Fit the multi-task MLP on training embeddings and their obs (branch, stage, depth)."""
    Z = np.asarray(Z_train, dtype=np.float32)
    if Z.ndim != 2 or Z.shape[0] != len(obs_train) or not np.isfinite(Z).all():
        raise InputError(f"fit_mlp_probe: Z_train has shape {Z.shape} for {len(obs_train)} cells or non-finite "
                         "values; embed every training cell")
    if len(hidden) < 1 or not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden):
        raise InputError(f"params.hidden={list(hidden)}: give one or more positive hidden widths (mlp_probe: two, a "
                         "3-layer MLP; raw_mlp: one)")
    defs = check_subtypes(subtypes)
    branch = obs_train["branch"].astype(str)
    staged = obs_train["stage"].notna().to_numpy()  # coarse labels (branch, no stage) train the branch head only
    stage = obs_train["stage"].astype(str).where(staged)
    branches, stages = sorted(branch.unique()), sorted(stage[staged].unique())
    depth = pd.to_numeric(obs_train["depth"], errors="coerce").to_numpy(dtype=float)
    d_mean, d_scale = float(np.nanmean(depth)), float(np.nanstd(depth)) or 1.0
    mean, scale = Z.mean(0), Z.std(0) + 1e-6

    y_branch = torch.as_tensor(pd.Categorical(branch, categories=branches).codes.astype(np.int64))
    y_stage = torch.as_tensor(pd.Categorical(stage, categories=stages).codes.astype(np.int64))  # -1: no stage
    sub_mask, sub_y = [], []
    for pos, neg in defs.values():
        mask, y = subtype_target(stage, pos, neg)
        full = np.zeros(len(stage), dtype=np.float32)
        full[mask] = y
        sub_mask.append(mask)
        sub_y.append(full)
    n_sub = len(defs)
    sub_mask_t = torch.as_tensor(np.stack(sub_mask, 1) if n_sub else np.zeros((len(stage), 0), bool))
    sub_y_t = torch.as_tensor(np.stack(sub_y, 1) if n_sub else np.zeros((len(stage), 0), np.float32))
    depth_ok = torch.as_tensor(np.isfinite(depth))
    y_depth = torch.as_tensor(np.nan_to_num((depth - d_mean) / d_scale).astype(np.float32))
    x = torch.as_tensor((Z - mean) / scale)

    nb, ns = len(branches), len(stages)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        widths = [Z.shape[1], *hidden]
        layers = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        net = nn.Sequential(*layers, nn.Linear(widths[-1], nb + ns + n_sub + 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    ce, bce = nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss(reduction="none")
    net.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            out = net(x[idx])
            loss = ce(out[:, :nb], y_branch[idx])
            has_stage = y_stage[idx] >= 0
            if has_stage.all():
                loss = loss + ce(out[:, nb:nb + ns], y_stage[idx])
            elif has_stage.any():
                loss = loss + ce(out[has_stage, nb:nb + ns], y_stage[idx][has_stage])
            if n_sub:
                m = sub_mask_t[idx].float()
                loss = loss + (bce(out[:, nb + ns:nb + ns + n_sub], sub_y_t[idx]) * m).sum() / m.sum().clamp(min=1)
            ok = depth_ok[idx]
            if ok.any():
                loss = loss + ((out[ok, -1] - y_depth[idx][ok]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if epoch == 0 or epoch == epochs - 1:
            log.info("mlp_probe epoch %d/%d: loss %.4f", epoch + 1, epochs, total / len(x))
    return MLPProbe(net=net.eval(), mean=mean, scale=scale, branches=branches, stages=stages, subtypes=list(defs),
                    depth_mean=d_mean, depth_scale=d_scale)
