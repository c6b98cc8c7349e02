"""CELLxGENE-layout stand-ins: the layout, the labels and ids, the compartments, assays, donors and genes."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from fmextract.errors import InputError
from fmextract.standin import N_IMMUNE_MISSING, OTHER_TYPES, TS_TISSUES, TS_V2_DONORS, TS_V2_LABELS, write_standin
from fmextract.stages import load_label_table


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("standin")
    write_standin("reference", out / "ts.h5ad", n_cells=2500, n_genes=520, seed=3)
    write_standin("immune", out / "imm.h5ad", n_cells=600, n_genes=480, seed=3)
    write_standin("reference", out / "ts_small_blocks.h5ad", n_cells=300, n_genes=460, seed=3, max_block=7,
                  decontx=False)
    write_standin("reference", out / "ts_v2.h5ad", n_cells=3000, n_genes=460, seed=3, labels="ts_v2")
    return out


def test_ts_v2_labels_follow_the_atlas(files, root):
    """labels=ts_v2: Tabula Sapiens v2's donors per immune tissue, and its label frequencies per tissue."""
    obs = ad.read_h5ad(files / "ts_v2.h5ad", backed="r").obs
    assert len(obs) == 3000
    for tissue, donors in TS_V2_DONORS.items():
        assert set(obs.loc[obs["tissue"] == tissue, "donor_id"].astype(str)) == set(donors), tissue
    sizes = obs.groupby("donor_id", observed=True).size()
    assert sizes["TSP14"] > 10 * sizes["TSP13"]  # cells per donor in proportion to the atlas's
    immune = obs[obs["compartment"] == "immune"]
    top = immune["cell_type"].value_counts()
    assert list(top.index[:1]) == ["B cell"] and {"CD4-positive, alpha-beta T cell", "CD8-positive, alpha-beta T cell",
                                                  "neutrophil"} <= set(top.index[:5])
    lymph = immune[immune["tissue"] == "lymph node"]["cell_type"].value_counts(normalize=True)
    expected = pd.Series(TS_V2_LABELS["lymph node"], dtype=float)
    expected /= expected.sum()
    assert abs(lymph["B cell"] - expected["B cell"]) < 0.1 and abs(lymph.get("T cell", 0) - expected["T cell"]) < 0.03
    thymus = set(immune.loc[immune["tissue"] == "thymus", "cell_type"])
    assert {"CD4-positive, alpha-beta thymocyte", "double-positive, alpha-beta thymocyte"} <= thymus
    table = load_label_table(root / "resources" / "hematopoiesis_stages.tsv").set_index("label")
    pairs = immune[["cell_type", "cell_type_ontology_term_id"]].astype(str).drop_duplicates()
    known = pairs["cell_type"].isin(table.index)
    assert (pairs.loc[known, "cell_type_ontology_term_id"].to_numpy()
            == table.loc[pairs.loc[known, "cell_type"], "ontology_id"].to_numpy()).all()
    assert set(pairs.loc[~known, "cell_type"]) <= {"leukocyte", "hematopoietic cell", "myeloid leukocyte"}
    with pytest.raises(InputError, match="labels 'ts_v2' is unknown for immune"):
        write_standin("immune", files / "x.h5ad", n_cells=10, n_genes=480, labels="ts_v2")


