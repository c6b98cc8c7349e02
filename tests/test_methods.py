"""The method contract's bookkeeping: parameters by role, BH families, pseudotime supervision, 3-tuple embeddings."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from fmextract.errors import InputError
from fmextract.methods import check_output, method_family, parameter_rows, pseudotime_supervision


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
