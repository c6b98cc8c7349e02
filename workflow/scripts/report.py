"""Rule figures: draw the report's figures from the result tables."""

from fmextract import logs, plots
from fmextract.io import read_tsv

logs.start(snakemake)
out = snakemake.output
plots.manifold_views(read_tsv(snakemake.input.latent), out.manifold)
plots.benchmark_boxplots(read_tsv(snakemake.input.metrics), read_tsv(snakemake.input.stats), out.benchmark,
                         reference=snakemake.params.reference)
plots.runtime_bars(read_tsv(snakemake.input.runtime_summary), out.runtime)
plots.compression_plot(read_tsv(snakemake.input.compression), out.compression, endpoint=snakemake.params.compression_endpoint)
plots.factor_bars(read_tsv(snakemake.input.ablation), out.factors)
