"""Row-chunked access to cells x genes matrices held in memory or on disk, so no step needs a whole atlas in memory."""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.abc import CSCDataset, CSRDataset
from anndata.io import read_elem, sparse_dataset

from fmextract.errors import InputError

log = logging.getLogger(__name__)

#: Rows per chunk of the streamed paths: 10,000 cells x ~2,000 non-zeros is ~160 MB of CSR (float32 + int32).
CHUNK_ROWS = 10_000
#: HDF5 chunk (elements) of the streamed sparse datasets: 256 Ki values, ~1 MiB float32.
H5_CHUNK = 1 << 18

#: Anything `row_blocks` can read: in-memory dense/sparse, or on disk (a backed AnnData's sparse X/layer, an h5py dataset).
Matrix = Any


def is_on_disk(m: Matrix) -> bool:
    """True for matrices still on disk (backed CSR/CSC datasets, h5py datasets)."""
    return isinstance(m, (CSRDataset, CSCDataset, h5py.Dataset))


def row_blocks(m: Matrix, *, chunk_size: int = CHUNK_ROWS) -> Iterator[tuple[int, int, np.ndarray | sp.csr_matrix]]:
    """Yield (start, stop, rows start:stop) of `m` in turn: CSR for sparse input, ndarray for dense input.

    In-memory sparse matrices of another format are converted to CSR once; on-disk CSC cannot be read by rows
    cheaply (each block touches every column), so it is allowed but logged.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if sp.issparse(m) and m.format != "csr":
        m = sp.csr_matrix(m)
    if isinstance(m, CSCDataset):
        log.warning("reading a CSC matrix on disk by rows is slow; rewrite the file with CSR X/layers for atlas-scale data")
    n = m.shape[0]
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        block = m[start:stop]
        if sp.issparse(block):
            block = sp.csr_matrix(block)
        else:
            block = np.asarray(block)
        yield start, stop, block


def read_rows(
    m: Matrix, rows: np.ndarray, *, columns: np.ndarray | None = None, chunk_size: int = CHUNK_ROWS
) -> sp.csr_matrix:
    """Rows of `m` selected by a boolean mask (in order) as one CSR matrix, reading on-disk data chunk by chunk.

    `columns` (integer positions) selects columns inside each chunk, so only the wanted block is ever held whole.
    """
    rows = np.asarray(rows, dtype=bool)
    if rows.shape[0] != m.shape[0]:
        raise ValueError(f"row mask has {rows.shape[0]} entries for {m.shape[0]} rows")
    select = (lambda b: b) if columns is None else (lambda b: b[:, columns])
    if not is_on_disk(m):
        return sp.csr_matrix(select(sp.csr_matrix(m)[rows] if sp.issparse(m) else np.asarray(m)[rows]))
    if isinstance(m, CSCDataset):
        log.warning("reading a CSC matrix on disk by rows is slow; rewrite the file with CSR X/layers for atlas-scale data")
    parts = []
    for start in range(0, m.shape[0], chunk_size):
        wanted = np.flatnonzero(rows[start : start + chunk_size])
        if wanted.size:  # read only the span of this chunk that holds wanted rows
            lo, hi = start + wanted[0], start + wanted[-1] + 1
            block = m[lo:hi]
            block = sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
            parts.append(sp.csr_matrix(select(block[wanted - wanted[0]])))
    n_cols = m.shape[1] if columns is None else len(columns)
    if not parts:
        return sp.csr_matrix((0, n_cols), dtype=m.dtype)
    return sp.csr_matrix(sp.vstack(parts, format="csr"))


def map_rows(
    fn: Callable[[np.ndarray | sp.csr_matrix], np.ndarray],
    X: Matrix,
    *,
    batch_size: int = CHUNK_ROWS,
    out: Any | None = None,
) -> Any:
    """Apply a row-wise `fn` to X batch by batch and stack the results (into `out` when given, e.g. an h5py dataset).

    Only one batch of input and output temporaries exists at a time; with `out` on disk the stacked result never
    sits in memory either.
    """
    n = X.shape[0]
    if n == 0:
        empty = np.asarray(fn(X[:0] if not is_on_disk(X) else sp.csr_matrix((0, X.shape[1]), dtype=np.float32)))
        return empty if out is None else out
    for start, stop, block in row_blocks(X, chunk_size=batch_size):
        Y = np.asarray(fn(block))
        if out is None:
            out = np.empty((n, *Y.shape[1:]), dtype=Y.dtype)
        out[start:stop] = Y
    return out


def _read_matrix(elem: h5py.Group | h5py.Dataset) -> Matrix | None:
    """An on-disk matrix element: backed CSR/CSC, an h5py dataset for dense arrays; None for other encodings."""
    if isinstance(elem, h5py.Dataset):
        return elem
    if elem.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix"):
        return sparse_dataset(elem)
    return None


def _unreadable(path: str | os.PathLike, err: Exception, key: str | None) -> InputError:
    """The one-line error of a file that is not a readable .h5ad: missing, not HDF5, truncated, or lacking obs/var."""
    fix = f"point {key} at an AnnData .h5ad file" if key else "pass an AnnData .h5ad file"
    if isinstance(err, FileNotFoundError):
        return InputError(f"{path}: file not found; {fix}")
    if isinstance(err, KeyError):
        return InputError(f"{path}: not an AnnData .h5ad (no '{err.args[0]}' group); {fix}")
    found = re.findall(r"\(([^()]*)\)", str(err))
    reason = found[-1] if found else type(err).__name__
    return InputError(f"{path}: cannot be read as .h5ad ({reason}); {fix}, or fetch it again if it is truncated")


@contextmanager
def open_h5(path: str | os.PathLike, *, key: str | None = None) -> Iterator[h5py.File]:
    """An .h5ad opened read-only with h5py; a missing, non-HDF5 or truncated file -> one-line InputError naming `key`
    (the config key or argument that gave the path)."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise _unreadable(path, err, key) from None
    with f:
        yield f


