"""Curated resources (stage table, stage graph, marker programs) and the stage helpers."""

import re

import numpy as np
import pandas as pd
import pytest

from fmextract.errors import InputError
from fmextract.stages import (
    BRANCHES,
    fine_stages,
    lineage_as,
    lineage_pools,
    load_label_table,
    load_marker_programs,
    load_stage_graph,
    load_stage_table,
    map_labels,
    ruler_distances,
    stage_info,
)

#: The blood/immune cell_type labels of Tabula Sapiens named in issue 12 (CELLxGENE names); each must reach a branch.
TABULA_SAPIENS_LABELS = [
    "B cell", "naive B cell", "memory B cell", "class switched memory B cell", "transitional stage B cell", "plasma cell",
    "plasmablast", "T cell", "CD4-positive, alpha-beta T cell", "naive thymus-derived CD4-positive, alpha-beta T cell",
    "CD4-positive, alpha-beta memory T cell", "CD4-positive helper T cell", "regulatory T cell",
    "CD8-positive, alpha-beta T cell", "naive thymus-derived CD8-positive, alpha-beta T cell",
    "CD8-positive, alpha-beta memory T cell", "CD8-positive, alpha-beta cytokine secreting effector T cell",
    "mature alpha-beta T cell", "double-positive, alpha-beta thymocyte", "double negative thymocyte", "thymocyte",
    "mucosal invariant T cell", "gamma-delta T cell", "mature NK T cell", "type I NK T cell", "natural killer cell",
    "innate lymphoid cell", "monocyte", "classical monocyte", "non-classical monocyte", "intermediate monocyte",
    "macrophage", "alveolar macrophage", "tissue-resident macrophage", "elicited macrophage", "Kupffer cell",
    "dendritic cell", "conventional dendritic cell", "myeloid dendritic cell", "CD1c-positive myeloid dendritic cell",
    "CD141-positive myeloid dendritic cell", "plasmacytoid dendritic cell", "neutrophil", "mature neutrophil",
    "granulocyte", "eosinophil", "basophil", "mast cell", "erythrocyte", "erythroid progenitor cell",
    "erythroid lineage cell", "platelet", "megakaryocyte", "hematopoietic stem cell", "hematopoietic precursor cell",
    "common myeloid progenitor", "common lymphoid progenitor", "granulocyte monocyte progenitor cell",
]
#: Labels that name a lineage without a finer state: a lineage stage of their own (data.lineage_labels: stage).
LINEAGE = {"B cell": "b_cell", "T cell": "t_cell", "CD4-positive, alpha-beta T cell": "cd4_t",
           "CD8-positive, alpha-beta T cell": "cd8_t", "mature alpha-beta T cell": "t_cell",
           "conventional dendritic cell": "myeloid_dc", "myeloid dendritic cell": "myeloid_dc", "monocyte": "monocyte"}
#: Labels spanning several places of the ruler: a branch, no stage, no depth.
COARSE = {"dendritic cell": "monocyte_macrophage_dc", "mononuclear phagocyte": "monocyte_macrophage_dc",
          "granulocyte": "granulocytic", "erythroid lineage cell": "erythroid_megakaryocyte"}


@pytest.fixture(scope="module")
def label_table(root):
    return load_label_table(root / "resources" / "hematopoiesis_stages.tsv")


@pytest.fixture(scope="module")
def res(root):
    return root / "resources"


@pytest.fixture(scope="module")
def graph(res, stage_table):
    stages = list(stage_info(stage_table).index)
    return stages, load_stage_graph(res / "stage_graph.tsv", stages)


def test_stage_table_shape(stage_table):
    info = stage_info(stage_table)
    assert set(stage_table["branch"]) == set(BRANCHES)
    assert 30 <= len(info) <= 45
    assert len(stage_table) >= 80 and stage_table["label"].is_unique
    assert set(info.index) <= set(stage_table["label"])  # every stage id is also a label
    assert info.loc["hsc", "depth"] == 0 and (info["depth"] >= 0).all()
    for stage in ("naive_cd4_t", "memory_cd4_t", "naive_cd8_t", "effector_cd8_t", "classical_monocyte", "macrophage"):
        assert stage in info.index
    assert sum("cd4" in s for s in info.index) >= 2 and sum("cd8" in s for s in info.index) >= 2


