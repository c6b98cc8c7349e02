"""Rules figures (the report's figures from the result tables) and report_html (results/report.html, the run's
one-page report, and the headline of the Snakemake report's landing page)."""

from fmextract import logs
from fmextract.io import atomic_path, read_tsv

logs.start(snakemake)
out = snakemake.output

if snakemake.rule == "figures":
    from fmextract import plots

    plots.manifold_views(read_tsv(snakemake.input.latent), out.manifold)
    plots.benchmark_boxplots(read_tsv(snakemake.input.metrics), read_tsv(snakemake.input.stats), out.benchmark,
                             reference=snakemake.params.reference)
    plots.verdict_heatmap(read_tsv(snakemake.input.validation), out.verdicts)
    plots.runtime_bars(read_tsv(snakemake.input.runtime_summary), out.runtime)
    plots.compression_plot(read_tsv(snakemake.input.compression), out.compression,
                           endpoint=snakemake.params.compression_endpoint)
    plots.factor_bars(read_tsv(snakemake.input.ablation), out.factors)

elif snakemake.rule == "report_html":
    import os

    from fmextract.headline import headline
    from fmextract.report import endpoint_view, run_report_html, verdict_view

    tables = {name: read_tsv(snakemake.input[name]) for name in ("summary", "stats", "validation")}
    if snakemake.input.attribution:
        tables["attribution"] = read_tsv(snakemake.input.attribution[0])
    reference = snakemake.params.reference
    sentences = headline(tables, reference=reference)
    inp = snakemake.input
    figures = {"Benchmark: per-split values, BH q vs the reference": inp.benchmark, "Manifold verdicts": inp.verdicts,
               "Manifold: anchors in the latent space": inp.manifold, "Runtime per method": inp.runtime_figure,
               "Compression: size vs performance": inp.compression, "Factor ablation": inp.factors}
    links = {os.path.basename(p).removesuffix(".tsv"): p for p in snakemake.input.tables}
    page = run_report_html(title=snakemake.params.title, sentences=sentences, reference=reference,
                           endpoint=endpoint_view(tables["summary"], tables["stats"]),
                           verdicts=verdict_view(tables["validation"]), figures=figures, tables=links,
                           folder=os.path.dirname(out.html))
    with atomic_path(out.html) as tmp, open(tmp, "w") as fh:
        fh.write(page)
    with atomic_path(out.headline) as tmp, open(tmp, "w") as fh:  # reStructuredText: `x` is emphasis, ``x`` code
        fh.write(" ".join(s.replace("`", "``") for s in sentences) + "\n")
