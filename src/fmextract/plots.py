"""Figures of the report: manifold views, benchmark boxplots with BH marks, manifold verdicts, compression, factor
ablation, runtime."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


#: box colours of the benchmark figure: the reference, the controls BH family, every other method
BENCHMARK_COLOURS = {"reference": "#d95f02", "controls": "#7570b3", "methods": "#a6cee3"}


def _save(fig: plt.Figure, path: str) -> None:
    """Save a figure atomically and close it."""
    from fmextract.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _colours(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    cats = sorted(values.astype(str).unique())
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    lookup = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    return np.array([lookup[v] for v in values.astype(str)]), cats


def q_mark(q: float) -> str:
    """Significance mark of a BH q value."""
    return "***" if q <= 1e-3 else "**" if q <= 1e-2 else "*" if q <= 0.05 else "ns"


def manifold_views(latent: pd.DataFrame, path: str) -> None:
    """Anchors' latent coordinates (first two principal axes) coloured by branch, stage and donor, one row per panel."""
    zcols = [c for c in latent.columns if c.startswith("z") and c[1:].isdigit()]
    Z = latent[zcols].to_numpy(dtype=float)
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    centred = Z - Z.mean(axis=0)
    axes2 = np.linalg.svd(centred, full_matrices=False)[2][:2]
    xy = centred @ axes2.T
    panels = list(dict.fromkeys(latent["panel"]))
    fig, axes = plt.subplots(len(panels), 3, figsize=(19, 4.6 * len(panels)), squeeze=False)
    for r, panel in enumerate(panels):
        sel = (latent["panel"] == panel).to_numpy()
        for c, key in enumerate(("branch", "stage", "donor")):
            ax = axes[r, c]
            colours, cats = _colours(latent.loc[sel, key])
            ax.scatter(xy[sel, 0], xy[sel, 1], c=colours, s=14, linewidths=0)
            ax.set_title(f"{panel}: anchors by {key}", fontsize=11)
            ax.set_xlabel("latent axis 1")
            ax.set_ylabel("latent axis 2")
            for cat, col in zip(cats, _colours(pd.Series(cats))[0]):
                ax.scatter([], [], c=[col], s=20, label=cat)
            ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                      ncol=int(np.ceil(len(cats) / 22)), title=key, title_fontsize=7)
    fig.suptitle("Latent manifold of the frozen head (anchor = donor x tissue x stage mean)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _save(fig, path)


def benchmark_boxplots(metrics: pd.DataFrame, stats: pd.DataFrame, path: str, *, reference: str) -> None:
    """One panel per endpoint: per-split values of each method; BH q of the paired test vs the reference above each box."""
    endpoints = sorted(metrics["endpoint"].unique())
    family = stats.drop_duplicates("method").set_index("method")["family"].to_dict() if "family" in stats else {}
    ncol = 3
    nrow = int(np.ceil(len(endpoints) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(6 * ncol, 4.2 * nrow), squeeze=False)
    for ax, endpoint in zip(axes.ravel(), endpoints):
        sub = metrics[metrics["endpoint"] == endpoint]
        order = sub.groupby("method")["value"].median().sort_values(ascending=False).index.tolist()
        data = [sub.loc[sub["method"] == m, "value"].dropna().to_numpy() for m in order]
        box = ax.boxplot(data, patch_artist=True, widths=0.6)
        for patch, m in zip(box["boxes"], order):
            patch.set_facecolor(BENCHMARK_COLOURS["reference" if m == reference else
                                                  "controls" if family.get(m) == "controls" else "methods"])
        ax.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right", fontsize=8)
        ax.set_title(endpoint, fontsize=10)
        st = stats[stats["endpoint"] == endpoint].set_index("method")
        top = max((d.max() for d in data if len(d)), default=1.0)
        for i, m in enumerate(order, start=1):
            if m in st.index and np.isfinite(st.loc[m, "q_value"]):
                ax.text(i, top, q_mark(st.loc[m, "q_value"]), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(top=top + 0.12 * (top - min((d.min() for d in data if len(d)), default=0) + 1e-9))
    for ax in axes.ravel()[len(endpoints):]:
        ax.axis("off")
    handles = [matplotlib.patches.Patch(facecolor=c, label=reference if k == "reference" else k)
               for k, c in BENCHMARK_COLOURS.items()]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"Donor-holdout benchmark (marks: BH q vs {reference}, paired Wilcoxon)", fontsize=12, x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save(fig, path)


def verdict_heatmap(validation: pd.DataFrame, path: str) -> None:
    """Manifold verdicts: panels (and adaptors) x gates, green where the gate passes, red where it fails, with the
    gate's value in each cell; the last column is the verdict (every gate must pass)."""
    from fmextract.headline import verdict_grid

    values, passed = verdict_grid(validation)
    rows = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in values.index]
    colour = {True: "#a1d99b", False: "#fc9272", None: "#f0f0f0"}
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * values.shape[1], 0.9 + 0.42 * len(rows)))
    for i in range(len(rows)):
        for j, metric in enumerate(values.columns):
            ok = passed.iat[i, j]
            ax.add_patch(matplotlib.patches.Rectangle((j, i), 1, 1, facecolor=colour[ok], edgecolor="white"))
            text = ("pass" if ok else "fail") if metric == "all_gates" else f"{values.iat[i, j]:.3g}"
            ax.text(j + 0.5, i + 0.5, text if ok is not None else "—", ha="center", va="center", fontsize=8)
    ax.set_xlim(0, values.shape[1])
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, ["verdict" if m == "all_gates" else m for m in values.columns],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(rows)) + 0.5, rows, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    handles = [matplotlib.patches.Patch(facecolor=colour[True], label="pass"),
               matplotlib.patches.Patch(facecolor=colour[False], label="fail")]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.set_title("Manifold verdicts: panel x gate", fontsize=11, pad=22)
    _save(fig, path)


