"""Panel I/O and validation, stage harmonisation (labels by ontology id or name, coarse labels, assays), the HVG gene
panel and anchors. Where raw counts live and how they are normalised is `fmextract.counts`.

Atlas-scale panels are never loaded whole: `prepare_panel` streams row chunks of the raw file (validate,
harmonise, normalise, write), `select_gene_panel` reads only the reference donors' counts, and
`write_gene_subset` streams the panel genes out. The in-memory functions stay for small panels and tests and give
the same results (same helpers underneath).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterator, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

# open_backed and read_obs are used by the workflow scripts through this module
from fmextract.chunks import CHUNK_ROWS, is_on_disk, open_backed, read_obs, read_rows, row_blocks, write_h5ad_streamed
# log_normalise and counts_matrix are part of this module's public panel helpers (defined with the count lookup)
from fmextract.counts import check_in_memory, counts_blocks, counts_matrix, counts_source, log_cp10k, log_normalise
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
    config: str = "panels.<panel>",
) -> None:
    """Check that a user panel honours the data contract; raise one actionable InputError otherwise.

    Works on in-memory and backed (`open_backed`) panels; counts are checked chunk by chunk (`check_counts=False`
    leaves that to a caller that streams the counts anyway, as `prepare_panel` does). `config` is the panel's config
    section named in errors.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"{source}: the panel has {adata.n_obs} cells x {adata.n_vars} genes; point {config}.path at "
                         "a panel with cells and genes")
    for name, col in (("donor_key", donor_key), ("cell_type_key", cell_type_key), ("tissue_key", tissue_key)):
        if col is not None and col not in adata.obs.columns:
            raise InputError(
                f"{source}: obs column '{col}' not found (obs has: {', '.join(map(str, adata.obs.columns[:12]))}); "
                f"set {config}.{name} to the right column name"
            )
    if gene_symbol_column is not None and gene_symbol_column not in adata.var.columns:
        raise InputError(
            f"{source}: var column '{gene_symbol_column}' not found (var has: {', '.join(map(str, adata.var.columns[:12]))}); "
            f"set {config}.gene_symbol_column to the column with gene symbols, or null to use var_names"
        )
    if gene_symbol_column is None:
        check_symbols(adata.var, source=source, key=f"{config}.gene_symbol_column")
    key = f"{config}.counts_layer"
    m, where = counts_source(adata, counts_layer, source=source, key=key)
    if check_counts:
        if is_on_disk(m):
            for _ in counts_blocks(m, where=where, source=source, key=key, chunk_size=chunk_size):
                pass
        else:
            check_in_memory(m, where=where, source=source, key=key, step=chunk_size * 1000)
    n_donors = adata.obs[donor_key].nunique()
    if n_donors < min_donors:
        raise InputError(
            f"{source}: obs['{donor_key}'] has {n_donors} donor(s), fewer than data.min_donors={min_donors}; "
            f"donor-holdout benchmarks need more donors (or point {config}.donor_key at the donor column)"
        )


#: an Ensembl gene id (ENSG00000141510, ENSMUSG..., with an optional .version)
ENSEMBL_ID = re.compile(r"ENS[A-Z]*G\d{6,}(\.\d+)?")
#: var columns that usually hold gene symbols (CELLxGENE: feature_name)
SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_symbol", "gene_name", "gene_names", "symbol")


def check_symbols(var: pd.DataFrame, *, source: str, key: str) -> None:
    """Genes are matched by symbol: var_names that are mostly Ensembl ids need `key` (the var column of symbols)."""
    names = var.index.astype(str)
    if len(names) == 0 or np.mean([bool(ENSEMBL_ID.fullmatch(n)) for n in names[:1000]]) < 0.5:
        return
    hint = next((f" ('{c}' looks like it)" for c in SYMBOL_COLUMNS if c in var.columns), "")
    raise InputError(f"{source}: var_names are Ensembl ids (e.g. {names[0]}) but genes are matched by symbol; set "
                     f"{key} to the var column holding gene symbols{hint}")


