"""Per-cell caches computed once and read by every split: frozen model embeddings and frozen latents.

One format for both: an HDF5 file with `X` (cells x d float32, chunked by rows) and `obs_names` (the panel's cells in
the panel's row order), plus provenance attributes. `write` streams row blocks in (memory: one block) and renames
the file into place only when complete; `read_rows` returns the rows of the cells a split asks for, by obs name, in
the order asked, reading the file block by block.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np
import pandas as pd

from fmextract.errors import InputError
from fmextract.io import atomic_path

FORMAT = "fmextract-cache/1"
#: Rows per HDF5 chunk and per read block: 4,096 cells x 512 float32 is 8 MiB.
CHUNK_ROWS = 4096


class Writer:
    """Row-slice target of a cache being written (`out[start:stop] = rows`), e.g. for a model's `embed_to_cache`."""

    def __init__(self, dataset: h5py.Dataset):
        self._dataset = dataset
        self.shape = dataset.shape
        self.rows_written = 0

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32)
        if not np.isfinite(values).all():
            raise InputError(f"cache rows {rows.start}:{rows.stop} hold non-finite values; the model or map is broken")
        self._dataset[rows] = values
        self.rows_written += len(values)


@contextmanager
def open_writer(path: str | os.PathLike, obs_names: Sequence[str], d: int, *,
                attrs: Mapping | None = None) -> Iterator[Writer]:
    """`with open_writer(path, obs_names, d) as out: out[a:b] = rows`: the file appears at `path` only once every
    row has been written (atomic rename), so an interrupted job leaves no partial cache behind."""
    names = pd.Index(obs_names).astype(str)
    if not names.is_unique:
        raise InputError(f"{path}: obs_names are not unique; make them unique in the prepared panel")
    n = len(names)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["attrs"] = json.dumps(dict(attrs or {}), sort_keys=True)
        f.create_dataset("obs_names", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype())
        chunks = (min(n, CHUNK_ROWS), d) if n and d else None
        writer = Writer(f.create_dataset("X", shape=(n, d), dtype=np.float32, chunks=chunks))
        yield writer
        if writer.rows_written != n:
            raise InputError(f"{path}: {writer.rows_written} rows written for {n} cells; the cache is incomplete")


def write(path: str | os.PathLike, obs_names: Sequence[str], rows: np.ndarray | Iterable[np.ndarray], *,
          d: int | None = None, attrs: Mapping | None = None) -> None:
    """Write a cache from a cells x d array, or from consecutive row blocks of width `d`, atomically."""
    if isinstance(rows, np.ndarray):
        d, rows = rows.shape[1], [rows]
    if d is None:
        raise InputError(f"{path}: give the row width d when writing a cache from row blocks")
    with open_writer(path, obs_names, d, attrs=attrs) as out:
        start = 0
        for block in rows:
            out[start : start + len(block)] = block
            start += len(block)


def _open(path: str | os.PathLike) -> h5py.File:
    """An existing cache file, or a one-line InputError naming the rule that makes it."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(f"{path}: cache not found; build it with its rule (embed_cells or frozen_latent)") from None
    except OSError as err:
        raise InputError(f"{path}: not a readable cache ({err}); delete it and rerun its rule") from None
    if f.attrs.get("format") != FORMAT or "X" not in f or "obs_names" not in f:
        f.close()
        raise InputError(f"{path}: not an fmextract cache (format {FORMAT}); delete it and rerun its rule")
    return f


def obs_names(path: str | os.PathLike) -> pd.Index:
    """The cells of a cache, in row order."""
    with _open(path) as f:
        return pd.Index(f["obs_names"].asstr()[:])


def attrs(path: str | os.PathLike) -> dict:
    """Provenance attributes stored with a cache (model checksum, map, precision...)."""
    with _open(path) as f:
        return json.loads(f.attrs["attrs"])


def read_rows(path: str | os.PathLike, cells: Sequence[str], *, block_rows: int = 16 * CHUNK_ROWS) -> np.ndarray:
    """Rows of `cells` (obs names), in that order, as float32 cells x d; only blocks holding asked cells are read.

    A cell absent from the cache raises InputError (the cache was built from another panel: rebuild it).
    """
    with _open(path) as f:
        names = pd.Index(f["obs_names"].asstr()[:])
        pos = names.get_indexer(pd.Index(cells).astype(str))
        if (pos < 0).any():
            missing = [c for c, p in zip(cells, pos) if p < 0]
            raise InputError(f"{path}: {len(missing)} of {len(pos)} cells are not in the cache (e.g. {missing[:3]}); "
                             "it was built from another panel: delete it and rerun its rule")
        X = f["X"]
        out = np.empty((len(pos), X.shape[1]), dtype=np.float32)
        order = np.argsort(pos, kind="stable")
        sorted_pos = pos[order]
        for start in range(0, X.shape[0], block_rows):
            lo, hi = np.searchsorted(sorted_pos, [start, start + block_rows])
            if hi > lo:
                block = X[start : min(start + block_rows, X.shape[0])]
                out[order[lo:hi]] = block[sorted_pos[lo:hi] - start]
        return out
