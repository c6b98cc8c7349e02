"""Atomic writes of result files, so an interrupted run never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_tsv(df: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> None:
    """Write a tab-separated table atomically, floats with full precision."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=index, float_format="%.10g")


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write JSON atomically (sorted keys, so identical content gives identical bytes)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")


def read_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a tab-separated table written by `write_tsv`."""
    return pd.read_csv(path, sep="\t")
