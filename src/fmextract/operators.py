"""Stage 1: export per-head gene x gene attention operators from a frozen scGPT model, streamed over context cells."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm import tqdm

from fmextract.errors import InputError
from fmextract.io import atomic_path
from fmextract.scgpt import CAPTURES, ScGPT, binning, gene_ids_for, tokenize_all_genes

log = logging.getLogger(__name__)
FORMAT = "fmextract-operators/1"


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
    model: ScGPT, adata, *, genes: Sequence[str], n_context: int, definition: str = "attention_prob", seed: int = 0,
    batch_size: int = 16, gene_column: str | None = None, counts_layer: str = "counts", progress: bool = True,
) -> Operators:
    """Average each head's attention over `n_context` seeded reference cells tokenised as `<cls>` + all `genes`.

    Cells: a seeded sample without replacement (all cells if fewer). Each cell's panel counts (layers[counts_layer]
    if present, else X) are binned as scGPT bins (per cell over its non-zero panel genes; zeros -> bin 0; tie-break
    draws from RandomState(seed), row after row, so the result does not depend on batch_size). `attention_prob`:
    softmax(q kᵀ / sqrt(d_head)) averaged over cells, `<cls>` row and column dropped, rows renormalised to 1;
    `qk_raw`: the pre-softmax scores averaged, `<cls>` dropped, no renormalisation. Memory is one batch of one
    layer's attention plus a float64 accumulator of L x H x G x G, whatever n_context is.
    """
    if definition not in CAPTURES:
        raise InputError(f"operators definition={definition!r} is not one of {CAPTURES}; fix config operators.definition")
    if n_context < 1 or batch_size < 1:
        raise InputError(f"n_context={n_context} and batch_size={batch_size} must be >= 1")
    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        raise InputError("export_operators: the gene panel has duplicate genes; deduplicate the panel file")
    gene_ids = gene_ids_for(model.vocab, genes, what="panel genes")
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
    tie_rng = np.random.RandomState(seed)
    device = next(model.parameters()).device
    L, H, G = model.nlayers, model.nhead, len(genes)
    acc = torch.zeros(L, H, G, G, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(picked), batch_size), desc=f"operators ({definition})", disable=not progress):
            counts = sp.csr_matrix(source[picked[start : start + batch_size]][:, cols], dtype=np.float32)
            binned = binning(counts, model.n_bins, seed=tie_rng).toarray()
            g, v, m = tokenize_all_genes(binned, gene_ids, cls_id=model.vocab["<cls>"], pad_value=model.pad_value)
            for layer, _, att in model.iter_layers(g.to(device), v.to(device), m.to(device), capture=definition):
                acc[layer] += att[:, :, 1:, 1:].sum(0, dtype=torch.float64)
    acc /= len(picked)  # in place: the accumulator is the largest array here (L x H x G x G float64)
    if definition == "attention_prob":
        acc /= acc.sum(-1, keepdim=True)
    ops = acc.float().cpu().numpy()
    del acc
    return Operators(
        operators=ops, genes=genes, definition=definition, checkpoint_sha256=model.checkpoint_sha256,
        meta={"n_context": int(len(picked)), "seed": int(seed), "n_bins": model.n_bins, "pad_value": model.pad_value,
              "tokens": "<cls> + all panel genes (zeros as bin 0)", "scale": "1/sqrt(d_head)"},
    )


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
