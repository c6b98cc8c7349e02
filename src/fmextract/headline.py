"""The run's answer from its result tables: headline sentences and the two grids that lead the report.

Rendered, never computed anew: which methods beat the reference (`stats.reference`, paired Wilcoxon over splits,
BH q < 0.05) and by how much, which it beats (stats.tsv, summary.tsv); each panel's manifold verdict
(manifold_validation.tsv, per adaptor when the table has an `adaptor` column); whether any gain is credited to
attention (attribution.tsv, when the run makes it). Used by results/report.html, the landing page of
`snakemake --report` and results/summary.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.stats import OTHER_ENDPOINTS

#: BH q below which a difference counts
ALPHA = 0.05
#: endpoint -> short title, in display order
TITLES = {
    "branch_balanced_accuracy": "branch bal. acc.", "branch_macro_f1": "branch F1",
    "stage_balanced_accuracy": "stage bal. acc.", "stage_macro_f1": "stage F1", "cd4_cd8_auroc": "CD4/CD8 AUROC",
    "cd4_cd8_balanced_accuracy": "CD4/CD8 bal. acc.", "mono_macro_auroc": "mono/macro AUROC",
    "mono_macro_balanced_accuracy": "mono/macro bal. acc.",
    "pseudotime_depth_spearman": "ρ pseudotime", "pseudotime_depth_abs_spearman": "|ρ| pseudotime",
}
#: BH families in display order
FAMILY_ORDER = {"reference": 0, "paper": 1, "controls": 2, "extracted_variants": 3}
#: how the headline names each BH family
FAMILY_LABELS = {"paper": "The paper's baselines", "controls": "Controls", "extracted_variants": "Extracted variants"}
#: attribution comparisons named one by one in the headline (the largest credited gains; the rest are counted)
N_NAMED = 3
#: attribution.tsv verdict that credits a gain to attention
CREDITED = "credited to attention"


def _join(items: list[str]) -> str:
    """a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _title(endpoint: str) -> str:
    return TITLES.get(endpoint, endpoint)