@contextmanager
def open_backed(path: str | os.PathLike, *, key: str | None = None) -> Iterator[ad.AnnData]:
    """Open an .h5ad with obs/var (and uns) in memory and X plus every layer left on disk; closes the file on exit.

    Unlike `anndata.read_h5ad(path, backed="r")`, which keeps only X on disk and reads all layers (where raw
    counts live) into memory, nothing cells x genes is loaded until a caller reads rows of it. A `raw/X` with the
    same genes (CELLxGENE's raw counts) is exposed as the layer "raw.X". A file that cannot be read as .h5ad raises
    a one-line InputError naming `key` (see `open_h5`).
    """
    with open_h5(path, key=key) as f:
        try:
            obs = read_elem(f["obs"])
            var = read_elem(f["var"])
            uns = read_elem(f["uns"]) if "uns" in f else {}
            X = _read_matrix(f["X"]) if "X" in f else None
            layers = {}
            for name in f["layers"].keys() if "layers" in f else ():
                m = _read_matrix(f["layers"][name])
                if m is not None:
                    layers[name] = m
            if "raw" in f and "X" in f["raw"]:  # CELLxGENE keeps raw counts in raw.X (same genes as var)
                raw = _read_matrix(f["raw"]["X"])
                if raw is not None and raw.shape[1] == len(var):
                    layers["raw.X"] = raw
            adata = ad.AnnData(X=X, obs=obs, var=var, uns=uns, layers=layers)
        except (OSError, KeyError) as err:
            raise _unreadable(path, err, key) from None
        yield adata


def read_obs(path: str | os.PathLike, *, key: str | None = None) -> pd.DataFrame:
    """The obs table of an .h5ad, reading nothing else (unreadable file: one-line InputError, see `open_h5`)."""
    with open_h5(path, key=key) as f:
        try:
            return read_elem(f["obs"])
        except (OSError, KeyError) as err:
            raise _unreadable(path, err, key) from None


def _empty_csr_group(parent: h5py.Group, name: str, n_vars: int, *, dtype: np.dtype, compression: str | None) -> CSRDataset:
    """A resizable, empty CSR group in anndata's encoding (64-bit indptr, so > 2^31 non-zeros fit)."""
    g = parent.create_group(name)
    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": np.array([0, n_vars])})
    kw = dict(maxshape=(None,), chunks=(H5_CHUNK,), compression=compression)
    g.create_dataset("data", shape=(0,), dtype=dtype, **kw)
    g.create_dataset("indices", shape=(0,), dtype=np.int32, **kw)
    g.create_dataset("indptr", data=np.zeros(1, dtype=np.int64), **kw)
    return sparse_dataset(g)


def write_h5ad_streamed(
    path: str | os.PathLike,
    obs: pd.DataFrame | Callable[[], pd.DataFrame],
    var: pd.DataFrame,
    blocks: Iterable[Mapping[str, sp.csr_matrix]],
    *,
    keys: Sequence[str] = ("X",),
    uns: Mapping | None = None,
    compression: str | None = "gzip",
) -> None:
    """Write an .h5ad atomically whose matrices arrive as CSR row blocks, so memory holds one block at a time.

    Each block maps every name in `keys` ("X", "raw.X" for CELLxGENE's raw counts over the same genes, or a layer
    name) to the next rows of that matrix; obs/var/uns are written by anndata (same encodings as
    `AnnData.write_h5ad`, strings as categoricals). `obs` may be a callable returning the obs table once every block
    has been produced (a generator that learns each cell's annotation as it makes the cell).
    """
    from anndata.io import write_elem

    from fmextract.io import atomic_path

    late = callable(obs)
    with atomic_path(path) as tmp:
        ad.AnnData(obs=None if late else obs, var=var, uns=dict(uns or {})).write_h5ad(tmp, compression=compression)
        with h5py.File(tmp, "r+") as f:
            targets: dict[str, CSRDataset] = {}

            def target(key: str, dtype: np.dtype) -> CSRDataset:
                if key == "X":
                    parent, name = f, "X"
                elif key == "raw.X":
                    parent, name = f.require_group("raw"), "X"
                    parent.attrs.update({"encoding-type": "raw", "encoding-version": "0.1.0"})
                    write_elem(parent, "var", var)
                    write_elem(parent, "varm", {})
                else:
                    parent, name = f.require_group("layers"), key
                return _empty_csr_group(parent, name, var.shape[0], dtype=dtype, compression=compression)

            rows = 0
            for block in blocks:
                n = None
                for key in keys:
                    m = sp.csr_matrix(block[key])
                    if key not in targets:
                        targets[key] = target(key, m.dtype)
                    if n is not None and m.shape[0] != n:
                        raise ValueError(f"block matrices disagree on rows: {key} has {m.shape[0]}, expected {n}")
                    n = m.shape[0]
                    targets[key].append(m)
                rows += n or 0
            for key in keys:
                if key not in targets:
                    target(key, np.dtype(np.float32))
            if late:
                obs = obs()
                del f["obs"]
                write_elem(f, "obs", obs, dataset_kwargs={"compression": compression} if compression else {})
            if rows != obs.shape[0]:
                raise ValueError(f"streamed {rows} rows for {obs.shape[0]} obs rows")
