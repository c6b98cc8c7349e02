"""summary.md: Markdown tables rendered from the result TSVs, pseudotime groups apart, every section present."""

import numpy as np
import pandas as pd

from fmextract.compaction import chain_table
from fmextract.summary import benchmark_table, fmt, markdown_table, pseudotime_table, render

METHODS = {"extracted": ("reference", "supervised"), "raw": ("paper", "supervised"), "dpt": ("paper", "unsupervised"),
           "adaptor_raw": ("controls", "supervised"), "extracted_top1": ("extracted_variants", "supervised")}


def summary() -> pd.DataFrame:
    rows = []
    for i, (m, (family, pt)) in enumerate(METHODS.items()):
        endpoints = ["pseudotime_depth_spearman", "pseudotime_depth_abs_spearman"]
        if m != "dpt":
            endpoints += ["stage_balanced_accuracy", "cd4_cd8_auroc"]
        for e in endpoints:
            rows.append({"method": m, "endpoint": e, "mean": 0.1 * (i + 1), "sd": 0.01, "median": 0.1, "n": 12,
                         "family": family, "pseudotime": pt if e.startswith("pseudotime") else np.nan})
    return pd.DataFrame(rows)


def stats() -> pd.DataFrame:
    s = summary()
    s = s[s["method"] != "extracted"].rename(columns={"mean": "mean_method"})
    return s.assign(median_diff=0.05, q_value=0.01, reference="extracted")


def test_fmt_and_markdown_table():
    assert fmt(0.12345) == "0.123" and fmt(2.0) == "2" and fmt(0.0) == "0" and fmt(3e-7) == "3.00e-07"
    assert fmt(np.nan) == "—" and fmt(True) == "yes" and fmt(12345) == "12,345" and fmt("a|b") == "a\\|b"
    md = markdown_table(pd.DataFrame({"m": ["x", "y"], "v": [0.5, np.nan]}))
    assert md.splitlines() == ["| m | v |", "|:---|---:|", "| x | 0.500 |", "| y | — |"]


def test_benchmark_groups_by_family_and_pseudotime_groups_apart():
    b = benchmark_table(summary())
    assert b["method"].tolist()[0] == "extracted" and b["family"].tolist() == [
        "reference", "paper", "paper", "controls", "extracted_variants"]
    p = pseudotime_table(summary(), stats())
    assert p["pseudotime is"].tolist()[-1] == "unsupervised" and (p["pseudotime is"] == "unsupervised").sum() == 1


def test_render_has_every_section():
    per_split = pd.DataFrame([{"split": f"s{i}", "variant": v, "endpoint": "stage_balanced_accuracy", "value": 0.5 + d}
                              for i in range(6) for v, d in (("pooled_drift", 0), ("top1", -0.01))])
    compression = chain_table(per_split, ["pooled_drift", "top1"], margin=0.02, loss_endpoints=["stage_balanced_accuracy"])
    compression = compression.assign(size_mb=0.1, float32_bytes=1000)
    factors = pd.DataFrame([
        {"analysis": "leave_one_out", "surrogate": "top1_rank64", "factors": "3", "rank": 1, "cumulative_share": 0.4,
         "core": True, "impact": 0.1},
        {"analysis": "core_share", "surrogate": "top1_rank64", "factors": "3+1", "n_factors": 2, "value": 0.6},
        {"analysis": "core_sufficiency", "surrogate": "top1_rank64", "factors": "3+1", "endpoint": "cd4_cd8_auroc",
         "full": 0.8, "value": 0.7, "drop": 0.1}])
    parameters = pd.DataFrame([("extracted", "adaptor", "once", "adaptor", 4000), ("extracted", "readout", "per_split", "b", 77)],
                              columns=["method", "role", "fitted", "component", "n_parameters"])
    validation = pd.DataFrame([{"metric": "all_gates", "panel": "internal", "value": 1.0, "passed": True}])
    comparison = pd.DataFrame([{"result": "r", "paper": "0.5", "ours": 0.4, "unit": "u", "note": "n"}])
    text = render({"summary": summary(), "stats": stats(), "compression": compression, "factors": factors,
                   "parameters": parameters, "validation": validation, "paper_comparison": comparison},
                  reference="extracted", title="t")
    for heading in ("Benchmark", "BH family", "supervised readouts vs unsupervised", "Direct-learnability",
                    "Compaction chain", "Factor ablation", "Trainable parameters", "verdicts", "Paper vs this run"):
        assert heading in text
    assert "| adaptor_raw | 0.050 (q 0.010) |" in text  # reference minus the control, with its q
    assert "losses vs pooled (of 1)" in text and "4,000" in text and "60.0%" in text


def test_attribution_section_says_in_one_sentence_whether_attention_adds():
    from fmextract.summary import attribution_section

    rows = pd.DataFrame([{"panel": "external", "adaptor": a, "gate": "spearman_donor_holdout",
                          "comparator": "raw_expression", "extracted": 0.5, "comparator_value": 0.6, "difference": -0.1,
                          "ci_low": -0.2, "ci_high": -0.05, "verdict": "comparator ahead"} for a in ("anchor", "cell")])
    text = "\n".join(attribution_section(rows))
    assert "attention does not add to raw expression on the external panel" in text
    assert "raw expression ahead: spearman_donor_holdout (anchor), spearman_donor_holdout (cell)" in text
    assert attribution_section(None) == []
