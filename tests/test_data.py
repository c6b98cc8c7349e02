"""Data contract: validation errors name the file, key and fix; harmonisation, HVG panel and anchors."""

import numpy as np
import pytest

from fmextract import data
from fmextract.errors import InputError

KEYS = dict(donor_key="donor_id", cell_type_key="cell_type", tissue_key="tissue", counts_layer="counts",
            gene_symbol_column=None)


def validate(adata, **over):
    data.validate_panel(adata, source="panel.h5ad", min_donors=3, **{**KEYS, **over})


def test_valid_panel_passes(counts_panel):
    validate(counts_panel)


def test_missing_donor_column(counts_panel):
    with pytest.raises(InputError, match=r"panel.h5ad: obs column 'donor' not found.*panels.<panel>.donor_key"):
        validate(counts_panel, donor_key="donor")


def test_missing_cell_type_column(counts_panel):
    with pytest.raises(InputError, match=r"obs column 'celltype' not found.*panels.<panel>.cell_type_key"):
        validate(counts_panel, cell_type_key="celltype")


def test_non_integer_counts(counts_panel):
    counts_panel.layers["counts"] = counts_panel.layers["counts"] * 0.5
    with pytest.raises(InputError, match=r"layers\['counts'\] holds non-integer.*counts_layer"):
        validate(counts_panel)


def test_missing_counts_layer(counts_panel):
    with pytest.raises(InputError, match=r"layer 'raw' not found"):
        validate(counts_panel, counts_layer="raw")


def test_too_few_donors(counts_panel):
    small = counts_panel[counts_panel.obs["donor_id"].isin(["D0", "D1"])].copy()
    with pytest.raises(InputError, match=r"2 donor\(s\), fewer than data.min_donors=3"):
        validate(small)


def test_error_messages_are_one_line(counts_panel):
    with pytest.raises(InputError) as err:
        validate(counts_panel, donor_key="nope")
    assert "\n" not in str(err.value)


def test_harmonise_maps_and_drops_unmapped(counts_panel, stage_table):
    counts_panel.obs.loc[counts_panel.obs_names[:5], "cell_type"] = "not a blood cell"
    panel, unmapped = data.harmonise(counts_panel, stage_table, source="p", **KEYS)
    assert panel.n_obs == counts_panel.n_obs - 5
    assert set(data.PREPARED_OBS) <= set(panel.obs.columns)
    assert panel.obs["stage"].notna().all() and panel.obs["depth"].dtype == float
    assert unmapped.to_numpy().ravel().tolist().count(5) == 1
    data.log_normalise(panel)
    np.testing.assert_allclose(np.expm1(panel.X.toarray()).sum(axis=1), 1e4, rtol=1e-4)


def test_gene_panel_uses_reference_donors_only(counts_panel, stage_table):
    panel, _ = data.harmonise(counts_panel, stage_table, source="p", **KEYS)
    vocab = list(panel.var_names)
    a = data.select_gene_panel(panel, reference_donors=["D0", "D1"], n_genes=10, vocab=vocab, min_vocab_overlap=0.5, source="p")
    # changing only a non-reference donor's counts must not change the panel
    other = panel.copy()
    rows = np.flatnonzero(other.obs["donor"] == "D3")
    counts = other.layers["counts"].toarray()
    counts[rows] = np.random.default_rng(1).poisson(30, size=(rows.size, counts.shape[1]))
    import scipy.sparse as sp

    other.layers["counts"] = sp.csr_matrix(counts)
    b = data.select_gene_panel(other, reference_donors=["D0", "D1"], n_genes=10, vocab=vocab, min_vocab_overlap=0.5, source="p")
    assert a == b and len(a) == 10


