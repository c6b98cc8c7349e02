"""The simulator's non-hematopoietic compartment (the mismatched-compartment control panel), and the guarantee that
adding it left the hematopoietic panels byte-identical."""

import hashlib

import numpy as np
import pytest

from fmextract.compartment import CELL_TYPES, simulate_compartment
from fmextract.errors import InputError
from fmextract.simulate import gene_list, simulate_panel
from fmextract.stages import load_marker_programs, load_stage_graph, map_labels, stage_info


@pytest.fixture(scope="module")
def inputs(root, stage_table):
    res = root / "resources"
    edges = load_stage_graph(res / "stage_graph.tsv", list(stage_info(stage_table).index))
    return stage_table, edges, load_marker_programs(res / "marker_programs.tsv"), (res / "background_genes.txt").read_text().split()


def compartment(inputs, **over):
    kw = dict(donors=["M0", "M1", "M2"], tissues=["lung", "gut", "skin"], cells_per_donor=300, seed=31)
    return simulate_compartment(*inputs, **{**kw, **over})


def test_hematopoietic_panels_unchanged(inputs):
    """Same counts, same obs as before the compartment existed. Counts recorded at commit ce72ea3; obs re-recorded
    when the stage table gained ontology labels (each donor's label of a stage is drawn from the table's); both
    re-recorded when it gained the single-positive thymocyte stages and the lineage stages (the fine stages drawn
    from and the stage count behind the genes' dispersions changed; lineage labels replace a share of the labels)."""
    a = simulate_panel(*inputs, donors=["D0", "D1", "D2"], tissues=["blood", "spleen"], stages=None, cells_per_donor=60,
                       n_genes=None, seed=7)
    counts = hashlib.sha256(a.X.data.tobytes() + a.X.indices.tobytes()).hexdigest()
    assert counts == "5b5b91b1df8a8365c93d87b983c0ea1a085227e295eeb2d04fc27848853b61fb"
    digest = hashlib.sha256(a.X.data.tobytes() + a.X.indices.tobytes() + a.obs.to_csv().encode()).hexdigest()
    assert digest == "05d1c7240cb5b2631b8c8be540c058befed32be33d3e46e8a7e294fc6e4fd5ab"


def test_shapes_genes_counts_and_determinism(inputs):
    a = compartment(inputs)
    heme, _ = gene_list(inputs[2], inputs[3], None)
    assert a.var_names[: len(heme)].tolist() == heme and "EPCAM" in a.var_names and a.n_obs == 900
    assert np.allclose(a.X.data, np.round(a.X.data)) and a.X.data.min() > 0
    assert set(a.obs["true_cell_type"]) == set(CELL_TYPES) and (a.obs["true_compartment"] == "non_hematopoietic").all()
    b = compartment(inputs)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert (a.X != compartment(inputs, seed=32).X).nnz > 0


def test_groups_are_labelled_onto_the_ruler_arbitrarily_one_stage_each(inputs, stage_table):
    a = compartment(inputs)
    mapped, unmapped = map_labels(a.obs["cell_type"], stage_table)
    assert unmapped.empty and (mapped["stage"].to_numpy() == a.obs["assigned_stage"].astype(str).to_numpy()).all()
    per_group = a.obs.groupby(["true_cell_type", "tissue"], observed=True)["assigned_stage"].nunique()
    assert (per_group == 1).all() and a.obs["assigned_stage"].nunique() == len(per_group) == 9  # distinct stages
    first = lambda adata: adata.obs.groupby(["true_cell_type", "tissue"], observed=True)["assigned_stage"].first().astype(str)
    assert not (first(compartment(inputs, seed=5)) == first(a)).all()  # another seed, another arbitrary labelling


def test_cell_type_and_tissue_programs_without_hematopoietic_markers(inputs):
    a = compartment(inputs, cells_per_donor=600)
    X = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
    mean = lambda gene, mask: X[mask, a.var_names.get_loc(gene)].mean()
    kind, tissue = a.obs["true_cell_type"].to_numpy(), a.obs["tissue"].to_numpy()
    assert mean("EPCAM", kind == "epithelial") > mean("EPCAM", kind != "epithelial") + 1
    assert mean("COL1A1", kind == "fibroblast") > mean("COL1A1", kind != "fibroblast") + 1
    assert mean("SFTPC", (kind == "epithelial") & (tissue == "lung")) > mean("SFTPC", tissue != "lung") + 1
    for marker in ("PTPRC", "CD3E", "CD14", "HBB"):  # leukocyte and hematopoietic markers stay low
        assert mean(marker, np.ones(a.n_obs, bool)) < mean("EPCAM", kind == "epithelial") - 1


def test_bad_compartment_inputs(inputs):
    with pytest.raises(InputError, match="non-hematopoietic program"):
        compartment(inputs, tissues=["bone_marrow"])
    with pytest.raises(InputError, match="unique"):
        compartment(inputs, donors=["M0", "M0"])
