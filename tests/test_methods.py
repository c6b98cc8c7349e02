"""split_views: a backed panel gives the same split as an in-memory one; cache-only methods read no expression."""

from __future__ import annotations

import pandas as pd
import pytest

from fmextract import methods
from fmextract.chunks import open_backed

from test_cache import panel_file


@pytest.fixture
def table():
    donors = [f"D{i}" for i in range(5)]
    return pd.DataFrame([("s0", d, "test" if d in ("D1", "D3") else "train") for d in donors],
                        columns=["split", "donor", "role"])


@pytest.mark.parametrize("cap", [10**6, 50])
def test_backed_split_equals_in_memory_split(tmp_path, table, cap):
    memory = panel_file(tmp_path / "panel.h5ad")
    expected = methods.split_views(memory, table, "s0", max_train_cells=cap, seed=3)
    with open_backed(tmp_path / "panel.h5ad") as panel:
        got = methods.split_views(panel, table, "s0", max_train_cells=cap, seed=3)
    for e, g in zip(expected[:2], got[:2]):
        assert list(g.obs_names) == list(e.obs_names) and list(g.var_names) == list(e.var_names)
        assert (g.X != e.X).nnz == 0 and (g.layers["counts"] != e.layers["counts"]).nnz == 0
        pd.testing.assert_frame_equal(g.obs, e.obs, check_categorical=False)
    pd.testing.assert_frame_equal(got[2], expected[2], check_categorical=False)
    assert list(got[1].obs.columns) == list(methods.VISIBLE_TEST_OBS)  # labels hidden from test cells
    assert got[0].n_obs == min(cap, 72)


def test_expression_false_reads_obs_only(tmp_path, table):
    panel_file(tmp_path / "panel.h5ad")
    with open_backed(tmp_path / "panel.h5ad") as panel:
        train, test, truth = methods.split_views(panel, table, "s0", max_train_cells=10**6, seed=0, expression=False)
    assert train.X is None and test.X is None and not train.layers and train.n_vars == 12
    assert set(test.obs["donor"]) == {"D1", "D3"} and "stage" in truth.columns and "stage" in train.obs.columns


def test_cache_only_method_files_declare_it(root):
    for name in ("extracted", "mlp_probe"):
        module = methods.load_method(root / "workflow" / "methods" / f"{name}.py", "embedding" if name == "extracted"
                                     else "classifier")
        assert methods.reads_expression(module) is False
    assert methods.reads_expression(methods.load_method(root / "workflow" / "methods" / "pca.py", "embedding"))