def test_gene_panel_equals_scanpy_on_the_explicitly_filtered_matrix(counts_panel, stage_table):
    """One copy of the reference counts (vocab columns read chunk-wise, undetected genes kept): same HVGs, same order
    as seurat_v3 on the reference cells' in-vocabulary, detected genes."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    import scipy.sparse as sp

    panel, _ = data.harmonise(counts_panel, stage_table, source="p", **KEYS)
    counts = panel.layers["counts"].toarray()
    ref = panel.obs["donor"].isin(["D0", "D1"]).to_numpy()
    counts[np.ix_(ref, [3, 7])] = 0  # genes never detected in the reference donors
    panel.layers["counts"] = sp.csr_matrix(counts)
    vocab = [g for g in panel.var_names if g not in ("G1", "G2")]
    genes = data.select_gene_panel(panel, reference_donors=["D0", "D1"], n_genes=12, vocab=vocab,
                                   min_vocab_overlap=0.5, source="p")
    keep = panel.var_names.isin(vocab) & (counts[ref].sum(0) > 0)
    expected = ad.AnnData(X=sp.csr_matrix(counts[ref][:, keep]), var=pd.DataFrame(index=panel.var_names[keep]))
    hvg = sc.pp.highly_variable_genes(expected, flavor="seurat_v3", n_top_genes=12, inplace=False)
    assert genes == hvg[hvg["highly_variable"]].sort_values("highly_variable_rank").index.tolist()
    assert not {"G1", "G2", "G3", "G7"} & set(genes)


def test_gene_panel_vocab_overlap_error(counts_panel, stage_table):
    panel, _ = data.harmonise(counts_panel, stage_table, source="p", **KEYS)
    with pytest.raises(InputError, match=r"only 10.0% of genes are in the model vocabulary.*feature_name"):
        data.select_gene_panel(panel, reference_donors=["D0"], n_genes=5, vocab=panel.var_names[:4].tolist(),
                               min_vocab_overlap=0.5, source="p")


def test_anchors_are_group_means(counts_panel, stage_table):
    panel, _ = data.harmonise(counts_panel, stage_table, source="p", **KEYS)
    data.log_normalise(panel)
    profiles, meta = data.anchors(panel, min_cells=3)
    assert (meta["n_cells"] >= 3).all()
    row = meta.iloc[0]
    mask = ((panel.obs["donor"] == row["donor"]) & (panel.obs["tissue"] == row["tissue"]) & (panel.obs["stage"] == row["stage"])).to_numpy()
    np.testing.assert_allclose(profiles[0], panel.X[mask].toarray().mean(axis=0), rtol=1e-5)
    assert mask.sum() == row["n_cells"]


def test_backed_prepare_matches_in_memory(tmp_path, stage_table, root):
    """Streamed prepare (backed, small chunks) == validate + harmonise + log_normalise in memory; so are the panel steps."""
    import anndata as ad
    import scipy.sparse as sp

    from fmextract import stages
    from fmextract.features import FeatureMap
    from fmextract.simulate import simulate_panel

    edges = stages.load_stage_graph(root / "resources" / "stage_graph.tsv", stage_table["stage"].unique().tolist())
    programs = stages.load_marker_programs(root / "resources" / "marker_programs.tsv")
    raw = simulate_panel(stage_table, edges, programs, [], donors=["D0", "D1", "D2", "D3"], tissues=["bone_marrow"],
                         stages=None, cells_per_donor=40, n_genes=None, seed=5)
    raw.obs["cell_type"] = raw.obs["cell_type"].astype(str)
    raw.obs.loc[raw.obs_names[:17], "cell_type"] = "not a blood cell"  # the whole first chunk (chunk_size 17)
    raw.write_h5ad(tmp_path / "raw.h5ad")
    keys = {**KEYS, "counts_layer": "counts"}

    validate(raw)
    mem, unmapped_mem = data.harmonise(raw, stage_table, source="p", **keys)
    data.log_normalise(mem)
    unmapped, info = data.prepare_panel(tmp_path / "raw.h5ad", stage_table, tmp_path / "prep.h5ad", source="p",
                                        min_donors=3, chunk_size=17, **keys)
    disk = ad.read_h5ad(tmp_path / "prep.h5ad")
    assert info["n_obs"] == mem.n_obs == raw.n_obs - 17 and info["n_dropped"] == 17
    assert unmapped.equals(unmapped_mem)
    assert (disk.obs_names == mem.obs_names).all() and (disk.var_names == mem.var_names).all()
    assert disk.obs[list(data.PREPARED_OBS)].astype(str).equals(mem.obs[list(data.PREPARED_OBS)].astype(str))
    for a, b in ((disk.X, mem.X), (disk.layers["counts"], mem.layers["counts"])):
        assert sp.issparse(a) and a.format == "csr" and a.dtype == np.float32
        assert abs(a - b).max() == 0

    with data.open_backed(tmp_path / "prep.h5ad") as backed:
        assert not sp.issparse(backed.layers["counts"])  # still on disk
        genes = data.select_gene_panel(backed, reference_donors=["D0", "D1"], n_genes=30, vocab=list(mem.var_names),
                                       min_vocab_overlap=0.5, source="p")
        profiles, meta = data.anchors(backed, min_cells=3)
        aligned, frac = data.align_genes(backed, genes[::-1] + ["NOT_A_GENE"])
        fmap = FeatureMap(genes=list(mem.var_names), kind="heads", matrix=np.random.default_rng(0).random((mem.n_vars, 6), dtype=np.float32))
        F_disk = fmap.transform(backed.X, batch_size=13)
    assert genes == data.select_gene_panel(mem, reference_donors=["D0", "D1"], n_genes=30, vocab=list(mem.var_names),
                                           min_vocab_overlap=0.5, source="p")
    profiles_mem, meta_mem = data.anchors(mem, min_cells=3)
    np.testing.assert_allclose(profiles, profiles_mem, rtol=1e-6)
    assert meta[["donor", "stage", "n_cells"]].astype(str).equals(meta_mem[["donor", "stage", "n_cells"]].astype(str))
    aligned_mem, frac_mem = data.align_genes(mem, genes[::-1] + ["NOT_A_GENE"])
    assert frac == frac_mem and abs(aligned - aligned_mem).max() == 0
    np.testing.assert_allclose(F_disk, fmap.transform(mem.X), rtol=1e-6)
    np.testing.assert_allclose(fmap.transform(mem.X, batch_size=7, then=lambda F: F[:, :2]), F_disk[:, :2], rtol=1e-6)

    data.write_gene_subset(tmp_path / "prep.h5ad", tmp_path / "bench.h5ad", genes, chunk_size=17)
    sub, ref = ad.read_h5ad(tmp_path / "bench.h5ad"), mem[:, genes]
    assert list(sub.var_names) == genes and abs(sub.X - ref.X).max() == 0
    assert abs(sub.layers["counts"] - ref.layers["counts"]).max() == 0


def test_streamed_prepare_rejects_bad_counts_and_leaves_nothing(tmp_path, counts_panel, stage_table):
    counts_panel.layers["counts"] = counts_panel.layers["counts"] * 0.5
    counts_panel.write_h5ad(tmp_path / "raw.h5ad")
    with pytest.raises(InputError, match=r"layers\['counts'\] holds non-integer.*counts_layer"):
        data.prepare_panel(tmp_path / "raw.h5ad", stage_table, tmp_path / "out" / "prep.h5ad", source="p", min_donors=3,
                           chunk_size=16, **KEYS)
    assert list((tmp_path / "out").iterdir()) == []


def test_open_backed_exposes_cellxgene_raw_counts(tmp_path):
    """CELLxGENE files keep normalised X and raw counts in raw.X; counts_layer 'raw.X' reads the latter."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    from fmextract.chunks import open_backed

    counts = sp.random(20, 5, density=0.5, random_state=0, format="csr", dtype=np.float32)
    counts.data = np.ceil(counts.data * 10)
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts.toarray())))
    a.raw = ad.AnnData(X=counts, var=a.var.copy())
    a.write_h5ad(tmp_path / "cxg.h5ad")
    with open_backed(tmp_path / "cxg.h5ad") as backed:
        raw = backed.layers["raw.X"]
        assert np.array_equal(sp.csr_matrix(raw[:, :] if not sp.issparse(raw) else raw).toarray(), counts.toarray())


