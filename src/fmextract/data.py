"""Panel I/O and validation, stage harmonisation, normalisation, the HVG gene panel and anchors.

Atlas-scale panels are never loaded whole: `prepare_panel` streams row chunks of the raw file (validate,
harmonise, normalise, write), `select_gene_panel` reads only the reference donors' counts, and
`write_gene_subset` streams the panel genes out. The in-memory functions stay for small panels and tests and give
the same results (same helpers underneath).
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

# open_backed and read_obs are used by the workflow scripts through this module
from fmextract.chunks import CHUNK_ROWS, Matrix, is_on_disk, open_backed, read_obs, read_rows, row_blocks, write_h5ad_streamed
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


def _counts_source(adata: ad.AnnData, *, layer: str | None, source: str) -> Matrix:
    """The raw-count matrix (layer or X), in memory or on disk, without copying it."""
    if layer is not None and layer not in adata.layers:
        raise InputError(
            f"{source}: layer '{layer}' not found (layers: {sorted(adata.layers)}); "
            "set data.counts_layer to the layer holding raw counts, or null to use X"
        )
    m = adata.layers[layer] if layer is not None else adata.X
    if m is None:
        raise InputError(f"{source}: X is empty; set data.counts_layer to the layer holding raw counts")
    return m


def _check_counts(values: np.ndarray, *, layer: str | None, source: str) -> None:
    """Raise the contract's InputError if `values` (non-zero entries or a dense block) are non-integer or negative."""
    if values.size and (np.any(values < 0) or not np.allclose(values, np.round(values))):
        where = f"layers['{layer}']" if layer is not None else "X"
        raise InputError(
            f"{source}: {where} holds non-integer or negative values, but raw counts are expected; "
            "set data.counts_layer to the layer with raw UMI counts"
        )


def _counts_blocks(m: Matrix, *, layer: str | None, source: str, chunk_size: int) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Row blocks of a raw-count matrix as float32 CSR, each checked to hold non-negative integers."""
    for start, stop, block in row_blocks(m, chunk_size=chunk_size):
        block = sp.csr_matrix(block, dtype=np.float32)
        _check_counts(block.data, layer=layer, source=source)
        yield start, stop, block


def counts_matrix(adata: ad.AnnData, *, layer: str | None, source: str, chunk_size: int = CHUNK_ROWS) -> sp.csr_matrix:
    """Return raw counts (sparse CSR) from `layer` (or X), rejecting non-integer or negative values.

    The whole matrix is returned; the check runs chunk by chunk, and an in-memory float32 CSR is not copied.
    """
    m = _counts_source(adata, layer=layer, source=source)
    if is_on_disk(m):
        parts = [b for _, _, b in _counts_blocks(m, layer=layer, source=source, chunk_size=chunk_size)]
        return sp.csr_matrix(sp.vstack(parts, format="csr")) if parts else sp.csr_matrix(m.shape, dtype=np.float32)
    _check_in_memory(m, layer=layer, source=source, step=chunk_size * 1000)
    return sp.csr_matrix(m, dtype=np.float32)


def _check_in_memory(m: np.ndarray | sp.spmatrix, *, layer: str | None, source: str, step: int) -> None:
    """Check an in-memory count matrix's values slice by slice (no full-size temporaries, no dtype copy)."""
    vals = m.data if sp.issparse(m) else np.asarray(m).reshape(-1)
    for i in range(0, vals.size, step):
        _check_counts(vals[i : i + step], layer=layer, source=source)


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
    check_counts: bool = True,
    chunk_size: int = CHUNK_ROWS,
) -> None:
    """Check that a user panel honours the data contract; raise one actionable InputError otherwise.

    Works on in-memory and backed (`open_backed`) panels; counts are checked chunk by chunk (`check_counts=False`
    leaves that to a caller that streams the counts anyway, as `prepare_panel` does).
    """
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
    m = _counts_source(adata, layer=counts_layer, source=source)
    if check_counts:
        if is_on_disk(m):
            for _ in _counts_blocks(m, layer=counts_layer, source=source, chunk_size=chunk_size):
                pass
        else:
            _check_in_memory(m, layer=counts_layer, source=source, step=chunk_size * 1000)
    n_donors = adata.obs[donor_key].nunique()
    if n_donors < min_donors:
        raise InputError(
            f"{source}: obs['{donor_key}'] has {n_donors} donor(s), fewer than data.min_donors={min_donors}; "
            "donor-holdout benchmarks need more donors (or point data.donor_key at the donor column)"
        )


