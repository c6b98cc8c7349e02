"""Panel I/O and validation, stage harmonisation, normalisation, the HVG gene panel and anchors."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract.errors import InputError
from fmextract.io import atomic_path
from fmextract.stages import map_labels

log = logging.getLogger(__name__)

#: obs columns every prepared panel carries (harmonised names used by every later step).
PREPARED_OBS = ("donor", "tissue", "cell_type", "stage", "branch", "depth")


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike) -> None:
    """Write an AnnData atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def counts_matrix(adata: ad.AnnData, *, layer: str | None, source: str) -> sp.csr_matrix:
    """Return raw counts (sparse CSR) from `layer` (or X), rejecting non-integer or negative values."""
    if layer is not None and layer not in adata.layers:
        raise InputError(
            f"{source}: layer '{layer}' not found (layers: {sorted(adata.layers)}); "
            "set data.counts_layer to the layer holding raw counts, or null to use X"
        )
    m = adata.layers[layer] if layer is not None else adata.X
    m = sp.csr_matrix(m, dtype=np.float32)
    vals = m.data
    if vals.size and (np.any(vals < 0) or not np.allclose(vals, np.round(vals))):
        where = f"layers['{layer}']" if layer is not None else "X"
        raise InputError(
            f"{source}: {where} holds non-integer or negative values, but raw counts are expected; "
            "set data.counts_layer to the layer with raw UMI counts"
        )
    return m


def validate_panel(
    adata: ad.AnnData,
    *,
    source: str,
    donor_key: str,
    cell_type_key: str,
    tissue_key: str | None,
    counts_layer: str | None,
    gene_symbol_column: str | None,
    min_donors: int,
) -> None:
    """Check that a user panel honours the data contract; raise one actionable InputError otherwise."""
    for cfg_key, col in (("data.donor_key", donor_key), ("data.cell_type_key", cell_type_key), ("data.tissue_key", tissue_key)):
        if col is not None and col not in adata.obs.columns:
            raise InputError(
                f"{source}: obs column '{col}' not found (obs has: {', '.join(map(str, adata.obs.columns[:12]))}); "
                f"set {cfg_key} to the right column name"
            )
    if gene_symbol_column is not None and gene_symbol_column not in adata.var.columns:
        raise InputError(
            f"{source}: var column '{gene_symbol_column}' not found (var has: {', '.join(map(str, adata.var.columns[:12]))}); "
            "set data.gene_symbol_column to the column with gene symbols, or null to use var_names"
        )
    counts_matrix(adata, layer=counts_layer, source=source)
    n_donors = adata.obs[donor_key].nunique()
    if n_donors < min_donors:
        raise InputError(
            f"{source}: obs['{donor_key}'] has {n_donors} donor(s), fewer than data.min_donors={min_donors}; "
            "donor-holdout benchmarks need more donors (or point data.donor_key at the donor column)"
        )