def test_harmonise_keeps_coarse_labels_without_stage_and_anchors_skip_them(counts_panel, root):
    from fmextract.stages import load_label_table

    table = load_label_table(root / "resources" / "hematopoiesis_stages.tsv")
    counts_panel.obs["cell_type"] = counts_panel.obs["cell_type"].astype(str)
    counts_panel.obs.loc[counts_panel.obs_names[:20], "cell_type"] = "dendritic cell"  # cDC or pDC: a branch only
    panel, unmapped = data.harmonise(counts_panel, table, source="p", **KEYS)
    assert panel.n_obs == counts_panel.n_obs and unmapped.empty
    coarse = (panel.obs["cell_type"] == "dendritic cell").to_numpy()
    assert (panel.obs.loc[coarse, "branch"] == "monocyte_macrophage_dc").all() and panel.obs.loc[coarse, "stage"].isna().all()
    assert panel.obs.loc[coarse, "depth"].isna().all() and panel.obs.loc[~coarse, "stage"].notna().all()
    data.log_normalise(panel)
    _, meta = data.anchors(panel, min_cells=1)
    assert meta["stage"].notna().all() and meta["n_cells"].sum() == (~coarse).sum()


def test_harmonise_maps_by_ontology_id_and_filters_assays(counts_panel, root):
    from fmextract.stages import load_label_table

    table = load_label_table(root / "resources" / "hematopoiesis_stages.tsv")
    obs = counts_panel.obs
    obs["cell_type"] = obs["cell_type"].astype(str)
    obs["cell_type_ontology_term_id"] = "unknown"
    obs.loc[obs_names := counts_panel.obs_names[:10], "cell_type"] = "my own label"
    obs.loc[obs_names, "cell_type_ontology_term_id"] = "CL:0000451"  # dendritic cell: coarse (branch only)
    obs.loc[counts_panel.obs_names[10:15], "cell_type"] = "fibroblast"
    obs["assay"] = "10x 3' v3"
    obs.loc[counts_panel.obs_names[-7:], "assay"] = "Smart-seq2"
    panel, unmapped = data.harmonise(counts_panel, table, source="p", ontology_key="cell_type_ontology_term_id",
                                     assay_key="assay", keep_assays=["10x *"], **KEYS)
    assert panel.n_obs == counts_panel.n_obs - 5 - 7 and (panel.obs["assay"] == "10x 3' v3").all()
    assert (panel.obs.loc[obs_names, "branch"] == "monocyte_macrophage_dc").all()
    assert panel.obs.loc[obs_names, "stage"].isna().all()
    assert unmapped.to_dict("list") == {"label": ["fibroblast"], "ontology_id": ["unknown"], "n_cells": [5]}
    with pytest.raises(InputError, match=r"none of the 120 cells has an assay matching panels.<panel>.keep_assays="
                                         r"\['10x 5\*'\] \(assays found: 10x 3' v3, Smart-seq2\)"):
        data.harmonise(counts_panel, table, source="p", assay_key="assay", keep_assays=["10x 5*"], **KEYS)
    with pytest.raises(InputError, match=r"keep_assays is set but panels.<panel>.assay_key is not"):
        data.harmonise(counts_panel, table, source="p", keep_assays=["10x *"], **KEYS)


