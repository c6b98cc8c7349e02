"""paper_comparison.tsv: each figure the paper reports (resources/paper_figures.tsv) beside ours, from the result
tables, so a reader of a paper-config run sees at once what reproduced and what did not.

Every row of the resource table has a rule here (`RULES`: id -> function of the tables). A rule returns
``(ours, note)`` or None when its source table, panel, method or column is absent from this run (then the row is
left out and `compare` lists it with the reason). Validation panels are looked up under today's and tomorrow's names
(`internal` or `reference`, ...), so the table works before and after the validation tables are renamed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from fmextract.stats import OTHER_ENDPOINTS

COLUMNS = ["result", "paper", "ours", "unit", "note"]
#: a rule's answer: (our value, a note saying where it comes from or how it differs), or None (not computable here)
Answer = tuple[float, str] | None
Tables = dict[str, pd.DataFrame]

#: validation panel names, newest first
PANELS = {
    "internal": ["internal", "reference"],
    "external": ["external"],
    "mismatched": ["control_mismatched_compartment"],
    "immune": ["immune"],
    "communication": ["communication_internal", "communication"],
    "communication_external": ["communication_external"],
}


def _validation(tables: Tables, panel: str, metrics: list[str], note: str = "", adaptor: str = "anchor") -> Answer:
    """A manifold_validation.tsv value: the first of `metrics` found on the first present name of `panel`, under the
    `adaptor`-trained adaptor (tables without an adaptor column: the anchor-trained one)."""
    v = tables.get("validation")
    if v is None:
        return None
    if "adaptor" in v:
        v = v[v["adaptor"] == adaptor]
        note = f"{note} ({adaptor}-trained adaptor)"
    for name in PANELS[panel]:
        for metric in metrics:
            hit = v[(v["panel"] == name) & (v["metric"] == metric)]
            if len(hit):
                passed = hit["passed"].iloc[0]
                verdict = "" if pd.isna(passed) or passed == "" else f" ({'passes' if str(passed) == 'True' else 'fails'})"
                return float(hit["value"].iloc[0]), f"manifold_validation: {name} / {metric}{verdict}{note}"
    return None


def _mean(tables: Tables, method: str, endpoint: str, note: str = "") -> Answer:
    """Mean over splits of a method's endpoint (summary.tsv)."""
    s = tables.get("summary")
    hit = None if s is None else s[(s["method"] == method) & (s["endpoint"] == endpoint)]
    if hit is None or hit.empty:
        return None
    return float(hit["mean"].iloc[0]), f"summary: {method} / {endpoint}, mean of {int(hit['n'].iloc[0])} splits{note}"


def _family(st: pd.DataFrame, family: str) -> pd.Series:
    """Rows of a method family in stats.tsv: the paper's endpoints and the endpoints beside them (pseudotime)."""
    return st["family"].isin([family, family + OTHER_ENDPOINTS])


def _baselines(tables: Tables) -> list[str]:
    """Methods of the paper's BH family (the reference vs the baselines) in stats.tsv."""
    st = tables.get("stats")
    return [] if st is None or "family" not in st else sorted(set(st.loc[_family(st, "paper"), "method"]))


def _best_comparator(tables: Tables, endpoint: str) -> Answer:
    s, methods = tables.get("summary"), _baselines(tables)
    sub = None if s is None else s[(s["endpoint"] == endpoint) & s["method"].isin(methods)]
    if sub is None or sub.empty:
        return None
    best = sub.loc[sub["mean"].idxmax()]
    return float(best["mean"]), f"summary: best of the paper's family on {endpoint} is {best['method']}"


def _max_q(tables: Tables, endpoint: str) -> Answer:
    st = tables.get("stats")
    if st is None or "family" not in st:
        return None
    sub = st[_family(st, "paper") & (st["endpoint"] == endpoint)]
    if sub.empty:
        return None
    better = int((sub["median_diff"] > 0).sum())
    return float(sub["q_value"].max()), (f"stats: paper family, {endpoint}; extracted better than {better} of "
                                         f"{len(sub)} comparators (median split difference > 0)")


def _wins(tables: Tables, method: str) -> Answer:
    """Wins and losses over the paper's endpoints (config endpoints.paper: the rows outside the *_other_endpoints
    families of stats.tsv)."""
    st = tables.get("stats")
    sub = None if st is None else st[(st["method"] == method) & ~st["family"].str.endswith(OTHER_ENDPOINTS)]
    if sub is None or sub.empty:
        return None
    wins = sub[(sub["q_value"] < 0.05) & (sub["median_diff"] > 0)]
    losses = sub[(sub["q_value"] < 0.05) & (sub["median_diff"] < 0)]
    return float(len(wins)), (f"stats: of {len(sub)} endpoints, extracted better on {len(wins)}, worse on "
                              f"{len(losses)} (q < 0.05, family {sub['family'].iloc[0]})")


