"""The method contract: split views (in memory and backed, with and without expression), parameters by role, BH
families, pseudotime supervision, 3-tuple embeddings."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import toy_counts_panel
from fmextract import methods
from fmextract.chunks import open_backed
from fmextract.errors import InputError
from fmextract.methods import check_output, method_family, parameter_rows, pseudotime_supervision, split_views
from test_cache import panel_file


def panel():
    a = toy_counts_panel()
    a.obs["donor"] = a.obs["donor_id"].astype(str)
    return a


def table(test_donor: str) -> pd.DataFrame:
    rows = [("split000", d, "test" if d == test_donor else "train", "all_method") for d in ("D0", "D1", "D2", test_donor)]
    return pd.DataFrame(rows, columns=["split", "donor", "role", "block"]).drop_duplicates()


def test_split_views_hide_test_labels():
    train, test, truth = split_views(panel(), table("D3"), "split000", max_train_cells=1000, seed=0)
    assert set(test.obs["donor"]) == {"D3"} and list(test.obs.columns) == ["donor", "tissue"]
    assert "cell_type" in truth and set(train.obs["donor"]) == {"D0", "D1", "D2"}


def test_a_split_without_test_cells_is_one_line():
    with pytest.raises(InputError, match=r"split 'split000': 0 test cells \(its test donors \['D9'\] have no cells"):
        split_views(panel(), table("D9"), "split000", max_train_cells=1000, seed=0)


def cells(n: int) -> ad.AnnData:
    return ad.AnnData(X=np.zeros((n, 3), np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))


def test_embedding_may_report_its_own_parameters():
    train, test = cells(4), cells(2)
    z = (np.zeros((4, 2)), np.zeros((2, 2)))
    assert check_output("embedding", z, train, test, "m")["n_parameters"] == {}
    checked = check_output("embedding", (*z, {"network": 120}), train, test, "m")
    assert checked["n_parameters"] == {"network": 120}
    with pytest.raises(InputError, match="n_parameters"):
        check_output("embedding", (*z, {"network": 1.5}), train, test, "m")


def test_parameter_rows_separate_adaptor_embedding_and_readouts():
    rows = parameter_rows("embedding", {"n_parameters": {"scvi_network": 4000}}, {"branch": 77, "depth": 11},
                          {"adaptor": 2400})
    table = pd.DataFrame(rows)
    assert table.set_index("component")["role"].to_dict() == {
        "adaptor": "adaptor", "scvi_network": "embedding", "branch": "readout", "depth": "readout"}
    assert table.set_index("component")["fitted"].to_dict()["adaptor"] == "once"
    assert (table.loc[table["role"] != "adaptor", "fitted"] == "per_split").all()
    classifier = pd.DataFrame(parameter_rows("classifier", {}, {"mlp": 500}, {}))
    assert classifier.to_dict("records") == [{"component": "mlp", "role": "readout", "fitted": "per_split",
                                              "n_parameters": 500}]


def test_families_and_pseudotime_supervision():
    assert method_family("raw", {"kind": "embedding"}) == "paper"
    assert method_family("control_untrained", {"kind": "embedding"}) == "controls"
    assert method_family("extracted_top1", {"kind": "embedding"}) == "extracted_variants"
    assert method_family("raw_mlp", {"kind": "classifier", "family": "control"}) == "controls"
    assert pseudotime_supervision({"kind": "pseudotime"}) == "unsupervised"
    assert pseudotime_supervision({"kind": "embedding"}) == "supervised"
    assert pseudotime_supervision({"kind": "pseudotime", "pseudotime": "supervised"}) == "supervised"


@pytest.fixture
def split_table():
    donors = [f"D{i}" for i in range(5)]
    return pd.DataFrame([("s0", d, "test" if d in ("D1", "D3") else "train") for d in donors],
                        columns=["split", "donor", "role"])


@pytest.mark.parametrize("cap", [10**6, 50])
def test_backed_split_equals_in_memory_split(tmp_path, split_table, cap):
    memory = panel_file(tmp_path / "panel.h5ad")
    expected = methods.split_views(memory, split_table, "s0", max_train_cells=cap, seed=3)
    with open_backed(tmp_path / "panel.h5ad") as panel:
        got = methods.split_views(panel, split_table, "s0", max_train_cells=cap, seed=3)
    for e, g in zip(expected[:2], got[:2]):
        assert list(g.obs_names) == list(e.obs_names) and list(g.var_names) == list(e.var_names)
        assert (g.X != e.X).nnz == 0 and (g.layers["counts"] != e.layers["counts"]).nnz == 0
        pd.testing.assert_frame_equal(g.obs, e.obs, check_categorical=False)
    pd.testing.assert_frame_equal(got[2], expected[2], check_categorical=False)
    assert list(got[1].obs.columns) == list(methods.VISIBLE_TEST_OBS)  # labels hidden from test cells
    assert got[0].n_obs == min(cap, 72)


def test_expression_false_reads_obs_only(tmp_path, split_table):
    panel_file(tmp_path / "panel.h5ad")
    with open_backed(tmp_path / "panel.h5ad") as panel:
        train, test, truth = methods.split_views(panel, split_table, "s0", max_train_cells=10**6, seed=0,
                                                 expression=False)
    assert train.X is None and test.X is None and not train.layers and train.n_vars == 12
    assert set(test.obs["donor"]) == {"D1", "D3"} and "stage" in truth.columns and "stage" in train.obs.columns


def test_cache_only_method_files_declare_it(root):
    for name in ("extracted", "mlp_probe"):
        module = methods.load_method(root / "workflow" / "methods" / f"{name}.py", "embedding" if name == "extracted"
                                     else "classifier")
        assert methods.reads_expression(module) is False
    assert methods.reads_expression(methods.load_method(root / "workflow" / "methods" / "pca.py", "embedding"))
