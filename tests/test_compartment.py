"""The simulator's non-hematopoietic compartment (the mismatched-compartment control panel) on its own lineage ruler,
and the guarantee that adding it left the hematopoietic panels byte-identical."""

import hashlib

import numpy as np
import pytest

from fmextract.compartment import LINEAGES, simulate_compartment
from fmextract.errors import InputError
from fmextract.simulate import gene_list, simulate_panel
from fmextract.stages import (
    load_marker_programs, load_stage_graph, load_stage_table, map_labels, ruler_distances, stage_info,
)


@pytest.fixture(scope="module")
def inputs(root, stage_table):
    res = root / "resources"
    edges = load_stage_graph(res / "stage_graph.tsv", list(stage_info(stage_table).index))
    return stage_table, edges, load_marker_programs(res / "marker_programs.tsv"), (res / "background_genes.txt").read_text().split()


@pytest.fixture(scope="module")
def lineage(root):
    table = load_stage_table(root / "resources" / "nonhematopoietic_stages.tsv")
    return table, load_stage_graph(root / "resources" / "nonhematopoietic_graph.tsv", list(stage_info(table).index))


def compartment(inputs, lineage, **over):
    kw = dict(donors=["M0", "M1", "M2"], tissues=["lung", "gut", "skin"], cells_per_donor=300, seed=31)
    return simulate_compartment(*lineage, *inputs[2:], **{**kw, **over})


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


def test_shapes_genes_counts_and_determinism(inputs, lineage):
    a = compartment(inputs, lineage)
    heme, _ = gene_list(inputs[2], inputs[3], None)
    assert a.var_names[: len(heme)].tolist() == heme and "EPCAM" in a.var_names and a.n_obs == 900
    assert np.allclose(a.X.data, np.round(a.X.data)) and a.X.data.min() > 0
    assert set(a.obs["true_branch"]) == set(LINEAGES) and (a.obs["true_compartment"] == "non_hematopoietic").all()
    b = compartment(inputs, lineage)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert (a.X != compartment(inputs, lineage, seed=32).X).nnz > 0


def test_cells_carry_their_own_lineage_stage_never_the_root(inputs, lineage):
    a = compartment(inputs, lineage)
    mapped, unmapped = map_labels(a.obs["cell_type"], lineage[0])
    assert unmapped.empty and (mapped["stage"].to_numpy() == a.obs["true_stage"].astype(str).to_numpy()).all()
    assert "tissue_root" not in set(a.obs["true_stage"]) and a.obs["true_stage"].nunique() > 10


def test_expression_distances_follow_the_lineage_ruler(inputs, lineage):
    """True distances, not random stages: stage centroids further apart on the ruler are further apart in expression."""
    from scipy.stats import spearmanr

    a = compartment(inputs, lineage, cells_per_donor=900)
    X = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
    stages = sorted(a.obs["true_stage"].unique())
    centroids = np.stack([X[(a.obs["true_stage"] == s).to_numpy()].mean(0) for s in stages])
    R = ruler_distances(stages, lineage[1])
    D = np.linalg.norm(centroids[:, None] - centroids[None], axis=2)
    iu = np.triu_indices(len(stages), 1)
    assert spearmanr(D[iu], R[iu])[0] > 0.4


def test_lineage_and_tissue_programs_without_hematopoietic_markers(inputs, lineage):
    a = compartment(inputs, lineage, cells_per_donor=600)
    X = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
    mean = lambda gene, mask: X[mask, a.var_names.get_loc(gene)].mean()
    kind, tissue = a.obs["true_branch"].to_numpy(), a.obs["tissue"].to_numpy()
    assert mean("EPCAM", kind == "epithelial") > mean("EPCAM", kind != "epithelial") + 1
    assert mean("COL1A1", kind == "stromal") > mean("COL1A1", kind != "stromal") + 1
    assert mean("SFTPC", (kind == "epithelial") & (tissue == "lung")) > mean("SFTPC", tissue != "lung") + 0.5
    for marker in ("PTPRC", "CD3E", "CD14", "HBB"):  # leukocyte and hematopoietic markers stay low
        assert mean(marker, np.ones(a.n_obs, bool)) < mean("EPCAM", kind == "epithelial") - 1


def test_bad_compartment_inputs(inputs, lineage, stage_table):
    with pytest.raises(InputError, match="non-hematopoietic program"):
        compartment(inputs, lineage, tissues=["bone_marrow"])
    with pytest.raises(InputError, match="unique"):
        compartment(inputs, lineage, donors=["M0", "M0"])
    with pytest.raises(InputError, match="no marker genes"):  # the hematopoietic table is not a lineage table
        simulate_compartment(stage_table, inputs[1], *inputs[2:], donors=["M0"], tissues=["lung"], cells_per_donor=9,
                             seed=0)