def _harmonised_obs(
    obs: pd.DataFrame,
    stage_table: pd.DataFrame,
    *,
    source: str,
    donor_key: str,
    cell_type_key: str,
    tissue_key: str | None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Kept cells' obs with the harmonised columns, the keep mask and the unmapped-label counts (obs only)."""
    mapped, unmapped = map_labels(obs[cell_type_key].astype(str), stage_table)
    keep = mapped["stage"].notna().to_numpy()
    if not keep.any():
        raise InputError(
            f"{source}: none of the obs['{cell_type_key}'] labels is in the stage table; "
            "add rows to resources/hematopoiesis_stages.tsv or set data.cell_type_key to the right column"
        )
    if (~keep).any():
        log.warning("%s: dropped %d of %d cells with labels absent from the stage table", source, (~keep).sum(), keep.size)
    out = obs.loc[keep].copy()
    out["donor"] = out[donor_key].astype(str)
    out["tissue"] = out[tissue_key].astype(str) if tissue_key is not None else "unknown"
    out["cell_type"] = out[cell_type_key].astype(str)
    for col in ("stage", "branch", "depth"):
        out[col] = mapped.loc[keep, col].to_numpy()
    out["depth"] = out["depth"].astype(float)
    out.index = ad.utils.make_index_unique(pd.Index(out.index.astype(str)))
    return out, keep, unmapped


def _symbol_var(var: pd.DataFrame, gene_symbol_column: str | None, *, source: str) -> tuple[pd.DataFrame, np.ndarray]:
    """var indexed by gene symbol (duplicates kept once) and the mask of kept columns."""
    symbols = var[gene_symbol_column].astype(str) if gene_symbol_column else var.index.astype(str)
    index = pd.Index(np.asarray(symbols), name="gene")
    cols = ~index.duplicated()
    if not cols.all():
        log.warning("%s: duplicated gene symbols kept once", source)
    return pd.DataFrame(index=index[cols]), cols


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
    chunk_size: int = CHUNK_ROWS,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Map labels to stage/branch/depth, keep mapped cells, store counts; returns (panel, unmapped-label counts).

    The result has symbol var_names, `layers["counts"]` (CSR), harmonised obs columns `PREPARED_OBS`
    and every original obs column kept as is (e.g. simulator truth). A backed panel (`open_backed`) is read
    chunk by chunk and only the kept cells are materialised; for an atlas use `prepare_panel`, which never holds it.
    """
    m = _counts_source(adata, layer=counts_layer, source=source)
    obs, keep, unmapped = _harmonised_obs(adata.obs, stage_table, source=source, donor_key=donor_key,
                                          cell_type_key=cell_type_key, tissue_key=tissue_key)
    var, cols = _symbol_var(adata.var, gene_symbol_column, source=source)
    if is_on_disk(m):
        parts = [b[keep[s:e]] for s, e, b in _counts_blocks(m, layer=counts_layer, source=source, chunk_size=chunk_size)]
        counts = sp.csr_matrix(sp.vstack(parts, format="csr"))
    else:
        counts = counts_matrix(adata, layer=counts_layer, source=source, chunk_size=chunk_size)[keep]
    if not cols.all():
        counts = counts[:, cols]
    out = ad.AnnData(X=counts, obs=obs, var=var)
    out.layers["counts"] = counts.copy()
    return out, unmapped


def _log_cp10k(counts: sp.csr_matrix, *, target_sum: float) -> sp.csr_matrix:
    """log1p(CP10k) of a count block with scanpy (row-wise, so chunked and whole results agree)."""
    import scanpy as sc

    tmp = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    return tmp.X


def log_normalise(adata: ad.AnnData, *, target_sum: float = 1e4) -> None:
    """Set X = log1p(CP10k) of `layers["counts"]` in place (scanpy, sparse in, sparse out)."""
    adata.X = _log_cp10k(sp.csr_matrix(adata.layers["counts"]), target_sum=target_sum)
    adata.uns["log1p"] = {"base": None}


def prepare_panel(
    path: str | os.PathLike,
    stage_table: pd.DataFrame,
    out: str | os.PathLike,
    *,
    source: str,
    donor_key: str,
    cell_type_key: str,
    tissue_key: str | None,
    counts_layer: str | None,
    gene_symbol_column: str | None,
    min_donors: int,
    target_sum: float = 1e4,
    chunk_size: int = CHUNK_ROWS,
    compression: str | None = "gzip",
) -> tuple[pd.DataFrame, dict]:
    """Validate, harmonise and log-normalise the panel file `path` into `out`, one row chunk at a time.

    Same content as `validate_panel` + `harmonise` + `log_normalise` + `write_h5ad` in memory, but peak memory is
    one chunk of counts plus obs: the counts are read from disk (CSR), checked, subset to mapped cells,
    normalised sparse and appended to `out` (X = log1p CP10k, layers["counts"]). Returns (unmapped-label counts,
    summary with n_obs, n_vars, n_donors, n_stages, n_dropped).
    """
    with open_backed(path) as raw:
        keys = dict(donor_key=donor_key, cell_type_key=cell_type_key, tissue_key=tissue_key)
        validate_panel(raw, source=source, counts_layer=counts_layer, gene_symbol_column=gene_symbol_column,
                       min_donors=min_donors, check_counts=False, **keys)
        obs, keep, unmapped = _harmonised_obs(raw.obs, stage_table, source=source, **keys)
        var, cols = _symbol_var(raw.var, gene_symbol_column, source=source)
        m = _counts_source(raw, layer=counts_layer, source=source)

        def blocks() -> Iterator[dict[str, sp.csr_matrix]]:
            for s, e, block in _counts_blocks(m, layer=counts_layer, source=source, chunk_size=chunk_size):
                block = block[keep[s:e]]
                if not cols.all():
                    block = block[:, cols]
                yield {"X": _log_cp10k(block, target_sum=target_sum), "counts": block}

        write_h5ad_streamed(out, obs, var, blocks(), keys=("X", "counts"), uns={"log1p": {"base": None}},
                            compression=compression)
    summary = {"n_obs": int(obs.shape[0]), "n_vars": int(var.shape[0]), "n_donors": int(obs["donor"].nunique()),
               "n_stages": int(obs["stage"].nunique()), "n_dropped": int((~keep).sum())}
    return unmapped, summary


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
    whenever the vocabulary covers enough of them. Only the reference donors' counts of in-vocabulary genes are
    materialised, once (rows and columns selected chunk by chunk), so a backed panel (`open_backed`) works at atlas
    scale. Genes never detected in those cells have zero variance, which seurat_v3 leaves out of its fit and ranks
    last, so they need no extra filtering copy.
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
    rows = adata.obs["donor"].isin(list(reference_donors)).to_numpy()
    ref = ad.AnnData(X=read_rows(adata.layers["counts"], rows, columns=np.flatnonzero(in_vocab)),
                     var=pd.DataFrame(index=adata.var_names[in_vocab]))
    detected = int((np.asarray(ref.X.sum(axis=0)).ravel() > 0).sum())
    n = min(n_genes, detected)
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
    A backed X (`open_backed`) is summed chunk by chunk.
    """
    obs = adata.obs[list(keys)].astype(str)
    group = obs.agg("|".join, axis=1)
    sizes = group.value_counts()
    kept = sorted(sizes.index[sizes >= min_cells])
    codes = pd.Categorical(group, categories=kept).codes
    mask = codes >= 0
    ind = sp.csr_matrix((np.ones(mask.sum()), (codes[mask], np.flatnonzero(mask))), shape=(len(kept), adata.n_obs))
    if is_on_disk(adata.X):  # backed panel: accumulate group sums chunk by chunk
        summed, ind = np.zeros((len(kept), adata.n_vars)), ind.tocsc()
        for s, e, block in row_blocks(adata.X):
            part = ind[:, s:e] @ block
            summed += part.toarray() if sp.issparse(part) else np.asarray(part)
    else:
        X = sp.csr_matrix(adata.X) if sp.issparse(adata.X) else np.asarray(adata.X)
        summed = ind @ X
        summed = summed.toarray() if sp.issparse(summed) else np.asarray(summed)
    profiles = summed / sizes.loc[kept].to_numpy()[:, None]
    first = pd.Series(np.flatnonzero(mask), index=codes[mask]).groupby(level=0).first()
    meta = adata.obs.iloc[first.to_numpy()][[*keys, "branch", "depth"]].reset_index(drop=True)
    meta["n_cells"] = sizes.loc[kept].to_numpy()
    return profiles.astype(np.float32), meta


def align_genes(adata: ad.AnnData, genes: Sequence[str]) -> tuple[sp.csr_matrix, float]:
    """X restricted to `genes` in that order, absent genes as zero columns; returns (matrix, fraction present).

    Only the selected columns are materialised (chunk by chunk for a backed X).
    """
    index = pd.Index(adata.var_names).get_indexer(list(genes))
    present = index >= 0
    cols = sp.csr_matrix((np.ones(present.sum(), dtype=np.float32), (index[present], np.flatnonzero(present))),
                         shape=(adata.n_vars, len(genes)))
    if is_on_disk(adata.X):
        parts = [sp.csr_matrix(sp.csr_matrix(b, dtype=np.float32) @ cols) for _, _, b in row_blocks(adata.X)]
        X = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, len(genes)), dtype=np.float32)
        return sp.csr_matrix(X, dtype=np.float32), float(present.mean())
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    return sp.csr_matrix(X @ cols, dtype=np.float32), float(present.mean())