@pytest.mark.parametrize(
    "label, stage",
    [
        ("hematopoietic stem cell", "hsc"),
        ("common myeloid progenitor", "cmp"),
        ("CD4-positive, alpha-beta memory T cell", "memory_cd4_t"),
        ("naive thymus-derived CD4-positive, alpha-beta T cell", "naive_cd4_t"),
        ("effector memory CD8-positive, alpha-beta T cell", "effector_cd8_t"),
        ("classical monocyte", "classical_monocyte"),
        ("non-classical monocyte", "nonclassical_monocyte"),
        ("macrophage", "macrophage"),
        ("erythrocyte", "erythrocyte"),
        ("erythroid progenitor cell", "proerythroblast"),
        ("plasma cell", "plasma_cell"),
        ("naive B cell", "naive_b"),
        ("memory B cell", "memory_b"),
        ("neutrophil", "neutrophil"),
        ("mature NK T cell", "innate_like_t"),
        ("regulatory T cell", "treg"),
        ("plasmacytoid dendritic cell", "pdc"),
        ("platelet", "platelet"),
    ],
)
def test_real_labels_map(stage_table, label, stage):
    mapped, unmapped = map_labels(pd.Series([label]), stage_table)
    assert mapped["stage"].iloc[0] == stage and unmapped.empty


def test_graph_is_connected_and_deepens_away_from_hsc(graph, stage_table):
    stages, edges = graph
    assert {s for e in edges for s in e} == set(stages)
    dist = ruler_distances(stages, edges)
    assert np.isfinite(dist).all()
    depth = stage_info(stage_table)["depth"]
    hsc = stages.index("hsc")
    for s in fine_stages(stage_table):  # depth rises away from hsc: every other fine stage has a shallower neighbour
        if s != "hsc":
            assert any(depth[n] < depth[s] for e in edges if s in e for n in e if n != s), s
    assert np.corrcoef(dist[hsc], depth.loc[stages])[0, 1] > 0.9
    assert dist[stages.index("naive_cd4_t"), stages.index("memory_cd4_t")] == 1
    assert dist[stages.index("classical_monocyte"), stages.index("macrophage")] == 1


def test_lineage_stages_sit_beside_their_fine_stages_and_move_no_fine_distance(graph, stage_table):
    """docs/labels.md: a lineage stage is one hop from each fine stage it pools (two for T cell, through cd4_t and
    cd8_t), at the midpoint of their depths, and no distance between two fine stages changes."""
    stages, edges = graph
    pools = lineage_pools(stage_table)
    assert set(pools) == {"b_cell", "cd4_t", "cd8_t", "t_cell", "monocyte", "myeloid_dc"}
    info = stage_info(stage_table)
    dist = pd.DataFrame(ruler_distances(stages, edges), index=stages, columns=stages)
    for lineage, members in pools.items():
        assert dist.loc[lineage, members].max() == (2 if lineage == "t_cell" else 1), lineage
        assert info.loc[lineage, "depth"] == (info.loc[members, "depth"].min() + info.loc[members, "depth"].max()) / 2
        assert (info.loc[members, "branch"] == info.loc[lineage, "branch"]).all()
    fine = fine_stages(stage_table)
    assert not set(fine) & set(pools) and {"cd4_thymocyte", "cd8_thymocyte", "thymocyte"} <= set(fine)
    fine_edges = [e for e in edges if e[0] in fine and e[1] in fine]
    np.testing.assert_array_equal(ruler_distances(fine, fine_edges), dist.loc[fine, fine].to_numpy())
    diameter = dist.to_numpy().max()
    assert diameter == ruler_distances(fine, fine_edges).max()  # the lineage stages do not stretch the ruler


def test_lineage_labels_switch(label_table):
    labels = pd.Series(list(LINEAGE) + ["naive B cell", "CD4-positive, alpha-beta thymocyte"])
    mapped, unmapped = map_labels(labels, label_table)
    assert unmapped.empty and mapped["stage"].tolist() == [*LINEAGE.values(), "naive_b", "cd4_thymocyte"]
    branch_only = lineage_as(label_table, "branch")
    mapped, _ = map_labels(labels, branch_only)
    assert mapped["stage"].iloc[: len(LINEAGE)].isna().all() and mapped["branch"].notna().all()
    assert mapped["stage"].iloc[len(LINEAGE):].tolist() == ["naive_b", "cd4_thymocyte"]
    assert lineage_pools(branch_only) == {} and lineage_as(label_table, "stage") is label_table
    with pytest.raises(InputError, match="data.lineage_labels is 'coarse'; use one of stage, branch"):
        lineage_as(label_table, "coarse")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("label\tstage\tbranch\tdepth\tpools\nx\tx\tt_nk\t1\t\nl\tl\tt_nk\t1\tx y\n", r"lineage stage 'l' pools 'y'"),
        ("label\tstage\tbranch\tdepth\tpools\nx\tx\tb_plasma\t1\t\nl\tl\tt_nk\t1\tx\n", r"not a fine stage of branch 't_nk'"),
        ("label\tstage\tbranch\tdepth\tpools\nx\t\tt_nk\t\ty\n", r"coarse label 'x' has pools"),
        ("label\tstage\tbranch\tdepth\tpools\nx\tx\tt_nk\t1\t\nl\tl\tt_nk\t1\tx\nL\tl\tt_nk\t1\t\n",
         r"stage 'l' has rows with different branch, depth or pools"),
    ],
)
def test_bad_pools(tmp_path, text, pattern):
    with pytest.raises(InputError, match=pattern):
        load_label_table(write(tmp_path, "stages.tsv", text))


