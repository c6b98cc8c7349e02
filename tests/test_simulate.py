"""The seeded hematopoiesis simulator: determinism, shapes, counts, truth, marker programs and donor effects."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import chi2_contingency, spearmanr

from fmextract.errors import InputError
from fmextract.simulate import simulate_panel
from fmextract.simulate import LINEAGE_SHARE
from fmextract.stages import lineage_pools, load_marker_programs, load_stage_graph, map_labels, stage_info

PROGRAM_BRANCH = {  # the branch (or stages) where each program should be highest
    "t_lymphoid": "t_nk", "nk": "t_nk", "b_plasma": "b_plasma", "granulocytic": "granulocytic",
    "monocyte_macrophage": "monocyte_macrophage_dc", "dc": "monocyte_macrophage_dc", "erythroid": ["proerythroblast", "erythroblast", "erythrocyte"],
    "megakaryocyte": ["megakaryocyte", "platelet"], "stem_progenitor": "stem_progenitor",
}
TISSUES = ["bone_marrow", "blood", "spleen", "lymph_node"]


@pytest.fixture(scope="module")
def inputs(root, stage_table):
    res = root / "resources"
    edges = load_stage_graph(res / "stage_graph.tsv", list(stage_info(stage_table).index))
    programs = load_marker_programs(res / "marker_programs.tsv")
    background = (res / "background_genes.txt").read_text().split()
    return stage_table, edges, programs, background


def simulate(inputs, **over):
    kw = dict(donors=[f"D{i}" for i in range(6)], tissues=TISSUES, stages=None, cells_per_donor=400, n_genes=None, seed=3)
    return simulate_panel(*inputs, **{**kw, **over})


@pytest.fixture(scope="module")
def panel(inputs):
    return simulate(inputs)


def log_norm(adata):
    X = adata.layers["counts"].toarray()
    return np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1) * 1e4)


def test_deterministic(inputs, panel):
    again = simulate(inputs)
    assert (again.X != panel.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, panel.obs)
    pd.testing.assert_frame_equal(again.var, panel.var)
    other = simulate(inputs, seed=4)
    assert other.shape == panel.shape and (other.X != panel.X).nnz > 0


def test_shapes_and_counts(inputs, panel):
    _, _, programs, background = inputs
    n_prog = len({g for gs in programs.values() for g in gs})
    assert panel.n_obs == 6 * 400 and panel.n_vars == n_prog + len(background)
    assert panel.var_names.is_unique and set(panel.var["program"]) == set(programs) | {"background"}
    assert panel.var.loc["CD8A", "program"] == "t_lymphoid"
    assert sp.isspmatrix_csr(panel.X) and panel.X.dtype == np.float32
    assert np.array_equal(panel.X.data, np.round(panel.X.data)) and (panel.X.data > 0).all()
    assert (panel.layers["counts"] != panel.X).nnz == 0
    assert set(panel.obs["tissue"]) == set(TISSUES) and panel.obs["donor_id"].nunique() == 6
    lib = np.asarray(panel.X.sum(1)).ravel()
    assert 300 < np.median(lib) < 5000 and lib.std() / lib.mean() > 0.3  # library size varies
    capped = simulate(inputs, n_genes=n_prog + 10, cells_per_donor=20)
    assert capped.n_vars == n_prog + 10


def test_truth_columns_agree_with_table(inputs, panel):
    table = inputs[0]
    info = stage_info(table)
    obs = panel.obs
    mapped, unmapped = map_labels(obs["cell_type"], table)
    fine = mapped["stage"].to_numpy() == obs["true_stage"].astype(str).to_numpy()
    pools = lineage_pools(table)  # else a lineage label pooling the true stage ("B cell" on a naive B cell)
    assert unmapped.empty and all(f or t in pools[m] for f, m, t in zip(fine, mapped["stage"], obs["true_stage"]))
    assert obs["cell_type"].nunique() > obs["true_stage"].nunique()  # aliases, not only the stage ids
    assert not set(obs["true_stage"]) & set(pools)  # cells are drawn from fine stages only
    np.testing.assert_array_equal(obs["true_depth"], info.loc[obs["true_stage"].astype(str), "depth"])
    assert (obs["true_branch"].astype(str).to_numpy() == info.loc[obs["true_stage"].astype(str), "branch"].to_numpy()).all()
    assert obs["true_stage"].nunique() >= 30 and "thymocyte" not in set(obs["true_stage"])  # no thymus
    assert (np.abs(obs["true_pseudotime"] - obs["true_depth"]) <= 0.5 + 1e-9).all()
    assert obs["true_pseudotime"].round(6).nunique() > 0.9 * panel.n_obs  # continuous


def test_pseudotime_monotone_with_depth(panel):
    obs = panel.obs
    means = obs.groupby("true_depth")["true_pseudotime"].mean()
    assert means.is_monotonic_increasing and means.index.size >= 6
    assert spearmanr(obs["true_pseudotime"], obs["true_depth"])[0] > 0.9


def test_marker_programs_higher_in_their_branch(panel):
    X = log_norm(panel)
    branch = panel.obs["true_branch"].astype(str).to_numpy()
    stage = panel.obs["true_stage"].astype(str).to_numpy()
    for program, home in PROGRAM_BRANCH.items():
        score = X[:, (panel.var["program"] == program).to_numpy()].mean(1)
        inside = np.isin(stage, home) if isinstance(home, list) else branch == home
        assert score[inside].mean() > 2 * score[~inside].mean(), program
    col = {g: X[:, panel.var_names.get_loc(g)] for g in ("CD8A", "C1QA", "HBB", "FOXP3")}
    cd8, cd4 = np.isin(stage, ["naive_cd8_t", "effector_cd8_t"]), np.isin(stage, ["naive_cd4_t", "memory_cd4_t"])
    assert col["CD8A"][cd8].mean() > 3 * col["CD8A"][cd4].mean()
    assert col["C1QA"][stage == "macrophage"].mean() > 3 * col["C1QA"][stage == "classical_monocyte"].mean()
    assert col["FOXP3"][stage == "treg"].mean() > 2.5 * col["FOXP3"][stage == "naive_cd4_t"].mean()
    assert col["HBB"][np.isin(stage, ["erythroblast", "erythrocyte"])].mean() > 3 * col["HBB"][branch == "t_nk"].mean()


def test_adjacent_stages_are_similar(panel):
    """Neighbouring stages must be closer than distant ones, so the stage task is not trivial."""
    X = log_norm(panel)
    stage = panel.obs["true_stage"].astype(str).to_numpy()
    centroid = {s: X[stage == s].mean(0) for s in ("naive_cd4_t", "memory_cd4_t", "naive_b", "neutrophil")}
    near = np.linalg.norm(centroid["naive_cd4_t"] - centroid["memory_cd4_t"])
    far = np.linalg.norm(centroid["naive_cd4_t"] - centroid["neutrophil"])
    assert near < 0.5 * far


def test_donor_effects(inputs, panel):
    """Donor means of the same stage differ more with donor effects than without; stage composition shifts by donor."""
    quiet = simulate(inputs, donor_gene_sd=0.0, donor_branch_gene_sd=0.0, donor_stage_sd=0.0)

    def donor_spread(adata):
        X = log_norm(adata)
        keep = (adata.obs["true_branch"] == "t_nk").to_numpy()
        means = pd.DataFrame(X[keep]).groupby(adata.obs["donor_id"].to_numpy()[keep]).mean()
        return means.std(axis=0).mean()

    assert donor_spread(panel) > 1.5 * donor_spread(quiet)
    blood = panel.obs[panel.obs["tissue"] == "blood"]
    table = pd.crosstab(blood["donor_id"], blood["true_branch"])
    assert chi2_contingency(table.loc[:, table.sum() >= 20])[1] < 1e-3


def test_stage_subset_and_tissue_composition(inputs):
    subset = ["naive_cd4_t", "naive_b", "classical_monocyte", "macrophage", "neutrophil"]
    adata = simulate(inputs, stages=subset, tissues=["blood", "spleen"], cells_per_donor=300)
    assert set(adata.obs["true_stage"].astype(str)) == set(subset)
    full = simulate(inputs, tissues=["bone_marrow", "blood"], cells_per_donor=500)
    prog = full.obs.groupby("tissue", observed=True)["true_branch"].apply(lambda b: (b == "stem_progenitor").mean())
    assert prog["bone_marrow"] > 5 * prog["blood"]


@pytest.mark.parametrize(
    "over, pattern",
    [
        (dict(tissues=["kidney"]), r"unknown tissue 'kidney'"),
        (dict(stages=["hsc", "not_a_stage"]), r"stage 'not_a_stage' is not in the stage table"),
        (dict(n_genes=10), r"n_genes=10 is below"),
        (dict(donors=["A", "A"]), r"unique ids"),
        (dict(stages=["thymocyte"], tissues=["blood"]), r"stage 'thymocyte' never occurs in tissues"),
    ],
)
def test_bad_arguments(inputs, over, pattern):
    with pytest.raises(InputError, match=pattern):
        simulate(inputs, **over)


def test_lineage_labels_a_tabula_sapiens_like_share_and_keep_the_truth(inputs, panel):
    """A share of B, T and monocyte cells carries its lineage label (LINEAGE_SHARE); the counts do not depend on it."""
    table = inputs[0]
    obs = panel.obs
    mapped, _ = map_labels(obs["cell_type"], table)
    pools = lineage_pools(table)
    for lineage, share in LINEAGE_SHARE.items():
        pooled = obs["true_stage"].astype(str).isin(pools[lineage]).to_numpy()
        got = (mapped["stage"].to_numpy()[pooled] == lineage).mean()
        assert abs(got - share) < 0.08, (lineage, got)
    fine = simulate(inputs, lineage_labels=False)
    assert (fine.X != panel.X).nnz == 0 and fine.obs["true_stage"].equals(obs["true_stage"])
    assert (map_labels(fine.obs["cell_type"], table)[0]["stage"].to_numpy() == obs["true_stage"].astype(str)).all()
    assert fine.uns["simulation"]["lineage_labels"] is False
    with pytest.raises(InputError, match="'b_cell' is a lineage stage"):
        simulate(inputs, stages=["naive_b", "b_cell"])


def test_stage_weights_replace_the_tissue_composition(inputs):
    adata = simulate(inputs, stages=["naive_b", "neutrophil"], stage_weights={"naive_b": 9.0, "neutrophil": 1.0},
                     cells_per_donor=200)
    share = (adata.obs["true_stage"] == "naive_b").mean()
    assert 0.75 < share < 0.97