def test_keep_tissues_cuts_a_one_tissue_panel(counts_panel, stage_table):
    """keep_tissues keeps the named tissues (the paper's lung panel cut from the whole atlas); a name no cell has stops
    with one line listing the tissues found."""
    tissues = counts_panel.obs["tissue"].astype(str)
    first = sorted(tissues.unique())[0]
    panel, _ = data.harmonise(counts_panel, stage_table, source="p", keep_tissues=[first], **KEYS)
    assert panel.n_obs == int((tissues == first).sum()) and (panel.obs["tissue"] == first).all()
    with pytest.raises(InputError, match=r"no cell has a tissue in panels.<panel>.keep_tissues=\['moon'\]"):
        data.harmonise(counts_panel, stage_table, source="p", keep_tissues=["moon"], **KEYS)


def test_no_mapped_label_is_one_line_with_the_count(counts_panel, stage_table):
    counts_panel.obs["cell_type"] = "epithelial cell"
    with pytest.raises(InputError, match=r"none of the 120 cells has a label in the stage table \(1 distinct labels in "
                                         r"obs\['cell_type'\], e.g. 'epithelial cell'\); set panels.<panel>.cell_type_key"):
        data.harmonise(counts_panel, stage_table, source="p", **KEYS)


def test_require_anchors_names_count_key_and_cause(counts_panel, stage_table):
    panel, _ = data.harmonise(counts_panel, stage_table, source="p", **KEYS)
    data.log_normalise(panel)
    _, meta = data.anchors(panel, min_cells=1000)
    with pytest.raises(InputError, match=r"p: 0 anchor\(s\) over 0 stage\(s\) among the reference donors reach "
                                         r"anchors.min_cells=1000 cells \(largest donor x tissue x stage group: \d+ cells\)"
                                         r".*panel.n_reference_donors") as err:
        data.require_anchors(meta, min_cells=1000, source="p")
    assert "\n" not in str(err.value)
    _, meta = data.anchors(panel, min_cells=1)
    data.require_anchors(meta, min_cells=1, source="p")


