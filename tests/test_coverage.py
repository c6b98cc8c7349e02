"""Label coverage: which parts of the pipeline each label reaches, and the acceptance test on Tabula Sapiens v2 labels.

The acceptance test runs config/paper.yaml's own prepare (its panel keys, its stage table, its data.lineage_labels) on
a CELLxGENE-layout stand-in whose immune labels and donors x tissues follow Tabula Sapiens v2 (standin labels=ts_v2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from fmextract import data, stages
from fmextract.adaptor import balanced_sample
from fmextract.coverage import label_coverage
from fmextract.standin import OTHER_TYPES, write_standin

SUBTYPES = {"cd4_cd8": {"positive": ["cd4_t", "naive_cd4_t", "memory_cd4_t"], "negative": ["cd8_t", "naive_cd8_t"]}}


def toy_obs() -> pd.DataFrame:
    rows = [("B cell", "b_cell", "b_plasma", "D1", 6), ("naive B cell", "naive_b", "b_plasma", "D1", 2),
            ("CD4-positive, alpha-beta T cell", "cd4_t", "t_nk", "D2", 7), ("naive CD8", "naive_cd8_t", "t_nk", "D2", 5),
            ("dendritic cell", None, "monocyte_macrophage_dc", "D1", 3), ("B cell", "b_cell", "b_plasma", "D2", 4)]
    obs = pd.DataFrame([(lab, st, br, d) for lab, st, br, d, n in rows for _ in range(n)],
                       columns=["cell_type", "stage", "branch", "donor"])
    obs["tissue"] = "blood"
    obs["cell_type_ontology_term_id"] = obs["cell_type"].map({"B cell": "CL:0000236"}).fillna("")
    return obs


def test_coverage_rows_parts_and_absent_stages(stage_table):
    obs = toy_obs()
    unmapped = pd.DataFrame({"label": ["fibroblast"], "ontology_id": ["CL:0000057"], "n_cells": [9]})
    info = stages.stage_info(stage_table)
    cov = label_coverage(obs, unmapped, SUBTYPES, info, lineage=["b_cell", "cd4_t"], min_cells=5, benchmark=True,
                         reference_donors=["D1"], cell_per_stage=3, seed=0,
                         ontology_key="cell_type_ontology_term_id").set_index(["label", "stage"], drop=False)
    assert cov["n_cells"].sum() == len(obs) + 9
    b = cov.loc[("B cell", "b_cell")]
    assert (b["n_cells"], b["ontology_id"], b["mapping"], b["anchor_cells"]) == (10, "CL:0000236", "lineage stage", 6)
    assert b["stage_endpoints"] and b["branch_endpoints"] and b["cd4_cd8"] == ""
    assert cov.loc[("CD4-positive, alpha-beta T cell", "cd4_t"), "cd4_cd8"] == "positive"
    assert cov.loc[("naive CD8", "naive_cd8_t"), ["cd4_cd8", "anchor_cells"]].tolist() == ["negative", 5]
    dc = cov[cov["label"] == "dendritic cell"].iloc[0]
    assert dc["mapping"] == "branch only" and dc["branch_endpoints"] and not dc["stage_endpoints"]
    fib = cov[cov["label"] == "fibroblast"].iloc[0]
    assert fib["mapping"] == "unmapped" and not fib["branch_endpoints"] and fib["anchor_cells"] == 0
    absent = cov[cov["mapping"] == "absent"]  # listed by the endpoint, lacking in the panel: a row, not a stop
    assert absent.set_index("stage")["cd4_cd8"].to_dict() == {"cd8_t": "negative", "memory_cd4_t": "positive",
                                                              "naive_cd4_t": "positive"}
    assert (absent["n_cells"] == 0).all() and (absent["label"] == "").all()
    # the adaptor column is exactly rule adaptor's draw: stage-balanced over the reference donors' staged cells
    ref = obs[(obs["donor"] == "D1") & obs["stage"].notna()]
    drawn = ref.iloc[balanced_sample(ref["stage"], per_label=3, seed=0)]
    assert cov.loc[("B cell", "b_cell"), "cell_adaptor_cells"] == (drawn["cell_type"] == "B cell").sum() == 3
    assert cov["cell_adaptor_cells"].sum() == len(drawn) == 5
    other = label_coverage(obs, unmapped, SUBTYPES, info, lineage=["b_cell"], min_cells=5, benchmark=False)
    assert not other[["branch_endpoints", "stage_endpoints"]].any().any() and (other["cd4_cd8"] == "").all()
    assert other["cell_adaptor_cells"].sum() == 0 and "absent" not in set(other["mapping"])


@pytest.fixture(scope="module")
def ts_v2_prepared(root, tmp_path_factory):
    """A Tabula Sapiens v2-labelled stand-in through config/paper.yaml's prepare, under both lineage switches."""
    paper = yaml.safe_load((root / "config" / "paper.yaml").read_text())
    spec, cfg = paper["panels"]["reference"], paper["data"]
    tmp = tmp_path_factory.mktemp("ts_v2")
    write_standin("reference", tmp / "ts.h5ad", n_cells=2500, n_genes=520, seed=3, labels="ts_v2")
    keys = {k: spec.get(k) for k in ("donor_key", "cell_type_key", "tissue_key", "counts_layer", "gene_symbol_column",
                                     "assay_key", "keep_assays")}
    out = {}
    for mode in (cfg["lineage_labels"], "branch"):
        table = stages.lineage_as(stages.load_label_table(root / cfg["stage_table"]), mode)
        unmapped, _ = data.prepare_panel(tmp / "ts.h5ad", table, tmp / f"{mode}.h5ad", source="ts", min_donors=3,
                                         ontology_key=spec["cell_type_ontology_key"], **keys)
        out[mode] = label_coverage(data.read_obs(tmp / f"{mode}.h5ad"), unmapped, paper["endpoints"]["subtypes"],
                                   stages.stage_info(table), lineage=list(stages.lineage_pools(table)),
                                   min_cells=paper["anchors"]["min_cells"], benchmark=True)
    return paper, out


