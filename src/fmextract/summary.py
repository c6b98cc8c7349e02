"""results/summary.md: the run's headline tables rendered as Markdown from the result TSVs (no new numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.headline import FAMILY_ORDER, TITLES, at_paper_precision, headline

DIRECT_CONTROLS = ["adaptor_raw", "raw_mlp", "raw", "control_untrained"]


def fmt(value, digits: int = 3) -> str:
    """A cell: numbers to `digits` significant decimals (small p/q in scientific notation), NaN as an em dash."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "—"
        if value == int(value):
            return f"{int(value):,}"
        return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits else f"{value:.{digits}f}"
    return "—" if value is None or (isinstance(value, str) and value == "") else str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (all columns, index dropped)."""
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(str(c).replace("|", "\\|") for c in frame.columns) + " |"
    rule = "|" + "|".join(":---" if frame[c].dtype == object else "---:" for c in frame.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def benchmark_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean over splits, methods x endpoints, grouped by BH family (reference first), by stage accuracy within."""
    wide = summary.pivot(index="method", columns="endpoint", values="mean")
    wide = wide[[e for e in TITLES if e in wide.columns]]
    family = summary.drop_duplicates("method").set_index("method")["family"]
    wide.insert(0, "family", family.reindex(wide.index))
    key = wide["family"].map(FAMILY_ORDER).fillna(9)
    sort_by = wide.get("stage_balanced_accuracy", pd.Series(0.0, index=wide.index)).fillna(-1)
    wide = wide.assign(_k=key, _s=-sort_by).sort_values(["_k", "_s"], kind="stable").drop(columns=["_k", "_s"])
    return wide.rename(columns=TITLES).reset_index()


def family_counts(stats: pd.DataFrame) -> pd.DataFrame:
    """Per BH family: comparisons, and how many the reference wins / loses at q < 0.05."""
    q = stats["q_value"] < 0.05
    grouped = stats.assign(win=q & (stats["median_diff"] > 0), loss=q & (stats["median_diff"] < 0)).groupby("family")
    out = grouped.agg(methods=("method", "nunique"), comparisons=("method", "size"), reference_better=("win", "sum"),
                      reference_worse=("loss", "sum"))
    return out.reset_index().sort_values("family", key=lambda c: c.map(FAMILY_ORDER), kind="stable")