def _assay_filter(obs: pd.DataFrame, assay_key: str | None, keep_assays: Sequence[str] | None, *, source: str,
                  config: str) -> np.ndarray:
    """Mask of cells whose assay matches a `keep_assays` pattern (fnmatch, e.g. "10x *"); every cell without a filter.

    Logs the cells kept and dropped per assay: mixed assays (10x UMI counts, Smart-seq2 read counts) are never pooled
    silently.
    """
    from fnmatch import fnmatchcase

    if assay_key is None:
        if keep_assays:
            raise InputError(f"{source}: {config}.keep_assays is set but {config}.assay_key is not; name the obs column "
                             "holding the assay (CELLxGENE: assay)")
        return np.ones(len(obs), dtype=bool)
    if assay_key not in obs.columns:
        raise InputError(f"{source}: obs column '{assay_key}' not found (obs has: "
                         f"{', '.join(map(str, obs.columns[:12]))}); set {config}.assay_key to the assay column, or null")
    assay = obs[assay_key].astype(str).to_numpy()
    names = sorted(set(assay))
    kept = {a for a in names if not keep_assays or any(fnmatchcase(a, p) for p in keep_assays)}
    counts = pd.Series(assay).value_counts()
    for a in names:
        log.info("%s: assay '%s': %d cells %s", source, a, counts[a], "kept" if a in kept else
                 f"DROPPED ({config}.keep_assays={list(keep_assays)})")
    if not kept:
        raise InputError(f"{source}: none of the {len(obs)} cells has an assay matching {config}.keep_assays="
                         f"{list(keep_assays)} (assays found: {', '.join(names)}); fix the patterns or set them to null")
    return np.isin(assay, sorted(kept))


def _tissue_filter(obs: pd.DataFrame, tissue_key: str | None, keep_tissues: Sequence[str] | None, *, source: str,
                   config: str) -> np.ndarray:
    """Mask of cells whose tissue is one of `keep_tissues` (e.g. a lung panel cut from a whole atlas); all without one."""
    if not keep_tissues:
        return np.ones(len(obs), dtype=bool)
    if tissue_key is None or tissue_key not in obs.columns:
        raise InputError(f"{source}: {config}.keep_tissues is set but obs has no tissue column '{tissue_key}'; set "
                         f"{config}.tissue_key to the tissue column")
    keep = obs[tissue_key].astype(str).isin([str(t) for t in keep_tissues]).to_numpy()
    if not keep.any():
        found = ", ".join(sorted(obs[tissue_key].astype(str).unique())[:12])
        raise InputError(f"{source}: no cell has a tissue in {config}.keep_tissues={list(keep_tissues)} (tissues found: "
                         f"{found}); fix the names or set keep_tissues to null")
    log.info("%s: %d of %d cells in tissues %s kept (%s.keep_tissues)", source, int(keep.sum()), len(obs),
             list(keep_tissues), config)
    return keep


