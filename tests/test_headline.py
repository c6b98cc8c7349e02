"""Headline sentences and grids of the report, rendered from small result tables (no number computed anew)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmextract.headline import (at_paper_precision, attribution_sentence, benchmark_sentences, endpoint_grid,
                                headline, paper_decimals, verdict_grid, verdict_sentences)

ENDPOINTS = ["stage_balanced_accuracy", "branch_macro_f1"]


def stats_table() -> pd.DataFrame:
    """scvi ahead on stage (q 0.01, by 0.05), pca behind on both, svd indistinguishable; control_perfect ahead."""
    rows = [("scvi", "paper", "stage_balanced_accuracy", -0.05, 0.01), ("scvi", "paper", "branch_macro_f1", 0.01, 0.4),
            ("pca", "paper", "stage_balanced_accuracy", 0.2, 0.001), ("pca", "paper", "branch_macro_f1", 0.1, 0.02),
            ("svd", "paper", "stage_balanced_accuracy", 0.01, 0.3), ("svd", "paper", "branch_macro_f1", -0.02, 0.07),
            ("control_perfect", "controls", "stage_balanced_accuracy", -0.3, 0.001),
            ("control_perfect", "controls", "branch_macro_f1", -0.2, 0.001)]
    return pd.DataFrame(rows, columns=["method", "family", "endpoint", "median_diff", "q_value"]).assign(
        reference="extracted")


def summary_table() -> pd.DataFrame:
    methods = {"extracted": "reference", "scvi": "paper", "pca": "paper", "svd": "paper", "control_perfect": "controls"}
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"method": m, "family": f, "endpoint": e, "mean": rng.uniform(), "sd": 0.01, "n": 12}
                         for m, f in methods.items() for e in ENDPOINTS])


def validation_table(adaptor: bool = False) -> pd.DataFrame:
    rows = []
    verdicts = {"internal": True, "external": True, "control_null_branch": False, "control_untrained_model": True,
                "planted_model": True}
    for panel, ok in verdicts.items():
        rows += [{"metric": "trustworthiness", "panel": panel, "value": 0.9 if ok else 0.5, "threshold": 0.8,
                  "passed": ok},
                 {"metric": "trustworthiness_ruler", "panel": panel, "value": 0.7, "threshold": np.nan, "passed": None},
                 {"metric": "all_gates", "panel": panel, "value": 1.0 if ok else 0.0, "threshold": 1.0, "passed": ok}]
    table = pd.DataFrame(rows)
    if adaptor:
        table = pd.concat([table.assign(adaptor="anchor"), table.assign(adaptor="cell", passed=table["passed"].map(
            lambda x: x if x is None else False))], ignore_index=True)
    return table


def test_benchmark_sentences_name_winners_losers_and_ties():
    sentences = benchmark_sentences(stats_table(), summary_table(), "extracted")
    assert sentences == [
        "Over 12 donor-holdout splits and 2 endpoints (paired two-sided Wilcoxon, BH q < 0.05). The paper's baselines "
        "(3): 1 beats `extracted` on at least one endpoint: scvi (1 of 2; by up to 0.050 on stage bal. acc.); "
        "`extracted` beats 1: pca (2 of 2; by up to 0.200 on stage bal. acc.); not distinguishable: svd.",
        "Controls (1): 1 beats `extracted` on at least one endpoint: control_perfect (2 of 2); `extracted` beats none.",
    ]


def test_a_baselines_endpoints_outside_the_papers_eight_count_in_its_own_family():
    """dpt is scored on pseudotime only (BH family paper_other_endpoints): it is still one of the paper's baselines."""
    stats = pd.concat([stats_table(), pd.DataFrame([{"method": "dpt", "family": "paper_other_endpoints", "endpoint":
                       "pseudotime_depth_abs_spearman", "median_diff": 0.3, "q_value": 0.01, "reference": "extracted"}])])
    first = benchmark_sentences(stats, summary_table(), "extracted")[0]
    assert "The paper's baselines (4)" in first and "`extracted` beats 2: pca (2 of 2" in first and "dpt (1 of 1;" in first


def test_no_winner_is_said_so():
    stats = stats_table()
    stats = stats[stats["median_diff"] > 0]
    first = benchmark_sentences(stats, summary_table(), "extracted")[0]
    assert "The paper's baselines (3): none beats `extracted`; `extracted` beats 1: pca" in first


