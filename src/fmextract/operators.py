"""Stage 1: per-head gene x gene operators of a frozen foundation model (any `fmextract.models` kind).

Two readings of a head (docs/method.md, stage 1): from forward passes over context cells (`export_operators`:
`attention_prob`, `qk_raw`), or from the checkpoint's weights alone, no data (`qk_weights`, `ov_weights`). The
model tokenises and runs its forward pass (`FoundationModel.attention_sums`) and hands over its gene embeddings and
attention projections; the context sample, the averaging, the weights-only algebra and the files are here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from fmextract.errors import InputError
from fmextract.io import atomic_path
from fmextract.models.base import FORWARD_DEFINITIONS as CAPTURES
from fmextract.models.base import FoundationModel

log = logging.getLogger(__name__)
FORMAT = "fmextract-operators/1"
#: Operator definitions read from the checkpoint's weights alone (no data, no labels).
WEIGHT_DEFINITIONS = ("qk_weights", "ov_weights")
#: Every operator definition: forward-pass readings (CAPTURES) first, then the weights-only ones.
DEFINITIONS = (*CAPTURES, *WEIGHT_DEFINITIONS)


@dataclass
class Operators:
    """Attention operators A[l, h] (float32 [n_layers, n_heads, G, G], rows/cols in `genes` order) and provenance."""

    operators: np.ndarray
    genes: list[str]
    definition: str
    checkpoint_sha256: str | None
    meta: dict = field(default_factory=dict)


def context_cells(n_obs: int, n_context: int, seed: int) -> np.ndarray:
    """Sorted positions of the seeded context sample: `n_context` of `n_obs` cells without replacement (all if fewer).

    The export rule reads only these rows of the panel; `export_operators` draws the same sample itself, so passing
    it exactly these cells (then n_context = their number: all are used, in order) gives the same operators.
    """
    return np.sort(np.random.default_rng(seed).choice(n_obs, size=min(n_context, n_obs), replace=False))


def export_operators(
    model: FoundationModel, adata, *, genes: Sequence[str], n_context: int, definition: str = "attention_prob",
    seed: int = 0, batch_size: int = 16, gene_column: str | None = None, counts_layer: str = "counts",
    progress: bool = True,
) -> Operators:
    """Average each head's attention over `n_context` seeded reference cells, in gene space over `genes`.

    Cells: a seeded sample without replacement (all cells if fewer). Each cell's panel counts (layers[counts_layer]
    if present, else X) are tokenised the model's way (scGPT: `<cls>` + all `genes`, binned per cell over its
    non-zero panel genes, zeros -> bin 0, tie-break draws from RandomState(seed) row after row, so the result does
    not depend on batch_size). `attention_prob`: softmax(q kᵀ / sqrt(d_head)) averaged over cells, special tokens
    dropped, rows renormalised to 1; `qk_raw`: the pre-softmax scores averaged, no renormalisation. A gene pair
    that no cell tokenised together averages to 0. Memory is one batch of one layer's attention plus a float64
    accumulator of L x H x G x G, whatever n_context is.
    """
    if definition not in CAPTURES:
        raise InputError(f"operators definition={definition!r} is not a forward-pass definition {CAPTURES}; weights-only "
                         f"definitions {WEIGHT_DEFINITIONS} are read by weights_operators; fix config operators.definition")
    if n_context < 1 or batch_size < 1:
        raise InputError(f"n_context={n_context} and batch_size={batch_size} must be >= 1")
    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        raise InputError("export_operators: the gene panel has duplicate genes; deduplicate the panel file")
    model.token_ids(genes, what="panel genes")
    symbols = pd.Index(adata.var[gene_column].astype(str) if gene_column else adata.var_names.astype(str))
    if not symbols.is_unique:
        raise InputError(f"AnnData gene {'column ' + repr(gene_column) if gene_column else 'names'} are not unique; "
                         "run adata.var_names_make_unique() or pick a unique symbol column")
    cols = symbols.get_indexer(genes)
    if (cols < 0).any():
        absent = [g for g, c in zip(genes, cols) if c < 0]
        raise InputError(f"{len(absent)} of {len(genes)} panel genes are not in the AnnData (first 10: {absent[:10]}); "
                         "use the panel built from this dataset")
    n_obs = adata.n_obs
    if n_obs == 0:
        raise InputError("export_operators: the AnnData has no cells; check the reference donor selection")
    if n_context > n_obs:
        log.warning("n_context=%d > %d cells: using all cells", n_context, n_obs)
    picked = context_cells(n_obs, n_context, seed)
    source = adata.layers[counts_layer] if counts_layer in adata.layers else adata.X
    counts = sp.csr_matrix(source[picked][:, cols], dtype=np.float32)  # the context cells' panel counts only
    sums = model.attention_sums(counts, genes, definition=definition, seed=seed, batch_size=batch_size,
                                progress=progress)
    acc = sums.total  # in place below: the accumulator is the largest array here (L x H x G x G float64)
    acc /= sums.count if isinstance(sums.count, int) else sums.count.clamp(min=1)
    if definition == "attention_prob":
        acc /= acc.sum(-1, keepdim=True).clamp(min=torch.finfo(acc.dtype).tiny)  # an all-zero row stays zero
    ops, meta = acc.float().cpu().numpy(), {"n_context": int(len(picked)), "seed": int(seed), **sums.meta}
    del acc, sums
    return Operators(operators=ops, genes=genes, definition=definition, checkpoint_sha256=model.checkpoint_sha256,
                     meta=meta)


def _gene_space(model: FoundationModel, genes: Sequence[str]) -> tuple[torch.Tensor, int, int, int]:
    """E: the panel genes' token embeddings as the model's embedding layer emits them, float64 [G, d]."""
    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        raise InputError("weights-only operators: the gene panel has duplicate genes; deduplicate the panel file")
    return model.gene_embeddings(genes), model.n_heads, model.d_model // model.n_heads, len(genes)


def _weights_operators(model: FoundationModel, genes: Sequence[str], definition: str, per_layer) -> Operators:
    """Stack per_layer(E, attention projections, H, dh) -> [H, G, G] over layers into an Operators record."""
    E, H, dh, G = _gene_space(model, genes)
    model.eval()
    with torch.no_grad():  # float64 maths per layer, float32 storage (the whole stack is never held in float64)
        ops = torch.stack([per_layer(E, model.attention_projections(layer), H, dh).float()
                           for layer in range(model.n_layers)])
    return Operators(
        operators=ops.cpu().numpy(), genes=[str(g) for g in genes], definition=definition,
        checkpoint_sha256=model.checkpoint_sha256,
        meta={"tokens": "panel gene embeddings as the encoder emits them (embedding + LayerNorm); no data",
              "scale": "1/sqrt(d_head)" if definition == "qk_weights" else "1/d_model"},
    )


def qk_weights(model: FoundationModel, genes: Sequence[str]) -> Operators:
    """Weights-only: A[l, h] = row-softmax((E W_Q + b_Q)(E W_K + b_K)ᵀ / sqrt(d_head)) over the panel genes.

    E = `model.gene_embeddings` (scGPT: the gene embedding + its LayerNorm); W_Q, W_K (d x d_head) and b_Q, b_K are
    head h's slices of layer l's query and key projections. No data, no labels: what head h would attend to from
    the gene identities alone. Computed in float64, stored float32.
    """

    def per_layer(E, proj, H, dh):
        w_q, w_k = proj["q_weight"].double(), proj["k_weight"].double()
        b_q, b_k = proj["q_bias"].double(), proj["k_bias"].double()
        q = (E @ w_q.T + b_q).reshape(len(E), H, dh).transpose(0, 1)  # [H, G, dh]
        k = (E @ w_k.T + b_k).reshape(len(E), H, dh).transpose(0, 1)
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dh), dim=-1)

    return _weights_operators(model, genes, "qk_weights", per_layer)


def ov_weights(model: FoundationModel, genes: Sequence[str]) -> Operators:
    """Weights-only: A[l, h] = (E W_V W_O) Eᵀ / d_model — what gene g's value writes through head h, read on every gene.

    W_V (d x d_head): head h's slice of the value projection; W_O (d_head x d): head h's columns of the output
    projection. As docs/method.md defines it, biases do not enter (b_V W_O would add the same vector to every row).
    """

    def per_layer(E, proj, H, dh):
        d = H * dh
        v = (E @ proj["v_weight"].double().T).reshape(len(E), H, dh).transpose(0, 1)  # [H, G, dh]
        w_o = proj["o_weight"].double().T.reshape(H, dh, d)  # head h's rows of the output projection's transpose
        return (v @ w_o) @ E.T / d

    return _weights_operators(model, genes, "ov_weights", per_layer)


def weights_operators(model: FoundationModel, genes: Sequence[str], definition: str) -> Operators:
    """The weights-only operators of `definition` (one of WEIGHT_DEFINITIONS)."""
    readers = {"qk_weights": qk_weights, "ov_weights": ov_weights}
    if definition not in readers:
        raise InputError(f"operators definition={definition!r} is not weights-only {WEIGHT_DEFINITIONS}; "
                         "use export_operators for forward-pass definitions")
    return readers[definition](model, genes)


def save_operators(ops: Operators, path: str | os.PathLike) -> None:
    """Save as one .npz: float32 `operators` plus a JSON `manifest` (genes, definition, checkpoint sha256, meta)."""
    arr = np.asarray(ops.operators, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[2:] != (len(ops.genes), len(ops.genes)):
        raise InputError(f"operators of shape {arr.shape} do not match {len(ops.genes)} genes")
    manifest = {
        "format": FORMAT, "genes": list(ops.genes), "definition": ops.definition,
        "checkpoint_sha256": ops.checkpoint_sha256, "shape": list(arr.shape), "meta": ops.meta,
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, operators=arr, manifest=np.array(json.dumps(manifest, sort_keys=True)))


def load_operators(path: str | os.PathLike) -> Operators:
    """Read a file written by `save_operators`, checking the manifest against the array."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arr, manifest = z["operators"], json.loads(str(z["manifest"]))
    except FileNotFoundError:
        raise InputError(f"{path}: operators file not found; run the export_operators rule") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not an operators file ({type(err).__name__}); re-run export_operators") from None
    G = len(manifest.get("genes", []))
    if manifest.get("format") != FORMAT or arr.ndim != 4 or arr.shape[2:] != (G, G):
        raise InputError(f"{path}: manifest does not match the array {arr.shape}; re-run export_operators")
    return Operators(
        operators=arr.astype(np.float32, copy=False), genes=list(manifest["genes"]), definition=manifest["definition"],
        checkpoint_sha256=manifest.get("checkpoint_sha256"), meta=manifest.get("meta", {}),
    )