def _harmonised_obs(
    obs: pd.DataFrame,
    stage_table: pd.DataFrame,
    *,
    source: str,
    donor_key: str,
    cell_type_key: str,
    tissue_key: str | None,
    ontology_key: str | None = None,
    assay_key: str | None = None,
    keep_assays: Sequence[str] | None = None,
    keep_tissues: Sequence[str] | None = None,
    config: str = "panels.<panel>",
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, dict]:
    """Kept cells' obs with the harmonised columns, the keep mask, the unmapped-label counts and drop counts.

    Cells are kept when their assay is kept, their tissue is one of `keep_tissues` (all when None) and their label
    maps to a branch (by `ontology_key` id where the column exists, else by name); coarse labels keep a branch with
    stage and depth missing.
    """
    in_assay = _assay_filter(obs, assay_key, keep_assays, source=source, config=config)
    in_tissue = _tissue_filter(obs, tissue_key, keep_tissues, source=source, config=config)
    n_dropped_tissue = int((in_assay & ~in_tissue).sum())
    in_assay = in_assay & in_tissue
    ids = None
    if ontology_key is not None and ontology_key in obs.columns:
        ids = obs[ontology_key].astype(str)
        log.info("%s: labels mapped by obs['%s'] (Cell Ontology ids) where the stage table has the id, else by name",
                 source, ontology_key)
    sub = obs.loc[in_assay]
    mapped, unmapped = map_labels(sub[cell_type_key].astype(str), stage_table,
                                  ontology_ids=None if ids is None else ids[in_assay])
    has_branch = mapped["branch"].notna().to_numpy()
    if not has_branch.any():
        n_labels = sub[cell_type_key].nunique()
        raise InputError(
            f"{source}: none of the {int(in_assay.sum())} cells{' left by the assay filter' if assay_key else ''} has a "
            f"label in the stage table ({n_labels} distinct labels in obs['{cell_type_key}'], e.g. "
            f"{', '.join(map(repr, unmapped['label'].head(3)))}); set {config}.cell_type_key to the cell-type column "
            "or add rows to the stage table (data.stage_table)"
        )
    keep = np.zeros(len(obs), dtype=bool)
    keep[np.flatnonzero(in_assay)[has_branch]] = True
    drops = {"n_dropped_assay": int((~in_assay).sum()) - n_dropped_tissue, "n_dropped_tissue": n_dropped_tissue,
             "n_dropped_unmapped": int((~has_branch).sum()),
             "n_coarse": int((has_branch & mapped["stage"].isna().to_numpy()).sum())}
    if drops["n_dropped_unmapped"]:
        log.warning("%s: dropped %d of %d cells with labels absent from the stage table (listed with counts in the "
                    "unmapped-labels table)", source, drops["n_dropped_unmapped"], int(in_assay.sum()))
    if drops["n_coarse"]:
        log.info("%s: %d cells carry a coarse label (branch, no fine stage): used by branch endpoints only",
                 source, drops["n_coarse"])
    out = obs.loc[keep].copy()
    out["donor"] = out[donor_key].astype(str)
    out["tissue"] = out[tissue_key].astype(str) if tissue_key is not None else "unknown"
    out["cell_type"] = out[cell_type_key].astype(str)
    for col in ("stage", "branch", "depth"):
        out[col] = mapped.loc[has_branch, col].to_numpy()
    out["depth"] = out["depth"].astype(float)
    out.index = ad.utils.make_index_unique(pd.Index(out.index.astype(str)))
    return out, keep, unmapped, drops


