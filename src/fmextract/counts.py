"""Raw counts: where a panel keeps them (layer, raw.X, X), their check, and the one normalisation (log1p CP10k).

Every reader of raw counts goes through `counts_source` (the prepare step, `fmextract apply`), so a CELLxGENE file
(X normalised, float32 integer counts in raw.X) is read the same way everywhere.
"""

from __future__ import annotations

import logging
from typing import Iterator

import anndata as ad
import numpy as np
import scipy.sparse as sp

from fmextract.chunks import CHUNK_ROWS, Matrix, is_on_disk, row_blocks
from fmextract.errors import InputError

log = logging.getLogger(__name__)

#: The name `counts_source` gives CELLxGENE's raw counts (the .h5ad's raw/X, same genes as var).
RAW_X = "raw.X"


def _raw_x(adata: ad.AnnData, *, source: str) -> Matrix | None:
    """raw.X with the same genes as var (a backed panel exposes it as a layer), or None when the file has none."""
    if RAW_X in adata.layers:
        return adata.layers[RAW_X]
    raw = getattr(adata, "raw", None)
    if raw is None:
        return None
    if raw.n_vars != adata.n_vars:
        raise InputError(f"{source}: raw.X has {raw.n_vars} genes but var has {adata.n_vars}; counts in raw.X must "
                         "cover the same genes as var (CELLxGENE layout), or name a layer that holds the counts")
    return raw.X


def _where(name: str | None) -> str:
    """How a count source is named in messages: layers['<name>'], raw.X or X."""
    return "X" if name is None else RAW_X if name == RAW_X else f"layers['{name}']"


def _integer_valued(m: Matrix, rows: int = 1000) -> bool:
    """Whether the first `rows` rows of `m` hold non-negative integers (a cheap look before choosing a count source)."""
    if m is None or m.shape[0] == 0:
        return False
    block = m[: min(rows, m.shape[0])]
    values = sp.csr_matrix(block).data if sp.issparse(block) or is_on_disk(m) else np.asarray(block).ravel()
    return bool(values.size == 0 or (values.min() >= 0 and np.array_equal(values, np.round(values))))


def counts_source(adata: ad.AnnData, layer: str | None, *, source: str, key: str = "counts_layer") -> tuple[Matrix, str]:
    """The raw-count matrix of a panel (in memory or on disk, never copied) and where it was found.

    `layer` names it: a layer, or "raw.X" (CELLxGENE files: X normalised, counts in raw.X). With None the lookup
    is, in turn: layers['counts'], X when it holds integers, raw.X. `key` is the setting to name in errors (a config
    key or a command-line option). Every reader of raw counts (prepare, `fmextract apply`) goes through here.
    """
    has_raw = RAW_X not in adata.layers and getattr(adata, "raw", None) is not None
    layers = sorted(adata.layers) + ([RAW_X] if has_raw else [])
    if layer == RAW_X:
        m = _raw_x(adata, source=source)
        if m is None:
            raise InputError(f"{source}: {key}={RAW_X} but the file has no raw.X (layers: {layers or 'none'}); set {key} "
                             "to the layer holding raw counts, or leave it unset to look for them")
        return m, RAW_X
    if layer is not None:
        if layer not in adata.layers:
            raise InputError(f"{source}: layer '{layer}' not found (count sources: {layers or 'none'}, or X); set {key} "
                             "to the one holding raw counts, or leave it unset to look for them")
        return adata.layers[layer], _where(layer)
    if "counts" in adata.layers:
        return adata.layers["counts"], _where("counts")
    if adata.X is not None and _integer_valued(adata.X):
        return adata.X, "X"
    raw = _raw_x(adata, source=source)
    if raw is not None:
        log.info("%s: X is not integer-valued; raw counts read from raw.X", source)
        return raw, RAW_X
    if adata.X is None:
        raise InputError(f"{source}: X is empty and there is no 'counts' layer or raw.X; set {key} to the layer holding "
                         "raw counts")
    return adata.X, "X"  # not counts: the value check names X and the setting to change


def check_counts(values: np.ndarray, *, where: str, source: str, key: str) -> None:
    """Raise the contract's InputError if `values` (non-zero entries or a dense block) are non-integer or negative.

    Integer counts stored as floats (CELLxGENE's float32 raw.X) are counts.
    """
    if values.size and (np.any(values < 0) or not np.allclose(values, np.round(values))):
        raise InputError(
            f"{source}: {where} holds non-integer or negative values, but raw counts are expected; "
            f"set {key} to the layer with raw counts (raw.X for CELLxGENE files)"
        )


def counts_blocks(m: Matrix, *, where: str, source: str, key: str = "counts_layer",
                  chunk_size: int = CHUNK_ROWS) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Row blocks of a raw-count matrix as float32 CSR, each checked to hold non-negative integers."""
    for start, stop, block in row_blocks(m, chunk_size=chunk_size):
        block = sp.csr_matrix(block, dtype=np.float32)
        check_counts(block.data, where=where, source=source, key=key)
        yield start, stop, block


def counts_matrix(adata: ad.AnnData, *, layer: str | None, source: str, key: str = "counts_layer",
                  chunk_size: int = CHUNK_ROWS) -> sp.csr_matrix:
    """Return raw counts (sparse CSR) from `counts_source`, rejecting non-integer or negative values.

    The whole matrix is returned; the check runs chunk by chunk, and an in-memory float32 CSR is not copied.
    """
    m, where = counts_source(adata, layer, source=source, key=key)
    if is_on_disk(m):
        parts = [b for _, _, b in counts_blocks(m, where=where, source=source, key=key, chunk_size=chunk_size)]
        return sp.csr_matrix(sp.vstack(parts, format="csr")) if parts else sp.csr_matrix(m.shape, dtype=np.float32)
    check_in_memory(m, where=where, source=source, key=key, step=chunk_size * 1000)
    return sp.csr_matrix(m, dtype=np.float32)


def check_in_memory(m: np.ndarray | sp.spmatrix, *, where: str, source: str, key: str, step: int) -> None:
    """Check an in-memory count matrix's values slice by slice (no full-size temporaries, no dtype copy)."""
    vals = m.data if sp.issparse(m) else np.asarray(m).reshape(-1)
    for i in range(0, vals.size, step):
        check_counts(vals[i : i + step], where=where, source=source, key=key)


def log_cp10k(counts: sp.csr_matrix, *, target_sum: float = 1e4) -> sp.csr_matrix:
    """log1p(CP10k) of a count block with scanpy (row-wise, so chunked and whole results agree): THE normalisation."""
    import scanpy as sc

    if counts.shape[0] == 0:  # a chunk whose cells were all filtered out: nothing to normalise (scanpy rejects it)
        return sp.csr_matrix(counts.shape, dtype=np.float32)
    tmp = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    return tmp.X


def log_normalise(adata: ad.AnnData, *, target_sum: float = 1e4) -> None:
    """Set X = log1p(CP10k) of `layers["counts"]` in place (scanpy, sparse in, sparse out)."""
    adata.X = log_cp10k(sp.csr_matrix(adata.layers["counts"]), target_sum=target_sum)
    adata.uns["log1p"] = {"base": None}