def comparisons(stats: pd.DataFrame) -> pd.DataFrame:
    """Per compared method: endpoints it is ahead of / behind the reference at BH q < ALPHA, and its largest lead and
    deficit (median split difference) with their endpoints. `median_diff` is reference - method."""
    rows = []
    for method, sub in stats[stats["endpoint"].isin(TITLES)].groupby("method", sort=False):
        significant = sub["q_value"] < ALPHA
        ahead = sub[significant & (sub["median_diff"] < 0)]
        behind = sub[significant & (sub["median_diff"] > 0)]
        family = sub["family"].iloc[0].removesuffix(OTHER_ENDPOINTS) if "family" in sub else ""  # one per method
        row = {"method": method, "family": family, "endpoints": len(sub),
               "ahead": len(ahead), "behind": len(behind)}
        if len(ahead):
            best = ahead.loc[ahead["median_diff"].idxmin()]
            row.update(lead=-float(best["median_diff"]), lead_endpoint=best["endpoint"])
        if len(behind):
            worst = behind.loc[behind["median_diff"].idxmax()]
            row.update(deficit=float(worst["median_diff"]), deficit_endpoint=worst["endpoint"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=["method", "family", "endpoints", "ahead", "behind", "lead", "lead_endpoint",
                                      "deficit", "deficit_endpoint"])
    return out.sort_values(["family", "method"], key=lambda c: c.map(FAMILY_ORDER).fillna(9) if c.name == "family"
                           else c, kind="stable").reset_index(drop=True)


def _listing(rows: pd.DataFrame, count: str, amount: str, endpoint: str, detailed: bool) -> str:
    """'name (k of n; by up to x on endpoint), ...' (the amount only where `detailed`)."""
    return _join([f"{r['method']} ({r[count]} of {r['endpoints']}"
                  + (f"; by up to {r[amount]:.3f} on {_title(r[endpoint])}" if detailed else "") + ")"
                  for _, r in rows.iterrows()])


def _family_sentence(sub: pd.DataFrame, family: str, reference: str) -> str:
    """One BH family against the reference: who beats it, whom it beats, who is not distinguishable. The paper's
    baselines (or a run without families) carry the size of each lead; controls and variants their counts only."""
    detailed = family in ("paper", "")
    label = FAMILY_LABELS.get(family, family or "Compared methods")
    winners = sub[sub["ahead"] > 0].sort_values("lead", ascending=False, kind="stable")
    beaten = sub[sub["behind"] > 0].sort_values(["behind", "deficit"], ascending=False, kind="stable")
    tied = sub[(sub["ahead"] == 0) & (sub["behind"] == 0)]
    parts = [f"{len(winners)} beat{'s' if len(winners) == 1 else ''} `{reference}` on at least one endpoint: "
             f"{_listing(winners, 'ahead', 'lead', 'lead_endpoint', detailed)}" if len(winners)
             else f"none beats `{reference}`"]
    parts.append(f"`{reference}` beats {len(beaten)}: {_listing(beaten, 'behind', 'deficit', 'deficit_endpoint', detailed)}"
                 if len(beaten) else f"`{reference}` beats none")
    if len(tied):
        parts.append(f"not distinguishable: {_join(tied['method'].tolist())}")
    return f"{label} ({len(sub)}): " + "; ".join(parts) + "."


def benchmark_sentences(stats: pd.DataFrame, summary: pd.DataFrame, reference: str) -> list[str]:
    """Per BH family (the paper's baselines first): who beats the reference and by how much, whom it beats, and who is
    not distinguishable from it."""
    n_splits = int(summary["n"].max()) if len(summary) else 0
    c = comparisons(stats)
    if c.empty:
        return [f"No method was compared with `{reference}` (stats.tsv has no rows)."]
    n_endpoints = int(c["endpoints"].max())
    intro = f"Over {n_splits} donor-holdout splits and {n_endpoints} endpoints (paired two-sided Wilcoxon, BH q < {ALPHA:g})"
    if not ((c["ahead"] > 0) | (c["behind"] > 0)).any():
        smallest = 2 / 2 ** n_splits if n_splits else 1.0  # the exact test's smallest two-sided p over n pairs
        why = (f"; with {n_splits} splits no paired Wilcoxon test can reach p < {ALPHA:g}, the smallest two-sided p "
               f"is {smallest:.3g}" if smallest >= ALPHA else "")
        return [intro + f", no method differs from `{reference}` on any endpoint ({len(c)} compared{why})."]
    families = c["family"].fillna("")
    sentences = [_family_sentence(c[families == f], f, reference) for f in dict.fromkeys(families)]
    return [f"{intro}. {sentences[0]}", *sentences[1:]]


def _verdict_rows(validation: pd.DataFrame) -> pd.DataFrame:
    """The `all_gates` rows (one per panel, or per panel and adaptor), with each panel's role."""
    from fmextract.validation import panel_role

    v = validation[validation["metric"] == "all_gates"].copy()
    v["role"] = v["panel"].map(panel_role)
    v["passed"] = v["passed"].map(lambda x: str(x).lower() in ("true", "1", "1.0"))
    return v


def verdict_sentences(validation: pd.DataFrame) -> list[str]:
    """Each panel's manifold verdict (every gate must pass): real panels, controls that must fail, the positive
    control; per adaptor when the table has an `adaptor` column."""
    v = _verdict_rows(validation)
    if v.empty:
        return ["The manifold validation has no verdicts."]
    groups = [(None, v)] if "adaptor" not in v.columns else [(a, v[v["adaptor"] == a]) for a in v["adaptor"].unique()]
    sentences = []
    for adaptor, sub in groups:
        which = f" ({adaptor}-trained adaptor)" if adaptor is not None else ""
        real = sub[sub["role"] == "real"]
        words = [f"{r.panel} {'passes' if r.passed else 'fails'}" for r in real.itertuples()]
        text = f"Manifold verdicts{which}, every gate must pass: " + (_join(words) if words else "no real panel")
        controls = sub[sub["role"] == "control"]
        if len(controls):
            wrong = controls.loc[controls["passed"], "panel"].tolist()
            text += (f"; {len(controls) - len(wrong)} of {len(controls)} negative controls fail as they must"
                     + (f" ({_join(wrong)} {'passes' if len(wrong) == 1 else 'pass'})" if wrong else ""))
        positive = sub[sub["role"] == "positive_control"]
        if len(positive):
            ok = bool(positive["passed"].all())
            text += f"; the planted positive control {'passes' if ok else 'fails'}"
        sentences.append(text + ".")
    return sentences


def attribution_sentence(attribution: pd.DataFrame | None) -> str | None:
    """Whether any gain is credited to attention (attribution.tsv verdicts); None when the run has no such table."""
    if attribution is None:
        return None
    if attribution.empty:
        return "Attribution: no comparison was made (attribution.tsv has no rows)."
    credited = attribution[attribution["verdict"] == CREDITED]
    counts = attribution["verdict"].value_counts()
    tally = "; ".join(f"{k}: {v}" for k, v in counts.items())
    if credited.empty:
        return (f"No gain is credited to attention: none of the {len(attribution)} attribution comparisons "
                f"({tally}).")
    largest = credited.sort_values("difference", ascending=False, kind="stable")
    parts = [f"{r.panel}/{r.adaptor} {r.gate} vs {r.comparator} ({r.difference:+.3f}, CI {r.ci_low:.3f} to "
             f"{r.ci_high:.3f})" for r in largest.head(N_NAMED).itertuples()]
    if len(largest) > N_NAMED:
        parts.append(f"{len(largest) - N_NAMED} more in attribution.tsv")
    return (f"A gain is credited to attention in {len(credited)} of {len(attribution)} attribution comparisons "
            f"({tally}): {_join(parts)}.")


def headline(tables: dict[str, pd.DataFrame], *, reference: str) -> list[str]:
    """The headline sentences of the run, in order: benchmark, manifold verdicts, attribution (when present)."""
    sentences = benchmark_sentences(tables["stats"], tables["summary"], reference)
    sentences += verdict_sentences(tables["validation"])
    credit = attribution_sentence(tables.get("attribution"))
    return sentences + ([credit] if credit else [])


def endpoint_grid(summary: pd.DataFrame, stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean over splits, methods x endpoints; the matching marks: "ahead" / "behind" where the method is ahead of /
    behind the reference at BH q < ALPHA, "" otherwise). Rows by BH family (reference first), then by stage
    balanced accuracy."""
    wide = summary.pivot(index="method", columns="endpoint", values="mean")
    wide = wide[[e for e in TITLES if e in wide.columns]]
    family = summary.drop_duplicates("method").set_index("method")["family"].reindex(wide.index)
    key = family.map(FAMILY_ORDER).fillna(9)
    order = wide.get("stage_balanced_accuracy", pd.Series(0.0, index=wide.index)).fillna(-1)
    wide = wide.loc[pd.DataFrame({"k": key, "s": -order}).sort_values(["k", "s"], kind="stable").index]
    marks = pd.DataFrame("", index=wide.index, columns=wide.columns)
    significant = stats[(stats["q_value"] < ALPHA) & stats["endpoint"].isin(wide.columns)]
    for r in significant.itertuples():
        if r.method in marks.index:
            marks.loc[r.method, r.endpoint] = "ahead" if r.median_diff < 0 else "behind"
    return wide, marks


def verdict_grid(validation: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(gate values, pass/fail), rows panel (or panel / adaptor), columns the gated metrics then `all_gates`."""
    gated = validation[validation["passed"].notna() & validation["threshold"].notna()].copy()
    gated["passed"] = gated["passed"].map(lambda x: str(x).lower() in ("true", "1", "1.0"))
    index = ["panel", "adaptor"] if "adaptor" in gated.columns else ["panel"]
    metrics = [m for m in dict.fromkeys(gated["metric"]) if m != "all_gates"] + ["all_gates"]
    values = gated.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    passed = gated.pivot_table(index=index, columns="metric", values="passed", aggfunc="first", sort=False)
    cols = [m for m in metrics if m in values.columns]
    return values[cols], passed[cols].astype(object).where(passed[cols].notna(), None)


def paper_decimals(paper: object) -> int | None:
    """Decimals of a number as the paper prints it ("0.979" -> 3, "12" -> 0); None if it is not a plain decimal."""
    text = str(paper).strip()
    try:
        float(text)
    except ValueError:
        return None
    if "e" in text.lower():
        return None
    return len(text.split(".")[1]) if "." in text else 0


def at_paper_precision(comparison: pd.DataFrame) -> pd.DataFrame:
    """paper_comparison with `ours` printed at the decimals of the paper's value beside it (3 significant digits where
    the paper's value is not a plain decimal)."""
    out = comparison.copy()
    out["ours"] = [(f"{o:.{d}f}" if (d := paper_decimals(p)) is not None else f"{o:.3g}") if np.isfinite(o) else "—"
                   for p, o in zip(out["paper"], out["ours"].astype(float))]
    out["paper"] = out["paper"].astype(str)
    return out