def _check_donors_left(obs: pd.DataFrame, min_donors: int, *, source: str, config: str) -> None:
    """After dropping cells (assays, unmapped labels), enough donors must remain for donor-holdout splits."""
    n = obs["donor"].nunique()
    if n < min_donors:
        raise InputError(f"{source}: {n} donor(s) keep cells after the assay and label filters, fewer than "
                         f"data.min_donors={min_donors}; check {config}.keep_assays and {config}.cell_type_key")


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
    ontology_key: str | None = None,
    assay_key: str | None = None,
    keep_assays: Sequence[str] | None = None,
    keep_tissues: Sequence[str] | None = None,
    chunk_size: int = CHUNK_ROWS,
    config: str = "panels.<panel>",
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Map labels to stage/branch/depth, keep mapped cells, store counts; returns (panel, unmapped-label counts).

    The result has symbol var_names, `layers["counts"]` (CSR), harmonised obs columns `PREPARED_OBS`
    and every original obs column kept as is (e.g. simulator truth). A backed panel (`open_backed`) is read
    chunk by chunk and only the kept cells are materialised; for an atlas use `prepare_panel`, which never holds it.
    Pass `stage_table` from `stages.load_label_table` to keep coarse labels (branch only).
    """
    key = f"{config}.counts_layer"
    m, where = counts_source(adata, counts_layer, source=source, key=key)
    obs, keep, unmapped, _ = _harmonised_obs(adata.obs, stage_table, source=source, donor_key=donor_key,
                                             cell_type_key=cell_type_key, tissue_key=tissue_key,
                                             ontology_key=ontology_key, assay_key=assay_key, keep_assays=keep_assays,
                                             keep_tissues=keep_tissues, config=config)
    var, cols = _symbol_var(adata.var, gene_symbol_column, source=source)
    if is_on_disk(m):
        parts = [b[keep[s:e]] for s, e, b in counts_blocks(m, where=where, source=source, key=key, chunk_size=chunk_size)]
        counts = sp.csr_matrix(sp.vstack(parts, format="csr"))
    else:
        check_in_memory(m, where=where, source=source, key=key, step=chunk_size * 1000)
        counts = sp.csr_matrix(m, dtype=np.float32)[keep]
    if not cols.all():
        counts = counts[:, cols]
    out = ad.AnnData(X=counts, obs=obs, var=var)
    out.layers["counts"] = counts.copy()
    return out, unmapped


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
    ontology_key: str | None = None,
    assay_key: str | None = None,
    keep_assays: Sequence[str] | None = None,
    keep_tissues: Sequence[str] | None = None,
    target_sum: float = 1e4,
    chunk_size: int = CHUNK_ROWS,
    compression: str | None = "gzip",
    config: str = "panels.<panel>",
) -> tuple[pd.DataFrame, dict]:
    """Validate, harmonise and log-normalise the panel file `path` into `out`, one row chunk at a time.

    Same content as `validate_panel` + `harmonise` + `log_normalise` + `write_h5ad` in memory, but peak memory is
    one chunk of counts plus obs: the counts are read from disk (CSR), checked, subset to kept cells,
    normalised sparse and appended to `out` (X = log1p CP10k, layers["counts"]). Returns (unmapped-label counts,
    summary with n_obs, n_vars, n_donors, n_stages, n_dropped, n_dropped_assay, n_dropped_unmapped, n_coarse,
    counts_source).
    """
    with open_backed(path, key=f"{config}.path") as raw:
        keys = dict(donor_key=donor_key, cell_type_key=cell_type_key, tissue_key=tissue_key)
        validate_panel(raw, source=source, counts_layer=counts_layer, gene_symbol_column=gene_symbol_column,
                       min_donors=min_donors, check_counts=False, config=config, **keys)
        obs, keep, unmapped, drops = _harmonised_obs(raw.obs, stage_table, source=source, ontology_key=ontology_key,
                                                     assay_key=assay_key, keep_assays=keep_assays,
                                                     keep_tissues=keep_tissues, config=config, **keys)
        _check_donors_left(obs, min_donors, source=source, config=config)
        var, cols = _symbol_var(raw.var, gene_symbol_column, source=source)
        key = f"{config}.counts_layer"
        m, where = counts_source(raw, counts_layer, source=source, key=key)
        log.info("%s: raw counts read from %s", source, where)

        def blocks() -> Iterator[dict[str, sp.csr_matrix]]:
            total = 0.0
            for s, e, block in counts_blocks(m, where=where, source=source, key=key, chunk_size=chunk_size):
                block = block[keep[s:e]]
                if not cols.all():
                    block = block[:, cols]
                total += float(block.sum())
                yield {"X": log_cp10k(block, target_sum=target_sum), "counts": block}
            if total == 0:  # raised inside the atomic write: no output is left behind
                raise InputError(f"{source}: every count in {where} of the kept cells is 0; set {key} to the layer "
                                 "holding the raw counts")

        write_h5ad_streamed(out, obs, var, blocks(), keys=("X", "counts"), uns={"log1p": {"base": None}},
                            compression=compression)
    summary = {"n_obs": int(obs.shape[0]), "n_vars": int(var.shape[0]), "n_donors": int(obs["donor"].nunique()),
               "n_stages": int(obs["stage"].nunique()), "n_dropped": int((~keep).sum()), **drops,
               "counts_source": where}
    return unmapped, summary


def select_gene_panel(
    adata: ad.AnnData,
    *,
    reference_donors: Sequence[str],
    n_genes: int,
    vocab: Sequence[str],
    min_vocab_overlap: float,
    source: str,
    symbol_key: str = "panels.reference.gene_symbol_column",
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
            f"{min_vocab_overlap}); check that var_names or {symbol_key} hold gene symbols of the model's vocabulary "
            "(CELLxGENE files keep symbols in 'feature_name')"
        )
    rows = adata.obs["donor"].isin(list(reference_donors)).to_numpy()
    ref = ad.AnnData(X=read_rows(adata.layers["counts"], rows, columns=np.flatnonzero(in_vocab)),
                     var=pd.DataFrame(index=adata.var_names[in_vocab]))
    detected = int((np.asarray(ref.X.sum(axis=0)).ravel() > 0).sum())
    n = min(n_genes, detected)
    hvg = sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n, inplace=False)
    ranked = hvg[hvg["highly_variable"]].sort_values("highly_variable_rank").index
    return [str(g) for g in ranked]


def anchors(adata: ad.AnnData, *, min_cells: int, keys: Sequence[str] = ("donor", "tissue", "stage")) -> tuple[np.ndarray, pd.DataFrame]:
    """Mean X profile of each (donor x tissue x stage) group with at least `min_cells` cells.

    Returns (profiles [n_anchors, n_genes], anchor obs with the keys, branch, depth and n_cells); the largest group
    size is in `meta.attrs["largest_group"]` (for `require_anchors`). Cells with a missing key (a coarse label has no
    stage) belong to no anchor. A backed X (`open_backed`) is summed chunk by chunk.
    """
    obs = adata.obs[list(keys)]
    group = obs.astype(str).agg("|".join, axis=1).where(obs.notna().all(axis=1).to_numpy())
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
    meta.attrs["largest_group"] = int(sizes.max()) if len(sizes) else 0
    return profiles.astype(np.float32), meta


def require_anchors(meta: pd.DataFrame, *, min_cells: int, source: str, what: str = "the reference donors") -> None:
    """Stop with one line when anchors cannot support a fit: fewer than 2 anchors, or all of one stage.

    Names the count found, the config key and the likely cause (too few or too small reference donors).
    """
    n, n_stages = len(meta), meta["stage"].nunique() if len(meta) else 0
    if n >= 2 and n_stages >= 2:
        return
    largest = meta.attrs.get("largest_group", int(meta["n_cells"].max()) if n else 0)
    raise InputError(
        f"{source}: {n} anchor(s) over {n_stages} stage(s) among {what} reach anchors.min_cells={min_cells} cells "
        f"(largest donor x tissue x stage group: {largest} cells); at least 2 anchors of 2 stages are needed: lower "
        "anchors.min_cells or reserve more (or larger) reference donors (panel.n_reference_donors)"
    )


def reference_cells(path: str | os.PathLike, reference_donors: Sequence[str], genes: Sequence[str]) -> ad.AnnData:
    """Reference donors' cells of a prepared panel (log1p X only, read backed), columns in `genes` order: the cells
    every part fitted once (operators, adaptors, comparators) is fitted on."""
    with open_backed(path) as panel:
        rows = panel.obs["donor"].astype(str).isin([str(d) for d in reference_donors]).to_numpy()
        cols = panel.var_names.get_indexer(list(genes))
        if (cols < 0).any():
            raise InputError(f"{path}: {int((cols < 0).sum())} feature-map genes are absent; rebuild the feature map "
                             "from this panel")
        return ad.AnnData(X=read_rows(panel.X, rows, columns=cols), obs=panel.obs[rows].copy(),
                          var=panel.var.iloc[cols].copy())


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