def write_gene_subset(
    path: str | os.PathLike,
    out: str | os.PathLike,
    genes: Sequence[str],
    *,
    chunk_size: int = CHUNK_ROWS,
    compression: str | None = "gzip",
) -> None:
    """Write the prepared panel `path` restricted to `genes` (in that order) to `out`, streaming row chunks.

    Same content as `read_h5ad(path)[:, genes].copy()` written with `write_h5ad` (X, every layer, obs, var, uns),
    without loading the panel.
    """
    with open_backed(path) as panel:
        index = pd.Index(panel.var_names).get_indexer(list(genes))
        if (index < 0).any():
            missing = [g for g, i in zip(genes, index) if i < 0]
            raise InputError(f"{path}: {len(missing)} panel genes absent from the prepared panel (e.g. {missing[:3]}); "
                             "rebuild the gene panel from this file")
        mats = {"X": panel.X, **panel.layers}
        keys = list(mats)

        def blocks() -> Iterator[dict[str, sp.csr_matrix]]:
            iters = {k: row_blocks(m, chunk_size=chunk_size) for k, m in mats.items()}
            for _ in range(0, panel.n_obs, chunk_size):
                yield {k: sp.csr_matrix(next(it)[2])[:, index] for k, it in iters.items()}

        write_h5ad_streamed(out, panel.obs, panel.var.iloc[index], blocks(), keys=keys, uns=panel.uns,
                            compression=compression)
