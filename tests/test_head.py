"""The exported head: one-file save/load, equality with the pipeline's extracted method, gene coverage, batching."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from fmextract import data, methods
from fmextract.adaptor import Adaptor
from fmextract.errors import InputError
from fmextract.features import FeatureMap, hard_sparse_map, low_rank_map
from fmextract.head import LATENT_KEY, Head, build_head
from fmextract.latent import fold, write_latent_cache
from fmextract.metrics import endpoint_metrics
from fmextract.readouts import fit_readouts
from fmextract.simulate import simulate_panel
from fmextract.stages import load_marker_programs, load_stage_graph, stage_info

SUBTYPES = {
    "cd4_cd8": {"positive": ["naive_cd4_t", "memory_cd4_t", "treg"], "negative": ["naive_cd8_t", "effector_cd8_t"]},
    "mono_macro": {"positive": ["macrophage"], "negative": ["classical_monocyte", "nonclassical_monocyte"]},
}
DONORS = [f"D{i}" for i in range(6)]
TRAIN, TEST = DONORS[:4], DONORS[4:]
PRED_COLUMNS = ["fmextract_branch", "fmextract_stage", "fmextract_branch_probability", "fmextract_stage_probability",
                "fmextract_cd4_cd8", "fmextract_mono_macro", "fmextract_pseudotime"]


@pytest.fixture(scope="module")
def raw(root, stage_table) -> ad.AnnData:
    """A simulated user panel: raw counts in layers['counts'] over all genes, user-style obs columns."""
    res = root / "resources"
    edges = load_stage_graph(res / "stage_graph.tsv", list(stage_info(stage_table).index))
    return simulate_panel(stage_table, edges, load_marker_programs(res / "marker_programs.tsv"),
                          (res / "background_genes.txt").read_text().split(), donors=DONORS,
                          tissues=["bone_marrow", "blood", "spleen", "lymph_node"], stages=None, cells_per_donor=150,
                          n_genes=None, seed=5)


@pytest.fixture(scope="module")
def panel(raw, stage_table) -> ad.AnnData:
    """The pipeline's benchmark panel: prepare (harmonise + log1p CP10k over all genes), then the panel genes."""
    prepared, _ = data.harmonise(raw, stage_table, source="raw", donor_key="donor_id", cell_type_key="cell_type",
                                 tissue_key="tissue", counts_layer="counts", gene_symbol_column=None)
    data.log_normalise(prepared)
    genes = list(np.random.default_rng(0).choice(prepared.var_names, size=60, replace=False))
    return prepared[:, genes].copy()


@pytest.fixture(scope="module")
def parts(panel) -> tuple[FeatureMap, Adaptor]:
    """A random dense float32 feature map over the panel genes and a random 10-D adaptor."""
    rng = np.random.default_rng(1)
    fmap = FeatureMap(genes=list(panel.var_names), kind="dense", matrix=rng.normal(size=(60, 40)).astype(np.float32))
    adaptor = Adaptor(W=rng.normal(size=(10, 40)).astype(np.float32), b=rng.normal(size=40).astype(np.float32), scale=2.0)
    return fmap, adaptor


def train_cells(panel: ad.AnnData) -> ad.AnnData:
    return panel[panel.obs["donor"].isin(TRAIN).to_numpy()].copy()


def holdout_cells(raw: ad.AnnData) -> ad.AnnData:
    return raw[raw.obs["donor_id"].isin(TEST).to_numpy()].copy()


@pytest.fixture(scope="module")
def head(parts, panel) -> Head:
    return build_head(*parts, train_cells(panel), subtypes=SUBTYPES, seed=0)


@pytest.fixture(scope="module")
def applied(head, raw) -> ad.AnnData:
    return head.apply(holdout_cells(raw))


def close_latent(actual: np.ndarray, desired: np.ndarray) -> None:
    """float32 latents equal up to summation order (absolute tolerance relative to the latent's scale)."""
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-5 * np.abs(desired).max())


