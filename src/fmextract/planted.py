"""The planted-head positive control: a checkpoint of the configured architecture in which one head is built so
that genes of the same marker program attend to each other.

Everything else is the untrained control's fresh seeded weights, so the planted head is the only structure the
model holds. The construction lives in the weights, as a pretrained head's would:

- a program subspace: d_head orthonormal, mean-zero directions U (d_model x d_head) of the embedding space;
- gene embeddings: every gene token's random embedding has its U-component removed; a gene of program p then gets
  the code `s · U c_p` added (c_p: program p's unit code in head space, orthonormal across programs when there are
  at most d_head of them; s = the norm of that gene's remaining embedding, so the code carries half its energy);
- head (layer, head): W_Q = W_K = κ Uᵀ, zero biases, so q·k of two genes is κ² times the product of their codes;
  κ is set so that on the encoder's gene embeddings (E = LayerNorm(embedding)) the median same-program logit
  q·k / sqrt(d_head) equals `logit_gap`. Genes outside every program have no code, so their rows stay flat.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fmextract.errors import InputError
from fmextract.models.scgpt import SPECIAL_TOKENS, ScGPT, untrained_copy

log = logging.getLogger(__name__)


def gene_programs(vocab: Mapping[str, int], programs: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Vocabulary gene -> its marker program (a gene listed in several programs keeps the first, file order)."""
    out: dict[str, str] = {}
    for name, genes in programs.items():
        for g in genes:
            if g in vocab and g not in SPECIAL_TOKENS:
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
    model: ScGPT, programs: Mapping[str, Sequence[str]], *, layer: int, head: int, seed: int, logit_gap: float,
) -> tuple[ScGPT, dict[str, str]]:
    """The positive-control model: `untrained_copy(model, seed)` with head (layer, head) planted on `programs`.

    Returns the model (args.json records the planted head, programs and κ) and the gene -> program map used.
    """
    if not 0 <= layer < model.nlayers or not 0 <= head < model.nhead:
        raise InputError(f"model.planted: head L{layer}H{head} is not in the checkpoint's {model.nlayers} layers x "
                         f"{model.nhead} heads; fix model.planted.layer / head")
    if logit_gap <= 0:
        raise InputError(f"model.planted.logit_gap={logit_gap} must be > 0")
    planted = untrained_copy(model, seed=seed)
    member = gene_programs(planted.vocab, programs)
    names = sorted(set(member.values()))
    if len(names) < 2:
        raise InputError(f"planted head: {len(names)} marker program(s) have genes in the vocabulary; at least 2 are "
                         "needed (check data.marker_programs against the checkpoint's vocab.json)")
    d, H = planted.d_model, planted.nhead
    dh = d // H
    rng = np.random.default_rng(seed)
    U, codes = _program_basis(d, dh, len(names), rng)
    with torch.no_grad():
        emb = planted.encoder.embedding.weight.double().numpy().copy()
        pad = planted.vocab[planted.config.get("pad_token", "<pad>")]
        genes = [t for t in planted.vocab if t not in SPECIAL_TOKENS and planted.vocab[t] != pad]
        ids = np.array([planted.vocab[g] for g in genes])
        emb[ids] -= (emb[ids] @ U) @ U.T  # the program subspace carries nothing but the codes
        for g, p in member.items():
            i = planted.vocab[g]
            emb[i] += np.linalg.norm(emb[i]) * (U @ codes[names.index(p)])
        planted.encoder.embedding.weight.copy_(torch.from_numpy(emb))
        marked = sorted(member)
        proj = planted.encoder(torch.as_tensor([planted.vocab[g] for g in marked])).double().numpy() @ U
        label = np.array([names.index(member[g]) for g in marked])
        same = (label[:, None] == label[None, :]) & ~np.eye(len(marked), dtype=bool)
        if not same.any():
            raise InputError("planted head: no marker program has 2 genes in the vocabulary; check data.marker_programs")
        # kappa: on the encoder's gene embeddings (LayerNorm'd), the median same-program logit equals logit_gap
        kappa = math.sqrt(logit_gap * math.sqrt(dh) / float(np.median((proj @ proj.T)[same])))
        attn = planted.transformer_encoder.layers[layer].self_attn
        rows = slice(head * dh, (head + 1) * dh)
        for block in (0, 1):  # W_Q, W_K of the head read the program subspace; W_V untouched
            offset = block * d
            attn.in_proj_weight[offset + rows.start : offset + rows.stop] = torch.from_numpy(kappa * U.T).float()
            attn.in_proj_bias[offset + rows.start : offset + rows.stop] = 0.0
    planted.config = {**{k: v for k, v in planted.config.items() if k != "untrained"},
                      "planted": {"layer": layer, "head": head, "seed": seed, "logit_gap": logit_gap,
                                  "kappa": kappa, "programs": names, "n_genes": len(member)}}
    log.info("planted L%dH%d on %d genes of %d programs (kappa %.3f, logit gap %.2f)", layer, head, len(member),
             len(names), kappa, logit_gap)
    return planted, member


def factor_programs(fmap, programs: Mapping[str, Sequence[str]], *, n_factors: int, n_top_genes: int):
    """Program enrichment of the first `n_factors` factors (singular-value order) of a factorised map.

    Per factor: its top `n_top_genes` input-side genes tested against every program (hypergeometric, universe = the
    map's genes), BH across all factor x program tests. With a planted head, its surrogate's leading factors should
    each be enriched for a planted program.
    """
    import pandas as pd

    from fmextract.interpret import factor_top_genes, program_enrichment
    from fmextract.stats import bh_q_values

    if fmap.left is None:
        raise InputError("factor_programs needs a factorised (rank-r) feature map; build the rank-r surrogate first")
    parts = []
    for k in range(min(n_factors, fmap.left.shape[1])):
        top = factor_top_genes(fmap, k, n_top_genes)
        e = program_enrichment(top, fmap.genes, programs)
        e.insert(0, "factor", k)
        e["top_genes"] = ",".join(top)
        parts.append(e)
    table = pd.concat(parts, ignore_index=True)
    table["q_value"] = bh_q_values(table["p_value"])
    return table