def _parameters(tables: Tables, method: str, role: str, how: str) -> Answer:
    p = tables.get("parameters")
    if p is None or "role" not in p:
        return None
    sub = p[(p["method"] == method) & (p["role"] == role)]
    if sub.empty:
        return None
    value = {"min": sub["n_parameters"].min, "max": sub["n_parameters"].max, "sum": sub["n_parameters"].sum}[how]()
    return float(value), f"parameters: {method} {role} ({', '.join(sub['component'].astype(str))}; {how})"


def _screen(tables: Tables, rank: int, what: str) -> Answer:
    h = tables.get("screen")
    if h is None:
        return None
    row = h[h["rank"] == rank]
    if row.empty:
        return None
    row = row.iloc[0]
    if what == "rho":
        column = "residualised_spearman" if "residualised_spearman" in h else "ruler_spearman"
        note = "" if column == "residualised_spearman" else " (not residualised: this run's screen has no residualised score)"
    else:
        column, note = "trustworthiness", ""
    return float(row[column]), f"head_screen: our #{rank} is {row['name']}; {column}{note}"


def _losses(tables: Tables, variant_suffix: str) -> Answer:
    """Losses of a rung as the paper counts them: against the previous rung of the paper's chain (BH over its
    endpoints), with our other bases in the note."""
    c = tables.get("compression")
    if c is None or "losses_vs_paper_previous" not in c:
        return None
    sub = c[c["variant"].astype(str).str.endswith(variant_suffix) | (c["variant"] == variant_suffix)]
    sub = sub[(sub["rung"] > 0) & sub["losses_vs_paper_previous"].notna()]
    if sub.empty:
        return None
    row = sub.iloc[0]
    return float(row["losses_vs_paper_previous"]), (
        f"compression: {row['variant']} vs {row['paper_previous']} (the paper's previous rung), BH q < 0.05 and "
        f"worse, of {int(row['n_loss_endpoints'])} endpoints; vs pooled drift: {int(row['losses_vs_pooled'])}; "
        f"non-inferior to pooled (margin {row['noninferiority_margin']:g}) on {int(row['noninferior_endpoints'])}")


def _attribution(tables: Tables, panel: str, gate: str, adaptor: str = "anchor",
                 comparator: str = "raw_expression") -> Answer:
    """Extracted minus a comparator on one gate (attribution.tsv), with its CI and verdict in the note."""
    a = tables.get("attribution")
    hit = None if a is None else a[(a["panel"] == panel) & (a["gate"] == gate) & (a["adaptor"] == adaptor)
                                   & (a["comparator"] == comparator)]
    if hit is None or hit.empty:
        return None
    row = hit.iloc[0]
    return float(row["difference"]), (
        f"attribution: {panel} / {gate}, pooled drift {row['extracted']:.3f} minus {comparator.replace('_', ' ')} "
        f"{row['comparator_value']:.3f}, 95% CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}] ({adaptor}-trained "
        f"adaptors): {row['verdict']}")


def _factor(tables: Tables, analysis: str, column: str, *, rank: int | None = None, endpoint: str | None = None,
            surrogate_contains: str | None = None) -> Answer:
    f = tables.get("factors")
    if f is None or "analysis" not in f:
        return None
    sub = f[f["analysis"] == analysis]
    if rank is not None:
        sub = sub[sub["rank"] == rank]
    if endpoint is not None:
        sub = sub[sub["endpoint"] == endpoint]
    if surrogate_contains is not None:
        sub = sub[sub["surrogate"].astype(str).str.contains(surrogate_contains)]
    if sub.empty:
        return None
    row = sub.iloc[0]
    what = f"cumulative share of the top {rank} factors" if rank is not None else f"factors {row['factors']}"
    return float(row[column]), f"factor_ablation: {analysis} of {row['surrogate']} ({what})"


def _donors(tables: Tables, first_block: bool) -> Answer:
    s = tables.get("splits")
    if s is None:
        return None
    test = s[s["role"] == "test"]
    if first_block and "block" in s:
        test = test[test["block"] == s["block"].iloc[0]]
    return float(test["donor"].nunique()), f"splits: {test['split'].nunique()} splits"


