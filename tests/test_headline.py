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
    assert sentences[0] == ("Over 12 donor-holdout splits and 2 endpoints (paired two-sided Wilcoxon, BH q < 0.05), "
                            "2 of 4 methods beat `extracted` on at least one endpoint: control_perfect (control) "
                            "(2 of 2; by up to 0.300 on stage bal. acc.) and scvi (1 of 2; by up to 0.050 on stage "
                            "bal. acc.).")
    assert sentences[1] == "`extracted` beats 1 on at least one endpoint: pca (2 of 2; by up to 0.200 on stage bal. acc.)."
    assert sentences[2] == "Not distinguishable from `extracted` on any endpoint: svd."


def test_no_winner_is_said_so():
    stats = stats_table()
    stats = stats[stats["median_diff"] > 0]
    assert "no method beats `extracted` on any endpoint" in benchmark_sentences(stats, summary_table(), "extracted")[0]


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
    assert text.startswith("A gain is credited to attention in 1 of 2 attribution comparisons: external/cell "
                           "spearman vs adaptor_raw (+0.200, CI 0.100 to 0.300)")
    none = attribution_sentence(table.assign(verdict="not resolved"))
    assert none.startswith("No gain is credited to attention") and "not resolved: 2" in none
    tables = {"stats": stats_table(), "summary": summary_table(), "validation": validation_table()}
    assert len(headline(tables, reference="extracted")) == 4
    assert len(headline({**tables, "attribution": table}, reference="extracted")) == 5


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