def assert_same_predictions(a: ad.AnnData, b: ad.AnnData, *, exact: bool) -> None:
    check = np.testing.assert_array_equal if exact else (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6))
    (check if exact else close_latent)(a.obsm[LATENT_KEY], b.obsm[LATENT_KEY])
    for col in PRED_COLUMNS:
        if isinstance(a.obs[col].dtype, pd.CategoricalDtype):
            assert (a.obs[col].astype(str) == b.obs[col].astype(str)).all(), col
        else:
            check(a.obs[col].to_numpy(), b.obs[col].to_numpy())
    for key in ("fmextract_branch_proba", "fmextract_stage_proba"):
        check(a.obsm[key].to_numpy(), b.obsm[key].to_numpy())


@pytest.mark.parametrize("kind", ["dense", "sparse", "low_rank"])
def test_save_load_roundtrip_is_one_pickle_free_file(kind, parts, panel, raw, tmp_path):
    fmap, adaptor = parts
    fmap = {"dense": fmap, "sparse": hard_sparse_map(low_rank_map(fmap, 8), n_factors=4, n_genes=10),
            "low_rank": low_rank_map(fmap, 8)}[kind]
    head = build_head(fmap, adaptor, train_cells(panel), subtypes=SUBTYPES, seed=0)
    path = tmp_path / "head.npz"
    head.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["head.npz"]
    with np.load(path, allow_pickle=False) as z:  # every member loads without pickle
        assert all(z[name].dtype != object for name in z.files)
    back = Head.load(path)
    assert back.genes == head.genes and back.fmap.kind == fmap.kind and back.meta == head.meta
    assert back.readouts.n_parameters() == head.readouts.n_parameters()
    cells = holdout_cells(raw)
    assert_same_predictions(head.apply(cells), back.apply(cells), exact=True)


def test_apply_equals_the_pipeline_path(head, applied, parts, panel, root, tmp_path):
    """Raw test cells through the head == the pipeline's extracted method + shared readouts on the same cells."""
    fmap, adaptor = parts  # the pipeline: the frozen latent of every panel cell cached once, each split reads rows
    write_latent_cache(fold(fmap, adaptor), panel, tmp_path / "latent.h5")
    split_table = pd.DataFrame([("split000", d, "train") for d in TRAIN] + [("split000", d, "test") for d in TEST],
                               columns=["split", "donor", "role"])
    train, test, truth = methods.split_views(panel, split_table, "split000", max_train_cells=10**6, seed=0)
    module = methods.load_method(root / "workflow" / "methods" / "extracted.py", "embedding")
    params = {"inputs": {"latent": str(tmp_path / "latent.h5")}}
    checked = methods.check_output("embedding", module.embed(train, test, params), train, test, "extracted")
    values, n_params = methods.evaluate("embedding", checked, train, truth, subtypes=SUBTYPES, seed=0)

    assert list(applied.obs_names) == list(test.obs_names)
    close_latent(applied.obsm[LATENT_KEY], checked["Z_test"])
    expected = fit_readouts(checked["Z_train"], train.obs, subtypes=SUBTYPES, seed=0).predict(checked["Z_test"])
    np.testing.assert_allclose(applied.obs["fmextract_pseudotime"], expected["pseudotime"], rtol=1e-5, atol=1e-6)
    for name in SUBTYPES:
        np.testing.assert_allclose(applied.obs[f"fmextract_{name}"], expected[f"{name}_proba"], rtol=1e-5, atol=1e-6)
    for key in ("branch", "stage"):
        np.testing.assert_allclose(applied.obsm[f"fmextract_{key}_proba"], expected[f"{key}_proba"], rtol=1e-5, atol=1e-6)
        assert (applied.obs[f"fmextract_{key}"].astype(str).to_numpy() == expected[f"{key}_proba"].idxmax(axis=1)).all()
    pred = {"branch_proba": applied.obsm["fmextract_branch_proba"], "stage_proba": applied.obsm["fmextract_stage_proba"],
            "pseudotime": applied.obs["fmextract_pseudotime"].to_numpy(),
            **{f"{n}_proba": applied.obs[f"fmextract_{n}"].to_numpy() for n in SUBTYPES}}
    head_values = endpoint_metrics(truth, pred, subtypes=SUBTYPES, donor_key="donor")
    assert head_values.keys() == values.keys()
    np.testing.assert_allclose([head_values[k] for k in values], list(values.values()), rtol=1e-9)
    assert n_params == {k: v for k, v in head.meta["n_parameters"].items() if k != "adaptor"}