REFERENCE = "extracted"
DIFFERENT = " (paper: LET objective; ours: donor-holdout rho of a refitted d-dim adaptor, not the same measure)"

RULES: dict[str, Callable[[Tables], Answer]] = {
    "internal_trustworthiness": lambda t: _validation(t, "internal", ["trustworthiness"]),
    "internal_rho_random": lambda t: _validation(t, "internal", ["spearman_random_holdout"]),
    "internal_rho_donor": lambda t: _validation(t, "internal", ["spearman_donor_holdout"]),
    "internal_rho_branch": lambda t: _validation(t, "internal", ["spearman_branch_holdout"]),
    "internal_p": lambda t: _validation(t, "internal", ["blocked_permutation_p"]),
    "external_trustworthiness": lambda t: _validation(t, "external", ["trustworthiness"]),
    "external_rho_random": lambda t: _validation(t, "external", ["spearman_random_holdout"]),
    "external_rho_donor": lambda t: _validation(t, "external", ["spearman_donor_holdout"]),
    "external_rho_branch": lambda t: _validation(t, "external", ["spearman_branch_holdout"]),
    "mismatched_trustworthiness": lambda t: _validation(t, "mismatched", ["trustworthiness"]),
    "mismatched_rho_random": lambda t: _validation(t, "mismatched", ["spearman_random_holdout"]),
    "mismatched_rho_donor": lambda t: _validation(t, "mismatched", ["spearman_donor_holdout"]),
    "mismatched_rho_branch": lambda t: _validation(t, "mismatched", ["spearman_branch_holdout"]),
    "zero_shot_rho": lambda t: _validation(t, "immune", ["spearman_zero_shot"]),
    "zero_shot_rho_residualised": lambda t: _validation(t, "immune", ["residualised_spearman"]),
    "zero_shot_trustworthiness": lambda t: _validation(t, "immune", ["trustworthiness"]),
    "zero_shot_p": lambda t: _validation(t, "immune", ["blocked_permutation_p"]),
    "dimension_d3": lambda t: _validation(t, "internal", ["spearman_donor_holdout_d3"], DIFFERENT),
    "dimension_d6": lambda t: _validation(t, "internal", ["spearman_donor_holdout_d6"], DIFFERENT),
    "dimension_d10": lambda t: _validation(t, "internal", ["spearman_donor_holdout_d10"], DIFFERENT),
    "anchor_head_trustworthiness": lambda t: _validation(t, "internal", ["trustworthiness"],
                                                         " (the anchor-trained adaptor of the internal panel)"),
    "cell_head_trustworthiness": lambda t: _validation(t, "internal", ["trustworthiness"],
                                                       " (the cell-trained adaptor on the internal panel's anchors)",
                                                       adaptor="cell"),
    "external_cell_rho_donor": lambda t: _validation(t, "external", ["spearman_donor_holdout"], adaptor="cell"),
    "attribution_external_trustworthiness": lambda t: _attribution(t, "external", "trustworthiness"),
    "attribution_external_rho_donor": lambda t: _attribution(t, "external", "spearman_donor_holdout"),
    "attribution_external_rho_branch": lambda t: _attribution(t, "external", "spearman_branch_holdout"),
    "attribution_external_rho_residualised": lambda t: _attribution(t, "external", "residualised_spearman"),
    "attribution_external_cell_rho_donor": lambda t: _attribution(t, "external", "spearman_donor_holdout", "cell"),
    "attribution_immune_rho": lambda t: _attribution(t, "immune", "spearman_zero_shot"),
    "anchor_head_cd4_cd8": lambda t: _mean(t, "extracted_anchor", "cd4_cd8_auroc"),
    "anchor_head_mono_macro": lambda t: _mean(t, "extracted_anchor", "mono_macro_auroc"),
    "cell_head_cd4_cd8": lambda t: _mean(t, REFERENCE, "cd4_cd8_auroc"),
    "cell_head_mono_macro": lambda t: _mean(t, REFERENCE, "mono_macro_auroc"),
    **{f"head_screen_{k}_{what}": (lambda t, k=k, what=what: _screen(t, k, what))
       for k in range(1, 6) for what in ("rho", "trustworthiness")},
    "pseudotime_signed_head": lambda t: _mean(t, REFERENCE, "pseudotime_depth_spearman"),
    "pseudotime_signed_best_comparator": lambda t: _best_comparator(t, "pseudotime_depth_spearman"),
    "pseudotime_abs_head": lambda t: _mean(t, REFERENCE, "pseudotime_depth_abs_spearman"),
    "pseudotime_abs_best_comparator": lambda t: _best_comparator(t, "pseudotime_depth_abs_spearman"),
    "pseudotime_max_q": lambda t: _max_q(t, "pseudotime_depth_spearman"),
    "benchmark_cd4_cd8_auroc": lambda t: _mean(t, REFERENCE, "cd4_cd8_auroc"),
    "benchmark_mono_macro_auroc": lambda t: _mean(t, REFERENCE, "mono_macro_auroc"),
    "vs_mlp_probe_wins": lambda t: _wins(t, "mlp_probe"),
    "readout_parameters_min": lambda t: _parameters(t, REFERENCE, "readout", "min"),
    "readout_parameters_max": lambda t: _parameters(t, REFERENCE, "readout", "max"),
    "mlp_probe_parameters": lambda t: _parameters(t, "mlp_probe", "readout", "sum"),
    "adaptor_parameters": lambda t: _parameters(t, REFERENCE, "adaptor", "sum"),
    "raw_mlp_cd4_cd8": lambda t: _mean(t, "raw_mlp", "cd4_cd8_auroc"),
    "raw_mlp_head_cd4_cd8": lambda t: _mean(t, REFERENCE, "cd4_cd8_auroc"),
    "raw_mlp_mono_macro": lambda t: _mean(t, "raw_mlp", "mono_macro_auroc"),
    "raw_mlp_head_mono_macro": lambda t: _mean(t, REFERENCE, "mono_macro_auroc"),
    "compaction_losses_top1": lambda t: _first_rung_losses(t),
    "compaction_losses_rank64": lambda t: _losses(t, "_rank64"),
    "compaction_losses_rank32": lambda t: _losses(t, "_rank32"),
    "compaction_losses_sparse": lambda t: _losses(t, "_sparse"),
    "factor_top4_share": lambda t: _factor(t, "leave_one_out", "cumulative_share", rank=4),
    "factor_top10_share": lambda t: _factor(t, "leave_one_out", "cumulative_share", rank=10),
    "factor_top16_share": lambda t: _factor(t, "leave_one_out", "cumulative_share", rank=16),
    "core_branch_full": lambda t: _factor(t, "core_sufficiency", "full", endpoint="branch_balanced_accuracy"),
    "core_branch_core": lambda t: _factor(t, "core_sufficiency", "value", endpoint="branch_balanced_accuracy"),
    "core_cd4_cd8_full": lambda t: _factor(t, "core_sufficiency", "full", endpoint="cd4_cd8_auroc"),
    "core_cd4_cd8_core": lambda t: _factor(t, "core_sufficiency", "value", endpoint="cd4_cd8_auroc"),
    "sparse_core_share": lambda t: _factor(t, "core_share", "value", surrogate_contains="_sparse"),
    "communication_trustworthiness": lambda t: _validation(t, "communication", ["trustworthiness"]),
    "communication_rho": lambda t: _validation(t, "communication", ["spearman_random_holdout"],
                                               " (the paper's 'rho' is not specified; ours: random holdout)"),
    "communication_p": lambda t: _validation(t, "communication", ["blocked_permutation_p"]),
    "communication_external_rho": lambda t: _validation(t, "communication_external", ["spearman_donor_holdout",
                                                                                      "spearman_zero_shot"]),
    "donors_all_splits": lambda t: _donors(t, first_block=False),
    "donors_first_block": lambda t: _donors(t, first_block=True),
}


def _first_rung_losses(tables: Tables) -> Answer:
    """Losses of the best single head: the rung right after pooled drift."""
    c = tables.get("compression")
    if c is None or "rung" not in c or not (c["rung"] == 1).any():
        return None
    return _losses(tables, str(c.loc[c["rung"] == 1, "variant"].iloc[0]))


def compare(figures: pd.DataFrame, tables: Tables) -> tuple[pd.DataFrame, list[str]]:
    """(paper_comparison table, ids left out because this run cannot compute them). Tables absent from the run are
    simply missing from `tables`."""
    unknown = sorted(set(figures["id"]) - set(RULES))
    if unknown:
        raise ValueError(f"paper figures without a comparison rule: {unknown}")
    rows, skipped = [], []
    for fig in figures.itertuples():
        answer = RULES[fig.id](tables)
        if answer is None or not np.isfinite(answer[0]):
            skipped.append(fig.id)
            continue
        rows.append({"result": fig.result, "paper": fig.paper, "ours": answer[0], "unit": fig.unit, "note": answer[1]})
    return pd.DataFrame(rows, columns=COLUMNS), skipped