def shares(cov: pd.DataFrame) -> dict[str, float]:
    """Acceptance shares: immune cells with a stage; CD4-/CD8-positive-labelled cells in the CD4/CD8 endpoint;
    monocyte- and macrophage-labelled cells in mono/macro."""
    immune = cov[~cov["label"].isin(list(OTHER_TYPES)) & (cov["n_cells"] > 0)]
    share = lambda rows, used: float(rows.loc[used, "n_cells"].sum() / rows["n_cells"].sum())
    cd = immune[immune["label"].str.contains("CD4-positive|CD8-positive")]
    mm = immune[immune["label"].str.contains("monocyte|macrophage")]
    return {"staged": share(immune, immune["stage"].notna()), "cd4_cd8": share(cd, cd["cd4_cd8"] != ""),
            "mono_macro": share(mm, mm["mono_macro"] != ""), "n_cd4_cd8": cd["n_cells"].sum()}


def test_ts_v2_labels_reach_the_paper_endpoints(ts_v2_prepared):
    paper, out = ts_v2_prepared
    assert paper["data"]["lineage_labels"] == "stage"
    got = shares(out["stage"])
    print("data.lineage_labels stage:", got, "branch:", shares(out["branch"]))
    assert got["n_cd4_cd8"] > 200  # the stand-in carries the atlas's lineage CD4/CD8 labels and thymocytes
    assert got["staged"] >= 0.9 and got["cd4_cd8"] >= 0.9 and got["mono_macro"] >= 0.9, got
    cov = out["stage"].set_index("label")
    assert cov.loc["CD4-positive, alpha-beta thymocyte", "cd4_cd8"] == "positive"
    assert cov.loc["CD8-positive, alpha-beta thymocyte", "cd4_cd8"] == "negative"
    assert cov.loc["B cell", "stage"] == "b_cell" and cov.loc["monocyte", "mono_macro"] == "negative"
    no_lineage = cov.loc[cov.index.isin(["leukocyte", "myeloid leukocyte", "hematopoietic cell"]), "mapping"]
    assert len(no_lineage) >= 2 and (no_lineage == "unmapped").all()  # dropped, and counted
    # the old reading (data.lineage_labels: branch): most immune cells without a stage, CD4/CD8 a small minority
    old = shares(out["branch"])
    assert old["staged"] < 0.7 and old["cd4_cd8"] < 0.3, old
    assert np.isclose(out["branch"]["n_cells"].sum(), out["stage"]["n_cells"].sum())