def test_missing_genes_below_threshold_raise(head, raw):
    cells = holdout_cells(raw)
    keep_genes = set(head.genes[:18])  # 18 of 60 panel genes stay (30% < 50%)
    cells.var_names = [g if g in keep_genes or g not in set(head.genes) else f"{g}_renamed" for g in cells.var_names]
    with pytest.raises(InputError, match=r"^cells\.h5ad: 18 of 60 panel genes \(30\.0%\).*--gene-symbol-column") as err:
        head.apply(cells, source="cells.h5ad")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="var column 'feature_name' not found"):
        head.apply(cells, gene_symbol_column="feature_name")


def test_partial_coverage_proceeds_with_missing_genes_as_zero(head, raw, caplog):
    cells = holdout_cells(raw)
    dropped = head.genes[::5]  # 12 of 60
    reduced = cells[:, ~cells.var_names.isin(dropped)].copy()
    with caplog.at_level("INFO", logger="fmextract.head"):
        out = head.apply(reduced, min_coverage=0.75, source="reduced.h5ad")
    info = out.uns["fmextract"]
    assert info["coverage"] == pytest.approx(0.8) and info["n_genes_found"] == 48 and info["n_panel_genes"] == 60
    assert sorted(info["missing_genes"]) == sorted(dropped)
    assert "reduced.h5ad: 48 of 60 panel genes" in caplog.text
    # expected: the pipeline's zero-shot path on the reduced file (log1p CP10k over its genes, absent genes zero)
    expected_in = reduced.copy()
    data.log_normalise(expected_in)
    X, coverage = data.align_genes(expected_in, head.genes)
    assert coverage == pytest.approx(0.8)
    expected = head.fmap.transform(X, then=head.adaptor.transform)
    close_latent(out.obsm[LATENT_KEY], expected)
    assert not np.allclose(out.obsm[LATENT_KEY], head.apply(cells).obsm[LATENT_KEY], atol=1e-3)  # genes mattered
    with pytest.raises(InputError, match="48 of 60"):
        head.apply(reduced, min_coverage=0.9)


def test_symbol_column_counts_in_x_and_duplicates(head, raw, applied):
    cells = holdout_cells(raw)
    renamed = ad.AnnData(X=cells.layers["counts"].copy(), obs=cells.obs.copy(),
                         var=pd.DataFrame({"feature_name": cells.var_names.to_numpy()},
                                          index=[f"ENSG{i:011d}" for i in range(cells.n_vars)]))
    assert_same_predictions(head.apply(renamed, gene_symbol_column="feature_name"), applied, exact=False)
    # a duplicated symbol is kept once (first occurrence), before the library size is taken, as in the prepare step
    extra = cells[:, [head.genes[0]]].copy()
    extra.var_names = ["duplicate"]
    dup = ad.concat([cells, extra], axis=1, merge="first")
    dup.var["symbol"] = list(cells.var_names) + [head.genes[0]]
    assert_same_predictions(head.apply(dup, gene_symbol_column="symbol"), applied, exact=False)


def test_non_counts_rejected(head, raw):
    cells = holdout_cells(raw)
    data.log_normalise(cells)
    del cells.layers["counts"]
    with pytest.raises(InputError, match=r"X holds non-integer or negative values.*--counts-layer"):
        head.apply(cells)
    with pytest.raises(InputError, match=r"layer 'raw' not found"):
        head.apply(cells, counts_layer="raw")


def test_batch_size_invariance(head, raw, applied):
    cells = holdout_cells(raw)
    assert_same_predictions(head.apply(cells, batch_size=7), applied, exact=False)
    assert_same_predictions(head.apply(cells, batch_size=1), applied, exact=False)


def test_skipped_subtype_is_nan_and_survives_roundtrip(parts, panel, raw, tmp_path):
    train = train_cells(panel)
    train = train[~train.obs["stage"].isin(["naive_cd8_t", "effector_cd8_t"]).to_numpy()].copy()
    head = build_head(*parts, train, subtypes=SUBTYPES, seed=0)
    assert "cd4_cd8" in head.readouts.skipped
    head.save(tmp_path / "h.npz")
    out = Head.load(tmp_path / "h.npz").apply(holdout_cells(raw))
    assert out.obs["fmextract_cd4_cd8"].isna().all() and out.obs["fmextract_mono_macro"].notna().all()