def test_prepare_reads_cellxgene_raw_x_and_counts_what_it_drops(tmp_path, counts_panel, root):
    """A CELLxGENE-layout file (normalised X, float32 counts in raw.X, Ensembl var_names) prepares like counts in X."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from fmextract.stages import load_label_table

    table = load_label_table(root / "resources" / "hematopoiesis_stages.tsv")
    counts = sp.csr_matrix(counts_panel.layers["counts"], dtype=np.float32)
    var = pd.DataFrame({"feature_name": counts_panel.var_names}, index=[f"ENSG{i:011d}" for i in range(counts.shape[1])])
    obs = counts_panel.obs.assign(assay="10x 3' v3")
    obs.loc[obs.index[:4], "assay"] = "Smart-seq2"
    cxg = ad.AnnData(X=data.log_cp10k(counts), obs=obs, var=var)
    cxg.raw = ad.AnnData(X=counts, var=var)
    cxg.write_h5ad(tmp_path / "cxg.h5ad")
    keys = {**KEYS, "counts_layer": None, "gene_symbol_column": "feature_name"}
    unmapped, info = data.prepare_panel(tmp_path / "cxg.h5ad", table, tmp_path / "prep.h5ad", source="p", min_donors=3,
                                        assay_key="assay", keep_assays=["10x *"], **keys)
    assert info["counts_source"] == "raw.X" and info["n_dropped_assay"] == 4 and info["n_obs"] == counts.shape[0] - 4
    prepared = ad.read_h5ad(tmp_path / "prep.h5ad")
    assert list(prepared.var_names) == list(counts_panel.var_names)
    assert abs(prepared.layers["counts"] - counts[4:]).max() == 0
    no_raw = ad.AnnData(X=data.log_cp10k(counts), obs=obs, var=var)  # normalised X and no raw.X: nothing to count
    with pytest.raises(InputError, match=r"p: X holds non-integer or negative values.*panels.<panel>.counts_layer"):
        data.validate_panel(no_raw, source="p", min_donors=3, **keys)
