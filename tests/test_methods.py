"""The method contract: split views, parameters by role, BH families, pseudotime supervision, 3-tuple embeddings."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import toy_counts_panel
from fmextract.errors import InputError
from fmextract.methods import check_output, method_family, parameter_rows, pseudotime_supervision, split_views


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
