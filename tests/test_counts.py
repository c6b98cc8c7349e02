"""Where raw counts are found (layer, raw.X, integer X), their check, and the one normalisation."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmextract.chunks import open_backed
from fmextract.counts import counts_matrix, counts_source, log_cp10k
from fmextract.errors import InputError


def cellxgene(counts: sp.csr_matrix, *, raw: bool = True) -> ad.AnnData:
    """CELLxGENE layout: normalised float32 X, float32 integer counts in raw.X, Ensembl var_names."""
    var = pd.DataFrame({"feature_name": [f"G{i}" for i in range(counts.shape[1])]},
                       index=[f"ENSG{i:011d}" for i in range(counts.shape[1])])
    a = ad.AnnData(X=sp.csr_matrix(log_cp10k(counts), dtype=np.float32), var=var)
    if raw:
        a.raw = ad.AnnData(X=counts, var=var)
    return a


@pytest.fixture
def counts():
    m = sp.random(30, 12, density=0.4, random_state=1, format="csr", dtype=np.float32)
    m.data = np.ceil(m.data * 20).astype(np.float32)  # float-typed integer counts, as CELLxGENE ships them
    return m


def test_raw_x_is_found_automatically_when_x_is_normalised(counts, tmp_path):
    a = cellxgene(counts)
    m, where = counts_source(a, None, source="f")
    assert where == "raw.X" and abs(sp.csr_matrix(m) - counts).max() == 0
    assert counts_source(a, "raw.X", source="f")[1] == "raw.X"
    a.write_h5ad(tmp_path / "f.h5ad")
    with open_backed(tmp_path / "f.h5ad") as backed:  # on disk: raw/X read lazily, same answer
        m, where = counts_source(backed, None, source="f")
        assert where == "raw.X" and abs(counts_matrix(backed, layer=None, source="f") - counts).max() == 0


def test_lookup_order_counts_layer_then_integer_x(counts):
    a = cellxgene(counts)
    a.layers["counts"] = counts.copy()
    assert counts_source(a, None, source="f")[1] == "layers['counts']"
    b = ad.AnnData(X=counts.copy())
    assert counts_source(b, None, source="f")[1] == "X"


def test_missing_sources_name_the_setting(counts):
    a = cellxgene(counts, raw=False)
    with pytest.raises(InputError, match=r"f: --counts-layer=raw.X but the file has no raw.X .*set --counts-layer"):
        counts_source(a, "raw.X", source="f", key="--counts-layer")
    with pytest.raises(InputError, match=r"f: layer 'umi' not found \(count sources: none, or X\); set cfg.counts_layer"):
        counts_source(a, "umi", source="f", key="cfg.counts_layer")
    with pytest.raises(InputError, match=r"f: X holds non-integer or negative values.*raw.X for CELLxGENE"):
        counts_matrix(a, layer=None, source="f")  # normalised X, no raw.X: the value check names X


def test_raw_with_other_genes_is_an_error(counts):
    a = cellxgene(counts)
    a.raw = ad.AnnData(X=sp.hstack([counts, counts], format="csr"))
    with pytest.raises(InputError, match=r"raw.X has 24 genes but var has 12"):
        counts_source(a, None, source="f")


def test_log_cp10k_of_an_empty_block_is_empty():
    """A chunk whose cells were all filtered out (seen at atlas scale in prepare) normalises to an empty block."""
    out = log_cp10k(sp.csr_matrix((0, 5), dtype=np.float32))
    assert sp.issparse(out) and out.shape == (0, 5) and out.dtype == np.float32