def test_load_and_build_errors(head, parts, panel, tmp_path):
    with pytest.raises(InputError, match="head file not found"):
        Head.load(tmp_path / "absent.npz")
    parts[0].save(tmp_path / "fmap.npz")
    with pytest.raises(InputError, match="not an fmextract head"):
        Head.load(tmp_path / "fmap.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        Head.load(tmp_path / "junk.npz")
    wrong = Adaptor(W=np.ones((10, 7), dtype=np.float32), b=np.zeros(7, dtype=np.float32), scale=1.0)
    with pytest.raises(InputError, match="adaptor expects 7 features but the feature map gives 40"):
        build_head(parts[0], wrong, train_cells(panel), subtypes=SUBTYPES, seed=0)
    with pytest.raises(InputError, match="panel genes absent from var_names"):
        build_head(*parts, train_cells(panel)[:, 5:].copy(), subtypes=SUBTYPES, seed=0)
    with pytest.raises(InputError, match="no cells"):
        head.apply(panel[:0].copy())


def ensembl_keyed(adata: ad.AnnData, ids: dict[str, str]) -> ad.AnnData:
    """A copy of `adata` whose var_names are Ensembl-style ids (symbols kept in var['symbol'])."""
    out = adata.copy()
    out.var["symbol"] = out.var_names.to_numpy()
    out.var_names = [ids[g] for g in out.var_names]
    return out


def test_head_records_its_model_and_refuses_input_keyed_otherwise(head, parts, panel, raw, applied, tmp_path):
    ids = {g: f"ENSG{i:011d}" for i, g in enumerate(raw.var_names)}
    fmap, adaptor = parts
    keyed = FeatureMap(genes=[ids[g] for g in fmap.genes], kind=fmap.kind, matrix=fmap.matrix)
    # a head of a model keyed by Ensembl ids (e.g. Geneformer), trained on the same cells: a model record survives save
    build_head(keyed, adaptor, ensembl_keyed(train_cells(panel), ids), subtypes=SUBTYPES, seed=0,
               model_kind="geneformer").save(tmp_path / "ensembl.npz")
    ensembl = Head.load(tmp_path / "ensembl.npz")
    assert ensembl.model == {"kind": "geneformer", "gene_keys": "ensembl"}
    assert head.model == {"kind": "scgpt", "gene_keys": "symbol"}
    cells = holdout_cells(raw)
    assert_same_predictions(ensembl.apply(ensembl_keyed(cells, ids)), applied, exact=False)
    by_column = ensembl_keyed(cells, ids)
    by_column.var["gene_id"], by_column.var_names = by_column.var_names.to_numpy(), by_column.var["symbol"].to_numpy()
    assert_same_predictions(ensembl.apply(by_column, gene_symbol_column="gene_id"), applied, exact=False)
    # each the other way round: one line naming the model, what the head needs and what the file holds
    with pytest.raises(InputError, match=r"^cells\.h5ad: this head was extracted from a geneformer model whose genes "
                                         r"are Ensembl gene ids, but var_names holds gene symbols") as err:
        ensembl.apply(cells, source="cells.h5ad")
    assert "\n" not in str(err.value)
    ids_only = ensembl_keyed(cells, ids)
    del ids_only.var["symbol"]
    with pytest.raises(InputError, match=r"scgpt model whose genes are gene symbols, but var_names holds Ensembl gene "
                                         r"ids \(e\.g\. ENSG"):
        head.apply(ids_only)


def test_a_head_without_a_model_record_is_read_as_scgpt(head, parts, tmp_path):
    meta = {k: v for k, v in head.meta.items() if k != "model"}
    Head(fmap=head.fmap, adaptor=head.adaptor, readouts=head.readouts, meta=meta).save(tmp_path / "old.npz")
    assert Head.load(tmp_path / "old.npz").model == {"kind": "scgpt", "gene_keys": "symbol", "recorded": False}
