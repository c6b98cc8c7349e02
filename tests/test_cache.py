"""Per-cell caches: the file format, and a cell's frozen embedding identical whichever split or batch reads it."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from fmextract import cache, methods
from fmextract.chunks import open_backed
from fmextract.errors import InputError
from fmextract.models.scgpt import build_demo_model, embed_cells, embed_to_cache

torch.set_num_threads(1)


def test_write_and_read_rows_by_name_in_any_order(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 7)).astype(np.float32)
    names = [f"c{i}" for i in range(1000)]
    path = tmp_path / "c.h5"
    cache.write(path, names, (X[i : i + 300] for i in range(0, 1000, 300)), d=7, attrs={"kind": "test"})
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]  # written atomically, no leftovers
    asked = ["c999", "c5", "c0", "c412", "c5"]
    expected = X[[999, 5, 0, 412, 5]]
    np.testing.assert_array_equal(cache.read_rows(path, asked), expected)
    np.testing.assert_array_equal(cache.read_rows(path, asked, block_rows=64), expected)
    assert cache.read_rows(path, []).shape == (0, 7)
    assert list(cache.obs_names(path)) == names and cache.attrs(path) == {"kind": "test"}
    with h5py.File(path) as f:
        assert f["X"].dtype == np.float32 and f["X"].chunks is not None


def test_missing_cells_incomplete_or_non_finite_writes_and_foreign_files(tmp_path):
    path = tmp_path / "c.h5"
    cache.write(path, ["a", "b"], np.ones((2, 3), dtype=np.float32))
    with pytest.raises(InputError, match="1 of 2 cells are not in the cache"):
        cache.read_rows(path, ["a", "zz"])
    with pytest.raises(InputError, match="1 rows written for 2 cells"):
        cache.write(tmp_path / "short.h5", ["a", "b"], [np.ones((1, 3))], d=3)
    with pytest.raises(InputError, match="non-finite"):
        cache.write(tmp_path / "nan.h5", ["a"], np.full((1, 3), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="not unique"):
        cache.write(tmp_path / "dup.h5", ["a", "a"], np.ones((2, 3), dtype=np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]  # failed writes leave nothing behind
    with pytest.raises(InputError, match="cache not found"):
        cache.read_rows(tmp_path / "nope.h5", ["a"])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["X"] = np.ones((1, 1))
    with pytest.raises(InputError, match="not an fmextract cache"):
        cache.read_rows(tmp_path / "other.h5", ["a"])


def panel_file(path, n_donors: int = 5, cells: int = 24, n_genes: int = 12, seed: int = 0) -> ad.AnnData:
    """A small prepared-style panel on disk: counts in layers['counts'], donors, labels."""
    rng = np.random.default_rng(seed)
    n = n_donors * cells
    counts = rng.poisson(rng.uniform(0.2, 6.0, size=(n, n_genes))).astype(np.float32)
    counts[:, 0] += 1
    obs = pd.DataFrame({"donor": np.repeat([f"D{i}" for i in range(n_donors)], cells),
                        "tissue": rng.choice(["blood", "bone_marrow"], n),
                        "stage": rng.choice(["hsc", "naive_b", "classical_monocyte"], n)},
                       index=[f"cell{i:04d}" for i in range(n)])
    X = sp.csr_matrix(np.log1p(counts))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"GENE{i}" for i in range(n_genes)]),
                       layers={"counts": sp.csr_matrix(counts)})
    adata.write_h5ad(path)
    return adata


def test_a_cells_frozen_embedding_is_identical_whichever_split_or_batch_reads_it(tmp_path):
    """The embed_cells rule's path (backed panel -> embed_to_cache) then mlp_probe's reads in two splits."""
    genes = [f"GENE{i}" for i in range(12)]
    model, _, _ = build_demo_model(genes, d_model=16, nhead=2, d_hid=16, nlayers=3, seed=0)
    memory = panel_file(tmp_path / "panel.h5ad")
    with open_backed(tmp_path / "panel.h5ad") as panel:
        embed_to_cache(model, panel, tmp_path / "emb.h5", seed=0, batch_size=7, progress=False)
    table = pd.DataFrame([("s0", d, "test" if d == "D0" else "train") for d in ("D0", "D1", "D2", "D3", "D4")]
                         + [("s1", d, "test" if d == "D1" else "train") for d in ("D0", "D1", "D2", "D3", "D4")],
                         columns=["split", "donor", "role"])
    read = {}
    with open_backed(tmp_path / "panel.h5ad") as panel:
        for split in ("s0", "s1"):
            train, test, _ = methods.split_views(panel, table, split, max_train_cells=10**6, seed=0, expression=False)
            assert train.X is None and not train.layers  # a cache-only method reads no expression
            for view in (train, test):
                read[split, view is test] = pd.DataFrame(cache.read_rows(tmp_path / "emb.h5", view.obs_names),
                                                         index=view.obs_names)
    d2 = memory.obs_names[memory.obs["donor"] == "D2"]  # a training cell of both splits
    pd.testing.assert_frame_equal(read["s0", False].loc[d2], read["s1", False].loc[d2], check_exact=True)
    d1 = memory.obs_names[memory.obs["donor"] == "D1"]  # training in s0, test in s1
    pd.testing.assert_frame_equal(read["s0", False].loc[d1], read["s1", True].loc[d1], check_exact=True)
    # the cached rows are what embedding those cells alone, in another batch layout, gives
    alone = embed_cells(model, memory[d1], pooling="avg", batch_size=5, seed=0, cell_ids=list(d1), progress=False)
    np.testing.assert_allclose(read["s1", True].loc[d1].to_numpy(), alone, rtol=0, atol=1e-6)