def runtime_bars(summary: pd.DataFrame, path: str) -> None:
    """Campaign cost per method as the paper reports it: one-time builds + `campaign_splits` per-split jobs (stacked)."""
    t = summary.sort_values("campaign_seconds")
    n = int(t["campaign_splits"].iloc[0]) if len(t) else 0
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(t) + 1.8))
    ax.barh(t["method"], t["one_time_seconds"], color="#7570b3", label="one-time builds (caches, fitted-once parts)")
    ax.barh(t["method"], t["campaign_seconds"] - t["one_time_seconds"], left=t["one_time_seconds"], color="#1b9e77",
            label=f"{n} per-split jobs")
    for y, (total, ratio) in enumerate(zip(t["campaign_seconds"], t["campaign_ratio"])):
        if np.isfinite(ratio):
            ax.annotate(f"{ratio:.1f}x", (total, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlabel(f"seconds ({n}-split campaign; ratio to {t['reference'].iloc[0] if len(t) else 'reference'})")
    ax.set_title("Runtime per method, as the paper reports it")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def compression_plot(compression: pd.DataFrame, path: str, *, endpoint: str) -> None:
    """File size (MB, log) versus mean endpoint value of each operator variant."""
    sub = compression[compression["endpoint"] == endpoint]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(sub["size_mb"], sub["mean"], s=40, color="#e7298a")
    for row in sub.itertuples():
        ax.annotate(row.variant, (row.size_mb, row.mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))  # 0.01, 0.02, 0.05, 0.1 ...
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("operator file size, MB (log scale)")
    ax.set_ylabel(f"mean {endpoint}")
    ax.set_title("Compression: size vs performance")
    _save(fig, path)


def factor_bars(ablation: pd.DataFrame, path: str, *, top: int = 16) -> None:
    """Impact of removing each of the top factors (leave-one-out rows of factor_ablation.tsv; core factors darker),
    with the cumulative share on a second axis."""
    loo = ablation[ablation["analysis"] == "leave_one_out"].drop_duplicates("factors")
    sub = loo.nsmallest(top, "rank")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = np.where(sub["core"].astype(bool), "#1b7837", "#a6dba0")
    ax.bar(sub["rank"].astype(str), sub["impact"], color=colours)
    ax.set_xlabel("factor (ranked by impact; dark: the core)")
    ax.set_ylabel("impact (mean endpoint drop when removed)")
    ax.set_xticks(range(len(sub)), [f"F{f}" for f in sub["factors"]], rotation=45, fontsize=8)
    twin = ax.twinx()
    twin.plot(range(len(sub)), sub["cumulative_share"], color="black", marker="o", ms=3)
    twin.set_ylabel("cumulative share of impact")
    twin.set_ylim(0, 1.05)
    ax.set_title("Leave-one-factor-out ablation of the rank-r surrogate")
    _save(fig, path)