def harmonise(
    adata: ad.AnnData,
    stage_table: pd.DataFrame,
    *,
    source: str,
    donor_key: str,
    cell_type_key: str,
    tissue_key: str | None,
    counts_layer: str | None,
    gene_symbol_column: str | None,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Map labels to stage/branch/depth, keep mapped cells, store counts; returns (panel, unmapped-label counts).

    The result has symbol var_names, `layers["counts"]` (CSR), harmonised obs columns `PREPARED_OBS`
    and every original obs column prefixed by nothing (kept as is, e.g. simulator truth).
    """
    counts = counts_matrix(adata, layer=counts_layer, source=source)
    mapped, unmapped = map_labels(adata.obs[cell_type_key].astype(str), stage_table)
    keep = mapped["stage"].notna().to_numpy()
    if not keep.any():
        raise InputError(
            f"{source}: none of the obs['{cell_type_key}'] labels is in the stage table; "
            "add rows to resources/hematopoiesis_stages.tsv or set data.cell_type_key to the right column"
        )
    if (~keep).any():
        log.warning("%s: dropped %d of %d cells with labels absent from the stage table", source, (~keep).sum(), keep.size)
    obs = adata.obs.loc[keep].copy()
    obs["donor"] = obs[donor_key].astype(str)
    obs["tissue"] = obs[tissue_key].astype(str) if tissue_key is not None else "unknown"
    obs["cell_type"] = obs[cell_type_key].astype(str)
    for col in ("stage", "branch", "depth"):
        obs[col] = mapped.loc[keep, col].to_numpy()
    obs["depth"] = obs["depth"].astype(float)
    symbols = adata.var[gene_symbol_column].astype(str) if gene_symbol_column else adata.var_names.astype(str)
    var = pd.DataFrame(index=pd.Index(symbols, name="gene"))
    out = ad.AnnData(X=counts[keep].copy(), obs=obs, var=var)
    if not out.var_names.is_unique:
        out = out[:, ~out.var_names.duplicated()].copy()
        log.warning("%s: duplicated gene symbols kept once", source)
    out.layers["counts"] = out.X.copy()
    out.obs_names_make_unique()
    return out, unmapped


def log_normalise(adata: ad.AnnData, *, target_sum: float = 1e4) -> None:
    """Set X = log1p(CP10k) of `layers["counts"]` in place (scanpy)."""
    import scanpy as sc

    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)


def select_gene_panel(
    adata: ad.AnnData,
    *,
    reference_donors: Sequence[str],
    n_genes: int,
    vocab: Sequence[str],
    min_vocab_overlap: float,
    source: str,
) -> list[str]:
    """Pick `n_genes` seurat_v3 HVGs on the reference donors' counts, restricted to the model vocabulary.

    Genes outside the vocabulary are removed before ranking, so the panel has `n_genes` genes
    whenever the vocabulary covers enough of them.
    """
    import scanpy as sc

    vocab_set = set(vocab)
    in_vocab = np.array([g in vocab_set for g in adata.var_names])
    overlap = float(in_vocab.mean()) if in_vocab.size else 0.0
    log.info("%s: %d of %d genes (%.1f%%) are in the model vocabulary", source, in_vocab.sum(), in_vocab.size, 100 * overlap)
    if overlap < min_vocab_overlap:
        raise InputError(
            f"{source}: only {100 * overlap:.1f}% of genes are in the model vocabulary (< panel.min_vocab_overlap="
            f"{min_vocab_overlap}); check data.gene_symbol_column (CELLxGENE files keep symbols in 'feature_name')"
        )
    ref = adata[adata.obs["donor"].isin(list(reference_donors)), in_vocab]
    ref = ad.AnnData(X=ref.layers["counts"].copy(), var=pd.DataFrame(index=ref.var_names))
    ref = ref[:, np.asarray(ref.X.sum(axis=0)).ravel() > 0].copy()
    n = min(n_genes, ref.n_vars)
    hvg = sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n, inplace=False)
    ranked = hvg[hvg["highly_variable"]].sort_values("highly_variable_rank").index
    return [str(g) for g in ranked]


def choose_reference_donors(donors: Sequence[str], *, n_reference: int, seed: int) -> list[str]:
    """Draw the donors reserved for the fitted-once parts (HVGs, operator context, adaptor); seeded."""
    donors = sorted(set(map(str, donors)))
    if not 1 <= n_reference <= len(donors) - 3:
        raise InputError(
            f"panel.n_reference_donors={n_reference} leaves fewer than 3 of {len(donors)} donors for the benchmark splits; "
            "lower it or add donors"
        )
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(donors, size=n_reference, replace=False).tolist())


def anchors(adata: ad.AnnData, *, min_cells: int, keys: Sequence[str] = ("donor", "tissue", "stage")) -> tuple[np.ndarray, pd.DataFrame]:
    """Mean X profile of each (donor x tissue x stage) group with at least `min_cells` cells.

    Returns (profiles [n_anchors, n_genes], anchor obs with the keys, branch, depth and n_cells).
    """
    obs = adata.obs[list(keys)].astype(str)
    group = obs.agg("|".join, axis=1)
    sizes = group.value_counts()
    kept = sorted(sizes.index[sizes >= min_cells])
    codes = pd.Categorical(group, categories=kept).codes
    mask = codes >= 0
    ind = sp.csr_matrix((np.ones(mask.sum()), (codes[mask], np.flatnonzero(mask))), shape=(len(kept), adata.n_obs))
    X = sp.csr_matrix(adata.X) if sp.issparse(adata.X) else np.asarray(adata.X)
    summed = ind @ X
    summed = summed.toarray() if sp.issparse(summed) else np.asarray(summed)
    profiles = summed / sizes.loc[kept].to_numpy()[:, None]
    first = pd.Series(np.flatnonzero(mask), index=codes[mask]).groupby(level=0).first()
    meta = adata.obs.iloc[first.to_numpy()][[*keys, "branch", "depth"]].reset_index(drop=True)
    meta["n_cells"] = sizes.loc[kept].to_numpy()
    return profiles.astype(np.float32), meta


def align_genes(adata: ad.AnnData, genes: Sequence[str]) -> tuple[sp.csr_matrix, float]:
    """X restricted to `genes` in that order, absent genes as zero columns; returns (matrix, fraction present)."""
    index = pd.Index(adata.var_names).get_indexer(list(genes))
    present = index >= 0
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    cols = sp.csr_matrix((np.ones(present.sum()), (index[present], np.flatnonzero(present))), shape=(adata.n_vars, len(genes)))
    return sp.csr_matrix(X @ cols, dtype=np.float32), float(present.mean())