def pseudotime_table(summary: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """Pseudotime endpoints by how the pseudotime is made (supervised readout vs unsupervised), with q vs reference."""
    sub = summary[summary["endpoint"].str.startswith("pseudotime")]
    wide = sub.pivot(index="method", columns="endpoint", values="mean")
    group = sub.drop_duplicates("method").set_index("method")[["pseudotime", "family"]]
    q = stats[stats["endpoint"] == "pseudotime_depth_abs_spearman"].set_index("method")["q_value"]
    out = group.join(wide).join(q.rename("q vs reference (|ρ|)"))
    out = out.sort_values(["pseudotime", "pseudotime_depth_abs_spearman"], ascending=[True, False], kind="stable")
    return out.rename(columns={**TITLES, "pseudotime": "pseudotime is"}).reset_index()


def direct_controls(stats: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Reference minus each direct-learnability control, per endpoint: median split difference (q)."""
    sub = stats[stats["method"].isin(DIRECT_CONTROLS) & stats["endpoint"].isin(TITLES)]
    cell = sub.assign(cell=[f"{fmt(d)} ({'q ' + fmt(q)})" for d, q in zip(sub["median_diff"], sub["q_value"])])
    wide = cell.pivot(index="method", columns="endpoint", values="cell")
    wide = wide[[e for e in TITLES if e in wide.columns]].rename(columns=TITLES)
    order = [m for m in DIRECT_CONTROLS if m in wide.index]
    return wide.loc[order].rename_axis(f"{reference} − method").reset_index()


def compaction_table(compression: pd.DataFrame) -> pd.DataFrame:
    """One row per rung: sizes, losses of the paper's endpoints vs the paper's previous rung (the headline), vs our
    previous rung and vs pooled, non-inferior endpoints."""
    per = compression.drop_duplicates("variant").sort_values("rung")
    n = per["n_loss_endpoints"].max()
    margin = per["noninferiority_margin"].iloc[0]
    cols = {"rung": "rung", "variant": "variant", "size_mb": "MB on disk", "float32_bytes": "float32 bytes",
            "paper_previous": "paper's previous rung",
            "losses_vs_paper_previous": f"losses vs paper's previous (of {fmt(n)})",
            "losses_vs_previous": f"losses vs previous (of {fmt(n)})", "losses_vs_pooled": f"losses vs pooled (of {fmt(n)})",
            "noninferior_endpoints": f"non-inferior vs pooled (margin {margin:g})"}
    return per[[c for c in cols if c in per]].rename(columns=cols)


def factor_summary(ablation: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """(a sentence on the core and its shares, the core-sufficiency table per endpoint)."""
    shares = ablation[ablation["analysis"] == "core_share"]
    loo = ablation[ablation["analysis"] == "leave_one_out"].drop_duplicates("factors")
    parts = []
    for row in shares.itertuples():
        parts.append(f"{row.surrogate}: {100 * row.value:.1f}% (core factors present: {row.n_factors})")
    cum = {k: loo.loc[loo["rank"] == k, "cumulative_share"] for k in (4, 10, 16)}
    tops = ", ".join(f"top {k}: {100 * v.iloc[0]:.1f}%" for k, v in cum.items() if len(v))
    core = shares["factors"].iloc[0] if len(shares) else "—"
    sentence = (f"Core factors (top by leave-one-out impact): {core}. Share of the impact carried by the core — "
                f"{'; '.join(parts)}. Cumulative share of the rank-r surrogate's factors: {tops}.")
    suff = ablation[ablation["analysis"] == "core_sufficiency"][["endpoint", "full", "value", "drop"]]
    suff = suff.rename(columns={"full": "all factors", "value": "core only", "drop": "drop"})
    suff["endpoint"] = suff["endpoint"].map(TITLES).fillna(suff["endpoint"])
    return sentence, suff


def parameters_table(parameters: pd.DataFrame) -> pd.DataFrame:
    """Per method: fitted-once parameters, per-split embedding parameters, and per-task readouts (range, total)."""
    rows = []
    for method, sub in parameters.groupby("method", sort=True):
        pick = lambda role: sub.loc[sub["role"] == role, "n_parameters"]
        readout = pick("readout")
        rows.append({"method": method, "adaptor (fitted once)": pick("adaptor").sum() if len(pick("adaptor")) else np.nan,
                     "embedding (per split)": pick("embedding").sum() if len(pick("embedding")) else np.nan,
                     "readouts per task (per split)": (f"{fmt(readout.min())}–{fmt(readout.max())}" if len(readout) > 1
                                                       else fmt(readout.sum()) if len(readout) else "—"),
                     "readouts total": readout.sum() if len(readout) else np.nan})
    return pd.DataFrame(rows)


def verdicts(validation: pd.DataFrame) -> pd.DataFrame:
    """Each validation panel's verdict (the `all_gates` rows), per adaptor where the table has both."""
    cols = ["panel", *(["adaptor"] if "adaptor" in validation else []), "value", "passed"]
    v = validation[validation["metric"] == "all_gates"][cols]
    return v.rename(columns={"value": "share of gates passed", "passed": "verdict passes"})


def attribution_section(attribution: pd.DataFrame | None) -> list[str]:
    """The attribution section: the one-sentence answer (does attention add to raw expression on the external
    panel?) and the table of extracted − comparator per gate with its donor-clustered bootstrap CI."""
    from fmextract.attribution import attention_sentence

    if attribution is None:
        return []
    return ["## Attribution: attention vs raw expression through the same gates",
            attention_sentence(attribution),
            "Difference = pooled drift − comparator, oriented so that positive favours attention on every gate (for "
            "the permutation p: comparator − extracted); 95 % CI from a donor-clustered bootstrap; the verdict reads "
            "\"credited to attention\" only where the CI excludes zero in attention's favour.",
            markdown_table(attribution)]


def render(tables: dict[str, pd.DataFrame], *, reference: str, title: str) -> str:
    """The whole summary.md."""
    summary, stats = tables["summary"], tables["stats"]
    n_splits = int(summary["n"].max()) if len(summary) else 0
    sentence, sufficiency = factor_summary(tables["factors"])
    sections = [
        f"# {title}",
        "Rendered by rule `summary_markdown` from `results/tables/*.tsv` (no number here is computed anywhere else). "
        f"Up to {n_splits} donor-holdout splits; `{reference}` is the reference of every comparison.",
        "**In short.** " + " ".join(headline(tables, reference=reference)),
        "## Benchmark: mean over splits",
        "Grouped by BH family: `paper` = the paper's comparison (the reference vs the baselines), `controls` "
        "(control_*, adaptor_raw, raw_mlp), `extracted_variants`.",
        markdown_table(benchmark_table(summary)),
        "## Statistics by BH family (paired two-sided Wilcoxon over splits, BH within each family)",
        markdown_table(family_counts(stats)),
        "## Pseudotime: supervised readouts vs unsupervised methods",
        "Supervised: a readout trained on the training donors' depth labels (every embedding, mlp_probe, raw_mlp); "
        "unsupervised: DPT and Palantir, donor-local, no labels. The two groups answer different questions.",
        markdown_table(pseudotime_table(summary, stats)),
        "## Direct-learnability controls",
        f"Median split difference `{reference}` − control (BH q in the controls family); positive favours "
        f"`{reference}`. `adaptor_raw`: the same cell-trained adaptor and readouts on raw panel expression (identity "
        "operator); `raw_mlp`: a genes → 64 MLP trained per split (the paper's S22).",
        markdown_table(direct_controls(stats, reference)),
        "## Compaction chain (every rung retrains its adaptor and readouts)",
        markdown_table(compaction_table(tables["compression"])),
        "## Factor ablation",
        sentence,
        "Core sufficiency (only the core factors kept, probes fixed), mean over splits:",
        markdown_table(sufficiency),
        "## Trainable parameters",
        markdown_table(parameters_table(tables["parameters"])),
        "## Manifold validation verdicts (every gate must pass)",
        markdown_table(verdicts(tables["validation"])),
        *attribution_section(tables.get("attribution")),
        "## Paper vs this run (`paper_comparison.tsv`)",
        "Ours at the decimals the paper prints.",
        markdown_table(at_paper_precision(tables["paper_comparison"])),
    ]
    return "\n\n".join(sections) + "\n"