def test_verdict_sentences_with_and_without_the_adaptor_column():
    assert verdict_sentences(validation_table()) == [
        "Manifold verdicts, every gate must pass: internal passes and external passes; 1 of 2 negative controls fail "
        "as they must (control_untrained_model passes); the planted positive control passes."]
    by_adaptor = verdict_sentences(validation_table(adaptor=True))
    assert len(by_adaptor) == 2 and by_adaptor[0].startswith("Manifold verdicts (anchor-trained adaptor)")
    assert "internal fails and external fails" in by_adaptor[1] and "2 of 2 negative controls fail" in by_adaptor[1]


def test_attribution_sentence_only_when_the_table_exists():
    assert attribution_sentence(None) is None
    table = pd.DataFrame({"panel": ["external", "external"], "adaptor": ["cell", "anchor"], "gate": ["spearman"] * 2,
                          "comparator": ["adaptor_raw", "raw"], "extracted": [0.5, 0.4], "comparator_value": [0.3, 0.5],
                          "difference": [0.2, -0.1], "ci_low": [0.1, -0.2], "ci_high": [0.3, 0.0],
                          "verdict": ["credited to attention", "comparator ahead"]})
    text = attribution_sentence(table)
    assert text == ("A gain is credited to attention in 1 of 2 attribution comparisons (credited to attention: 1; "
                    "comparator ahead: 1): external/cell spearman vs adaptor_raw (+0.200, CI 0.100 to 0.300).")
    many = attribution_sentence(pd.concat([table.assign(verdict="credited to attention", difference=d)
                                           for d in (0.1, 0.4, 0.3)], ignore_index=True))
    assert "6 of 6" in many and many.count("+0.400") == 2 and "+0.100" not in many and many.endswith("3 more in attribution.tsv.")
    none = attribution_sentence(table.assign(verdict="not resolved"))
    assert none.startswith("No gain is credited to attention") and "not resolved: 2" in none
    tables = {"stats": stats_table(), "summary": summary_table(), "validation": validation_table()}
    assert len(headline(tables, reference="extracted")) == 3  # the two families, the verdict
    assert len(headline({**tables, "attribution": table}, reference="extracted")) == 4


def test_endpoint_grid_marks_significant_differences():
    wide, marks = endpoint_grid(summary_table(), stats_table())
    assert list(wide.index[:1]) == ["extracted"] and wide.index[-1] == "control_perfect"
    assert list(wide.columns) == ["branch_macro_f1", "stage_balanced_accuracy"]  # display order
    assert marks.loc["scvi", "stage_balanced_accuracy"] == "ahead" and marks.loc["scvi", "branch_macro_f1"] == ""
    assert (marks.loc["pca"] == "behind").all() and (marks.loc["extracted"] == "").all()


@pytest.mark.parametrize("adaptor", [False, True])
def test_verdict_grid_is_panels_by_gates(adaptor):
    values, passed = verdict_grid(validation_table(adaptor))
    assert list(values.columns) == ["trustworthiness", "all_gates"]  # ungated metrics left out, the verdict last
    assert len(values) == (10 if adaptor else 5)
    key = ("control_null_branch", "anchor") if adaptor else "control_null_branch"
    assert not passed.loc[key, "all_gates"] and passed.loc["internal" if not adaptor else ("internal", "anchor"),
                                                           "all_gates"]


def test_ours_at_the_papers_precision():
    assert paper_decimals("0.979") == 3 and paper_decimals("12") == 0 and paper_decimals("1e-5") is None
    table = pd.DataFrame({"result": ["a", "b", "c"], "paper": ["0.979", "0.90", "3e-4"],
                          "ours": [0.9985495985, 0.5, 0.000123456]})
    assert at_paper_precision(table)["ours"].tolist() == ["0.999", "0.50", "0.000123"]


def test_nothing_resolved_says_why_with_few_splits():
    stats = stats_table().assign(q_value=0.5)
    summary = summary_table().assign(n=3)
    assert benchmark_sentences(stats, summary, "extracted") == [
        "Over 3 donor-holdout splits and 2 endpoints (paired two-sided Wilcoxon, BH q < 0.05), no method differs from "
        "`extracted` on any endpoint (4 compared; with 3 splits no paired Wilcoxon test can reach p < 0.05, the "
        "smallest two-sided p is 0.25)."]