def test_ruler_distances_toy_graph():
    edges = [("a", "b"), ("b", "c"), ("b", "d"), ("d", "e")]
    d = ruler_distances(["a", "b", "c", "d", "e"], edges)
    expected = np.array([[0, 1, 2, 2, 3], [1, 0, 1, 1, 2], [2, 1, 0, 2, 3], [2, 1, 2, 0, 1], [3, 2, 3, 1, 0]])
    np.testing.assert_array_equal(d, expected)
    # a subset keeps distances through stages outside it, in the order asked
    np.testing.assert_array_equal(ruler_distances(["e", "c"], edges), [[0, 3], [3, 0]])
    assert np.isinf(ruler_distances(["a", "z"], [("a", "b"), ("z", "y")])[0, 1])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("label\tstage\tbranch\nx\tx\tt_nk\n", r"column 'depth' missing"),
        ("label\tstage\tbranch\tdepth\nx\tx\tlymphoid\t1\n", r"label 'x' has unknown branch 'lymphoid'.*t_nk"),
        ("label\tstage\tbranch\tdepth\nx\tx\tt_nk\t1\nx\ty\tt_nk\t2\n", r"label 'x' appears more than once"),
        ("label\tstage\tbranch\tdepth\nx\tx\tt_nk\tdeep\n", r"label 'x' has depth 'deep'"),
        ("label\tstage\tbranch\tdepth\nx\ts\tt_nk\t1\ny\ts\tb_plasma\t1\n", r"stage 's' has rows with different branch"),
        ("label\tstage\tbranch\tdepth\nT cell\ts\tt_nk\t1\nt  cell\tu\tt_nk\t1\n", r"case/spacing"),
    ],
)
def test_bad_stage_table(tmp_path, text, pattern):
    path = write(tmp_path, "stages.tsv", text)
    with pytest.raises(InputError, match=pattern) as err:
        load_stage_table(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_stage_table(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_stage_table(tmp_path / "nope.tsv")


def test_bad_stage_graph(tmp_path):
    path = write(tmp_path, "g.tsv", "source\ttarget\na\tb\nb\tzz\n")
    with pytest.raises(InputError, match=r"g.tsv: target 'zz' is not a stage"):
        load_stage_graph(path, ["a", "b", "c"])
    path = write(tmp_path, "g.tsv", "source\ttarget\na\tb\nc\td\n")
    with pytest.raises(InputError, match=r"g.tsv: the stage graph is not connected.*'c' cannot reach 'a'"):
        load_stage_graph(path, ["a", "b", "c", "d"])
    path = write(tmp_path, "g.tsv", "source\ttarget\na\tb\nb\ta\nb\tc\n")
    assert load_stage_graph(path, ["a", "b", "c"]) == [("a", "b"), ("b", "c")]


def test_marker_programs_and_background(res):
    programs = load_marker_programs(res / "marker_programs.tsv")
    assert set(programs) == {"t_lymphoid", "b_plasma", "granulocytic", "monocyte_macrophage", "erythroid", "megakaryocyte",
                             "nk", "dc", "stem_progenitor"}
    genes = [g for gs in programs.values() for g in gs]
    assert all(15 <= len(gs) <= 30 for gs in programs.values())
    assert len(genes) == len(set(genes))
    for g in ("CD3E", "CD4", "CD8A", "MS4A1", "CD79A", "JCHAIN", "MPO", "ELANE", "CD14", "LYZ", "CD68", "HBB", "GATA1",
              "PF4", "ITGA2B", "NKG7", "GNLY", "CLEC4C", "CD34"):
        assert g in genes
    background = (res / "background_genes.txt").read_text().split()
    assert 200 <= len(background) <= 300 and len(background) == len(set(background))
    assert not set(background) & set(genes)
    symbol = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)?$")
    assert all(symbol.match(g) for g in genes + background)


def test_map_labels_exact_loose_and_unmapped(stage_table):
    labels = pd.Series(["Classical  Monocyte", "foo", "macrophage", "foo", "bar"], index=list("vwxyz"))
    mapped, unmapped = map_labels(labels, stage_table)
    assert list(mapped.index) == list("vwxyz")
    assert mapped.loc["v", "stage"] == "classical_monocyte" and mapped.loc["x", "branch"] == "monocyte_macrophage_dc"
    assert mapped["stage"].isna().sum() == 3 and np.isnan(mapped.loc["w", "depth"])
    assert unmapped.to_dict("list") == {"label": ["foo", "bar"], "ontology_id": ["", ""], "n_cells": [2, 1]}


def test_every_tabula_sapiens_label_maps_to_a_branch_by_name_and_by_id(label_table):
    mapped, unmapped = map_labels(pd.Series(TABULA_SAPIENS_LABELS), label_table)
    assert unmapped.empty and mapped["branch"].notna().all()
    ids = label_table.set_index("label")["ontology_id"]
    assert (ids.loc[TABULA_SAPIENS_LABELS] != "").all()  # every listed label has its Cell Ontology id
    # by id alone (author labels that are not CL names, as files carry them next to cell_type_ontology_term_id)
    by_id, unmapped = map_labels(pd.Series(["author label"] * len(ids.loc[TABULA_SAPIENS_LABELS])), label_table,
                                 ontology_ids=pd.Series(ids.loc[TABULA_SAPIENS_LABELS].to_numpy()))
    assert unmapped.empty and by_id.reset_index(drop=True).astype(str).equals(mapped.reset_index(drop=True).astype(str))
    fine = mapped[~pd.Series(TABULA_SAPIENS_LABELS).isin(list(COARSE)).to_numpy()]  # lineage labels have a stage
    assert fine["stage"].notna().all() and np.isfinite(fine["depth"]).all()


@pytest.mark.parametrize("label, branch", sorted(COARSE.items()))
def test_coarse_labels_get_a_branch_but_no_stage(label_table, label, branch):
    mapped, unmapped = map_labels(pd.Series([label]), label_table)
    assert unmapped.empty and mapped["branch"].iloc[0] == branch
    assert pd.isna(mapped["stage"].iloc[0]) and np.isnan(mapped["depth"].iloc[0])


def test_stage_table_leaves_coarse_labels_out(label_table, stage_table):
    assert set(label_table["label"]) - set(stage_table["label"]) >= set(COARSE)
    assert stage_table["stage"].notna().all() and stage_info(label_table).equals(stage_info(stage_table))
    mapped, unmapped = map_labels(pd.Series(["dendritic cell"]), stage_table)  # the stage table has no coarse rows
    assert mapped["branch"].isna().all() and unmapped["label"].tolist() == ["dendritic cell"]


def test_ontology_id_wins_over_the_name_and_name_is_the_fallback(label_table):
    labels = pd.Series(["macrophage", "B cell", "epithelial cell", "Kupffer cell"])
    ids = pd.Series(["CL:0000084", "", "CL:0000066", "unknown"])  # T cell id; none; not in table; not an id
    mapped, unmapped = map_labels(labels, label_table, ontology_ids=ids)
    assert mapped["branch"].tolist()[:2] == ["t_nk", "b_plasma"] and mapped["stage"].tolist()[:2] == ["t_cell", "b_cell"]
    assert mapped["stage"].iloc[3] == "macrophage"
    assert unmapped.to_dict("list") == {"label": ["epithelial cell"], "ontology_id": ["CL:0000066"], "n_cells": [1]}


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("label\tstage\tbranch\tdepth\nx\t\tt_nk\t2\n", r"label 'x' has a stage or a depth but not both"),
        ("label\tstage\tbranch\tdepth\tontology_id\nx\t\tt_nk\t\tCL:12\n", r"ontology_id 'CL:12' is not"),
        ("label\tstage\tbranch\tdepth\tontology_id\nx\t\tt_nk\t\tCL:0000084\ny\t\tt_nk\t\tCL:0000084\n",
         r"ontology_id 'CL:0000084' is given to more than one label"),
        ("label\tstage\tbranch\tdepth\nT cell\t\tt_nk\t\nt  cell\tu\tt_nk\t1\n", r"case/spacing"),
    ],
)
def test_bad_label_table(tmp_path, text, pattern):
    path = write(tmp_path, "stages.tsv", text)
    with pytest.raises(InputError, match=pattern) as err:
        load_label_table(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_lineage_table_of_the_mismatched_compartment(root):
    """The non-hematopoietic lineage table loads with its own branches, its graph is connected, diameter 6."""
    from fmextract.stages import COMPARTMENT_BRANCHES, load_label_table, load_stage_graph, load_stage_table, ruler_distances

    table = load_stage_table(root / "resources" / "nonhematopoietic_stages.tsv")
    assert set(table["branch"]) == set(COMPARTMENT_BRANCHES)
    ids = sorted(table["stage"].unique())
    edges = load_stage_graph(root / "resources" / "nonhematopoietic_graph.tsv", ids)
    assert ruler_distances(ids, edges).max() == 6
    labels = load_label_table(root / "resources" / "nonhematopoietic_stages.tsv")
    assert {"type II pneumocyte", "capillary endothelial cell", "fibroblast", "epithelial cell"} <= set(labels["label"])
