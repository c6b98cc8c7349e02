"""paper_comparison: every paper figure has a rule; rows appear only when their source exists; panel names old/new."""

from pathlib import Path

import numpy as np
import pandas as pd

from fmextract.comparison import COLUMNS, RULES, compare

ROOT = Path(__file__).resolve().parents[1]
FIGURES = pd.read_csv(ROOT / "resources" / "paper_figures.tsv", sep="\t", dtype=str)


def validation(panel: str) -> pd.DataFrame:
    rows = [("trustworthiness", 0.9, 0.8, True), ("spearman_random_holdout", 0.41, 0.2, True),
            ("spearman_donor_holdout", 0.42, 0.2, True), ("spearman_branch_holdout", 0.1, 0.2, False),
            ("blocked_permutation_p", 0.0005, 0.001, True), ("spearman_donor_holdout_d3", 0.3, np.nan, None)]
    return pd.DataFrame([{"metric": m, "panel": panel, "value": v, "threshold": t, "passed": p} for m, v, t, p in rows])


def tables() -> dict[str, pd.DataFrame]:
    summary = pd.DataFrame([
        ("extracted", "cd4_cd8_auroc", 0.8), ("extracted", "pseudotime_depth_spearman", 0.3),
        ("raw", "pseudotime_depth_spearman", 0.5), ("dpt", "pseudotime_depth_spearman", 0.2),
        ("control_untrained", "pseudotime_depth_spearman", 0.9), ("raw_mlp", "cd4_cd8_auroc", 0.7),
    ], columns=["method", "endpoint", "mean"]).assign(n=12)
    stats = pd.DataFrame([
        ("pseudotime_depth_spearman", "raw", "paper", -0.2, 0.01), ("pseudotime_depth_spearman", "dpt", "paper", 0.1, 0.04),
        ("pseudotime_depth_spearman", "control_untrained", "controls", -0.6, 0.5),
        ("cd4_cd8_auroc", "mlp_probe", "paper", 0.1, 0.01), ("stage_macro_f1", "mlp_probe", "paper", -0.1, 0.02),
    ], columns=["endpoint", "method", "family", "median_diff", "q_value"])
    parameters = pd.DataFrame([("extracted", "adaptor", "once", "adaptor", 4000), ("extracted", "readout", "per_split", "branch", 77),
                               ("extracted", "readout", "per_split", "depth", 11)],
                              columns=["method", "role", "fitted", "component", "n_parameters"])
    splits = pd.DataFrame([("s0", "d1", "test", "all_method"), ("s0", "d2", "train", "all_method"),
                           ("s1", "d2", "test", "core"), ("s1", "d1", "train", "core")],
                          columns=["split", "donor", "role", "block"])
    return {"summary": summary, "stats": stats, "parameters": parameters, "splits": splits,
            "validation": validation("reference")}


def test_every_paper_figure_has_a_rule():
    assert set(FIGURES["id"]) == set(RULES) and FIGURES["id"].is_unique
    assert len(FIGURES) >= 60 and FIGURES["paper"].notna().all()


def test_rows_only_where_the_source_exists():
    table, skipped = compare(FIGURES, tables())
    assert list(table.columns) == COLUMNS
    got = dict(zip(FIGURES.set_index("result").loc[table["result"], "paper"].index, table["ours"]))
    assert got["internal gates d=10: branch-holdout rho"] == 0.1  # today's panel name `reference` maps to internal
    assert got["benchmark pseudotime vs depth (Table 11): best comparator, signed"] == 0.5  # controls are not comparators
    assert got["benchmark pseudotime: largest BH q of the head vs each comparator"] == 0.04
    assert got["vs MLP probe: endpoints where extracted is better (BH)"] == 1  # one win, one loss
    assert got["trainable parameters per task readout: largest"] == 77 and got["adaptor parameters (fitted once)"] == 4000
    assert got["unique test donors over all splits (paper: 88)"] == 2
    assert got["unique test donors over the all-method splits (paper: 40)"] == 1
    assert "fails" in table.loc[table["result"] == "internal gates d=10: branch-holdout rho", "note"].iloc[0]
    # no external panel, no compression or factor table, no head screen in this run: those rows are left out
    assert {"external_trustworthiness", "compaction_losses_rank64", "factor_top4_share", "head_screen_1_rho"} <= set(skipped)
    assert len(table) + len(skipped) == len(FIGURES)


def test_new_panel_names_win_over_old():
    t = tables()
    t["validation"] = pd.concat([validation("reference"), validation("internal").assign(value=0.77),
                                 validation("external"), validation("control_mismatched_compartment")])
    table, skipped = compare(FIGURES, t)
    row = table[table["result"] == "internal gates d=10: trustworthiness"].iloc[0]
    assert row["ours"] == 0.77 and "internal" in row["note"]
    assert "external_trustworthiness" not in skipped and "mismatched_rho_branch" not in skipped


def test_both_adaptors_attribution_and_the_papers_chain():
    """Anchor-trained rows are the headline, the cell-trained head has its own; attribution rows carry the verdict;
    compaction losses are those against the paper's previous rung."""
    t = tables()
    t["validation"] = pd.concat([validation("internal").assign(adaptor="anchor"),
                                 validation("internal").assign(adaptor="cell", value=0.55),
                                 validation("immune").assign(adaptor="anchor"),
                                 pd.DataFrame([{"metric": "residualised_spearman", "panel": "immune", "adaptor": "anchor",
                                                "value": 0.47, "threshold": np.nan, "passed": None}])])
    t["attribution"] = pd.DataFrame([{"panel": "external", "adaptor": "anchor", "gate": "spearman_donor_holdout",
                                      "comparator": "raw_expression", "extracted": 0.5, "comparator_value": 0.6,
                                      "difference": -0.1, "ci_low": -0.2, "ci_high": -0.05, "verdict": "comparator ahead"}])
    t["compression"] = pd.DataFrame([
        {"rung": 0, "variant": "pooled_drift", "paper_previous": None, "losses_vs_paper_previous": np.nan},
        {"rung": 4, "variant": "top1_rank16", "paper_previous": None, "losses_vs_paper_previous": np.nan},
        {"rung": 5, "variant": "top1_sparse", "paper_previous": "top1_rank32", "losses_vs_paper_previous": 3.0},
    ]).assign(n_loss_endpoints=8, losses_vs_pooled=5.0, noninferiority_margin=0.02, noninferior_endpoints=1.0)
    table, _ = compare(FIGURES, t)
    ours = table.set_index("result")["ours"]
    assert ours["internal gates d=10: trustworthiness"] == 0.9 and ours["cell-trained head: trustworthiness"] == 0.55
    assert ours["zero-shot multi-donor: residualised rho"] == 0.47
    row = table[table["result"].str.startswith("attribution, external panel: donor-holdout")].iloc[0]
    assert row["ours"] == -0.1 and "comparator ahead" in row["note"]
    sparse = table[table["result"].str.startswith("compaction losses: hard-sparse")].iloc[0]
    assert sparse["ours"] == 3 and "top1_rank32" in sparse["note"]
