"""Atomic writes of result files, so an interrupted run never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the process umask leaves it: what a plain open() would create (0o644 under the usual umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file is private while it is written (mkstemp: 0600); before the rename it gets the permissions a
    plain open() would give: an existing file's own mode (overwriting keeps it), else the user's umask, so others in a
    shared results folder can read what the umask allows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.is_file() else umask_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
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
