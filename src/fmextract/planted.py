"""The planted-head positive control: a checkpoint of the configured architecture (any `fmextract.models` kind) in
which one head is built so that genes of the same marker program attend to each other.

Everything else is the untrained control's fresh seeded weights, so the planted head is the only structure the
model holds. The construction lives in the weights, as a pretrained head's would:

- a program subspace: d_head orthonormal, mean-zero directions U (d_model x d_head) of the embedding space;
- gene embeddings: every gene token's random embedding (`token_embedding`) has its U-component removed; a gene of program p then gets
  the code `s · U c_p` added (c_p: program p's unit code in head space, orthonormal across programs when there are
  at most d_head of them; s = the norm of that gene's remaining embedding, so the code carries half its energy);
- head (layer, head): W_Q = W_K = κ Uᵀ, zero biases, so q·k of two genes is κ² times the product of their codes;
  κ is set so that on the model's gene embeddings (E = `gene_embeddings`, scGPT: LayerNorm(embedding)) the median
  same-program logit q·k / sqrt(d_head) equals `logit_gap`. Genes outside every program have no code, so their
  rows stay flat.

Only the contract's accessors are used (`untrained_copy`, `token_embedding`, `gene_embeddings`,
`attention_projections`, `config`), so every model kind has this control.
"""

from __future__ import annotations

import logging
import math
from typing import Collection, Mapping, Sequence

import numpy as np
import torch

from fmextract.errors import InputError
from fmextract.models.base import FoundationModel

log = logging.getLogger(__name__)


def gene_programs(vocab: Collection[str], programs: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Vocabulary gene -> its marker program (a gene listed in several programs keeps the first, file order)."""
    out: dict[str, str] = {}
    for name, genes in programs.items():
        for g in genes:
            if g in vocab:
                out.setdefault(str(g), str(name))
    return out


def _program_basis(d_model: int, d_head: int, n_programs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """U: d_head orthonormal mean-zero columns in R^d_model; C: one unit code per program in R^d_head."""
    if d_head > d_model - 1:
        raise InputError(f"planted head: d_head={d_head} needs d_model > d_head (d_model={d_model})")
    raw = rng.normal(size=(d_model, d_head))
    raw -= raw.mean(axis=0, keepdims=True)  # mean-zero directions survive LayerNorm's centring
    U, _ = np.linalg.qr(raw)
    codes = rng.normal(size=(max(n_programs, d_head), d_head))
    if n_programs <= d_head:
        codes = np.linalg.qr(codes.T)[0].T[:n_programs]  # orthonormal codes
    else:
        codes = codes[:n_programs] / np.linalg.norm(codes[:n_programs], axis=1, keepdims=True)
    return U, codes


def planted_copy(
    model: FoundationModel, programs: Mapping[str, Sequence[str]], *, layer: int, head: int, seed: int,
    logit_gap: float,
) -> tuple[FoundationModel, dict[str, str]]:
    """The positive-control model: `model.untrained_copy(seed=seed)` with head (layer, head) planted on `programs`.

    Returns the model (its `config`, saved with the checkpoint, records the planted head, programs and κ) and the
    gene -> program map used.
    """
    if not 0 <= layer < model.n_layers or not 0 <= head < model.n_heads:
        raise InputError(f"model.planted: head L{layer}H{head} is not in the checkpoint's {model.n_layers} layers x "
                         f"{model.n_heads} heads; fix model.planted.layer / head")
    if logit_gap <= 0:
        raise InputError(f"model.planted.logit_gap={logit_gap} must be > 0")
    planted = model.untrained_copy(seed=seed)
    member = gene_programs(set(planted.genes), programs)
    names = sorted(set(member.values()))
    if len(names) < 2:
        raise InputError(f"planted head: {len(names)} marker program(s) have genes in the vocabulary; at least 2 are "
                         "needed (check data.marker_programs against the checkpoint's vocab.json)")
    d, H = planted.d_model, planted.n_heads
    dh = d // H
    rng = np.random.default_rng(seed)
    U, codes = _program_basis(d, dh, len(names), rng)
    with torch.no_grad():
        emb = planted.token_embedding.double().cpu().numpy().copy()
        ids = planted.token_ids(planted.genes)
        emb[ids] -= (emb[ids] @ U) @ U.T  # the program subspace carries nothing but the codes
        for g, p in member.items():
            i = planted.token_ids([g])[0]
            emb[i] += np.linalg.norm(emb[i]) * (U @ codes[names.index(p)])
        planted.token_embedding.copy_(torch.from_numpy(emb))
        marked = sorted(member)
        proj = planted.gene_embeddings(marked).cpu().numpy() @ U
        label = np.array([names.index(member[g]) for g in marked])
        same = (label[:, None] == label[None, :]) & ~np.eye(len(marked), dtype=bool)
        if not same.any():
            raise InputError("planted head: no marker program has 2 genes in the vocabulary; check data.marker_programs")
        # kappa: on the encoder's gene embeddings (LayerNorm'd), the median same-program logit equals logit_gap
        kappa = math.sqrt(logit_gap * math.sqrt(dh) / float(np.median((proj @ proj.T)[same])))
        proj_params = planted.attention_projections(layer)
        rows = slice(head * dh, (head + 1) * dh)
        for block in ("q", "k"):  # W_Q, W_K of the head read the program subspace; W_V untouched
            proj_params[f"{block}_weight"][rows] = torch.from_numpy(kappa * U.T).float()
            proj_params[f"{block}_bias"][rows] = 0.0
    planted.config = {**{k: v for k, v in planted.config.items() if k != "untrained"},
                      "planted": {"layer": layer, "head": head, "seed": seed, "logit_gap": logit_gap,
                                  "kappa": kappa, "programs": names, "n_genes": len(member)}}
    log.info("planted L%dH%d on %d genes of %d programs (kappa %.3f, logit gap %.2f)", layer, head, len(member),
             len(names), kappa, logit_gap)
    return planted, member

