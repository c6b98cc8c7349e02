"""Atomic writes: all or nothing, and the finished file has the permissions a plain open() gives under the umask."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from fmextract.io import atomic_path, read_tsv, write_json, write_tsv


@pytest.fixture(params=[0o022, 0o027, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_permissions_of_a_plain_open(tmp_path, umask):
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    expected = mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~umask
    write_tsv(pd.DataFrame({"a": [1]}), tmp_path / "table.tsv")
    write_json({"a": 1}, tmp_path / "info.json")
    with atomic_path(tmp_path / "raw.bin") as tmp:  # a writer that replaces the temporary file (as h5py may)
        os.remove(tmp)
        with open(tmp, "wb") as fh:
            fh.write(b"\0")
    for name in ("table.tsv", "info.json", "raw.bin"):
        assert mode(tmp_path / name) == expected, name


def test_h5ad_outputs_too(tmp_path, counts_panel):
    from fmextract.data import write_h5ad

    old = os.umask(0o022)
    try:
        write_h5ad(counts_panel, tmp_path / "panel.h5ad")
        assert mode(tmp_path / "panel.h5ad") == 0o644
    finally:
        os.umask(old)


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.tsv"
    write_tsv(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("interrupted")
    assert read_tsv(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


def test_an_overwritten_file_keeps_its_mode(tmp_path):
    target = tmp_path / "private.tsv"
    write_tsv(pd.DataFrame({"a": [1]}), target)
    os.chmod(target, 0o600)
    write_tsv(pd.DataFrame({"a": [2]}), target)
    assert mode(target) == 0o600 and read_tsv(target)["a"].tolist() == [2]
