"""Rule planted_factor_programs: are the leading factors of the planted head's rank-r surrogate enriched for the
planted marker programs?"""

import logging

from fmextract import logs
from fmextract.features import FeatureMap
from fmextract.io import write_tsv
from fmextract.planted import factor_programs
from fmextract.stages import load_marker_programs

logs.start(snakemake)
log = logging.getLogger("planted")

fmap = FeatureMap.load(snakemake.input.feature_map)
programs = load_marker_programs(snakemake.input.programs)
in_panel = {p: [g for g in genes if g in set(fmap.genes)] for p, genes in programs.items()}
n_factors = sum(len(g) >= 2 for g in in_panel.values())  # one factor per planted program the panel can show
table = factor_programs(fmap, programs, n_factors=n_factors, n_top_genes=snakemake.params.n_top_genes)
best = table.sort_values("q_value", kind="stable").groupby("factor").head(1).sort_values("factor")
log.info("heads %s, rank %s: best program per factor\n%s", fmap.meta.get("heads"), fmap.meta.get("rank"),
         best[["factor", "program", "overlap", "n_top", "q_value"]].to_string(index=False))
log.info("%d of %d factors enriched (q < 0.05) for a planted program; %d distinct programs", (best["q_value"] < 0.05).sum(),
         len(best), best.loc[best["q_value"] < 0.05, "program"].nunique())
write_tsv(table, snakemake.output[0])