def test_reference_layout_is_cellxgene(files, root):
    a = ad.read_h5ad(files / "ts.h5ad")
    assert a.shape == (2500, 520) and a.var_names.str.match(r"^ENSG\d{11}$").all() and a.var_names.is_unique
    assert a.var["feature_name"].astype(str).str.len().gt(0).all()
    assert a.X.dtype == np.float32 and a.raw.X.dtype == np.float32 and a.raw.n_vars == a.n_vars
    counts = a.raw.X
    assert np.array_equal(counts.data, np.round(counts.data)) and counts.data.min() > 0
    np.testing.assert_allclose(np.expm1(a.X[:50].toarray()).sum(axis=1), 1e4, rtol=1e-3)  # X = log1p CP10k
    assert not np.array_equal(a.layers["decontXcounts"].data, np.round(a.layers["decontXcounts"].data))
    for col in ("donor_id", "cell_type", "cell_type_ontology_term_id", "tissue", "tissue_in_publication",
                "compartment", "broad_cell_class", "free_annotation", "assay", "method", "development_stage", "sex"):
        assert a.obs[col].dtype == "category", col
    assert "10x 5' v2" in a.obs["assay"].cat.categories and (a.obs["assay"] == "10x 5' v2").sum() == 0  # unused kept
    assert set(a.obs["assay"]) == {"10x 3' v3", "Smart-seq2"}
    assert a.obs["donor_id"].nunique() == 21 and a.obs["tissue"].nunique() == len(TS_TISSUES) == 27
    assert set(a.obs.loc[a.obs["donor_id"] == "TSP21", "compartment"]) <= {"epithelial", "endothelial", "stromal"}
    vocab = json.loads((root / "resources" / "demo_model" / "vocab.json").read_text())
    in_vocab = a.var["feature_name"].astype(str).isin(list(vocab))
    assert 0.5 < in_vocab.mean() < 1


def test_labels_carry_their_cell_ontology_ids_coarse_and_non_hematopoietic(files, root):
    obs = ad.read_h5ad(files / "ts.h5ad", backed="r").obs
    table = load_label_table(root / "resources" / "hematopoiesis_stages.tsv").set_index("label")
    pairs = obs[["cell_type", "cell_type_ontology_term_id"]].astype(str).drop_duplicates()
    other = pairs["cell_type"].isin(list(OTHER_TYPES))
    assert (pairs.loc[~other, "cell_type_ontology_term_id"].to_numpy()
            == table.loc[pairs.loc[~other, "cell_type"], "ontology_id"].to_numpy()).all()
    assert {"epithelial cell", "endothelial cell", "fibroblast"} <= set(pairs.loc[other, "cell_type"])
    coarse = table.index[table["stage"].isna() | table["pools"].ne("")]  # branch only, or a lineage stage
    assert len(set(obs["cell_type"]) & set(coarse)) >= 5  # e.g. T cell, B cell, monocyte, dendritic cell
    ss2 = (obs["assay"] == "Smart-seq2").to_numpy()
    counts = ad.read_h5ad(files / "ts.h5ad").raw.X
    library = np.asarray(counts.sum(axis=1)).ravel()
    assert np.median(library[ss2]) > 5 * np.median(library[~ss2])  # read counts: another scale


def test_immune_panel_and_bounded_blocks(files):
    imm = ad.read_h5ad(files / "imm.h5ad")
    assert imm.n_vars == 480 and imm.obs["donor_id"].nunique() == 12 and imm.obs["assay"].astype(str).str.startswith("10x").all()
    assert (imm.obs["cell_type"].astype(str).isin(list(OTHER_TYPES))).sum() == 0 and imm.raw is not None
    ts = ad.read_h5ad(files / "ts.h5ad", backed="r")
    sim = lambda a: set(a.var["feature_name"].astype(str)) - {g for *_, gs in OTHER_TYPES.values() for g in gs}
    assert len({g for g in sim(ts) if not g.startswith("ENSG")} - sim(imm)) == N_IMMUNE_MISSING
    small = ad.read_h5ad(files / "ts_small_blocks.h5ad")
    assert small.n_obs == 300 and "decontXcounts" not in small.layers and small.obs_names.is_unique


def test_seeded(files, tmp_path):
    write_standin("immune", tmp_path / "again.h5ad", n_cells=600, n_genes=480, seed=3)
    a, b = ad.read_h5ad(files / "imm.h5ad"), ad.read_h5ad(tmp_path / "again.h5ad")
    assert a.obs.equals(b.obs) and (a.raw.X != b.raw.X).nnz == 0 and a.var.equals(b.var)
