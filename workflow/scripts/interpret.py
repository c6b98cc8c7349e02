"""Rules compression_split, factor_ablation_split, factor_core_split, compression_table, factor_table,
planted_factor_programs."""

import logging
import os

import pandas as pd

from fmextract import logs
from fmextract.io import read_tsv, write_tsv
from fmextract.splits import job_splits

logs.start(snakemake)
log = logging.getLogger("interpret")
rule = snakemake.rule


def split_data(expression: bool = True):
    """(split, output path, (train view, test view, truth)) for each split of the job (one, or all: splits.jobs), the
    same views as the method rule, rows read from the panel on disk; with `expression=False` obs only (the
    frozen-latent caches hold the rest)."""
    from fmextract.data import open_backed
    from fmextract.methods import split_views

    splits = read_tsv(snakemake.input.splits)
    with open_backed(snakemake.input.h5ad) as panel:
        for split, out in job_splits(snakemake.output[0] if len(snakemake.output) == 1 else list(snakemake.output)):
            yield split, out, split_views(panel, splits, split, max_train_cells=snakemake.params.max_train_cells,
                                          seed=snakemake.params.seed, expression=expression)


def fixed_probe_scorer(map_path, adaptor_path, train, test, truth):
    """(map, score): score(m) = endpoints of map m on the test cells through the map's adaptor and readouts fitted once
    on the training cells under the full map."""
    from fmextract.adaptor import Adaptor
    from fmextract.features import FeatureMap
    from fmextract.interpret import fixed_probe_scorer as scorer

    fmap = FeatureMap.load(map_path)
    score = scorer(fmap, Adaptor.load(adaptor_path), train, subtypes=snakemake.params.subtypes, seed=snakemake.params.seed)
    return fmap, lambda m: score(m, test, truth)


if rule == "compression_split":
    from fmextract.cache import read_rows
    from fmextract.methods import evaluate

    for split, out, (train, test, truth) in split_data(expression=False):
        rows = []
        for variant, latent in zip(snakemake.params.variants, snakemake.input.latents):
            # each rung: its own cell-trained adaptor, folded with its map into a frozen latent computed once ...
            z = {f"Z_{name}": read_rows(latent, a.obs_names) for name, a in (("train", train), ("test", test))}
            values, _ = evaluate("embedding", z, train, truth, subtypes=snakemake.params.subtypes,
                                 seed=snakemake.params.seed)
            rows += [{"split": split, "variant": variant, "endpoint": k, "value": v} for k, v in values.items()]
        write_tsv(pd.DataFrame(rows), out)  # ... and its own readouts, fitted on this split (evaluate)

elif rule == "factor_ablation_split":
    from fmextract.interpret import leave_one_out

    for split, out, (train, test, truth) in split_data():
        tables = []
        for surrogate, map_path, adaptor_path in (
            (snakemake.params.surrogates[0], snakemake.input.feature_map, snakemake.input.adaptor),
            (snakemake.params.surrogates[1], snakemake.input.sparse_map, snakemake.input.sparse_adaptor),
        ):
            fmap, score = fixed_probe_scorer(map_path, adaptor_path, train, test, truth)
            tables.append(leave_one_out(fmap, score).assign(split=split, surrogate=surrogate))
            log.info("%s, %s: %d factors left out in turn", split, surrogate, fmap.n_factors)
        write_tsv(pd.concat(tables, ignore_index=True), out)

elif rule == "factor_core_split":
    from fmextract.adaptor import Adaptor
    from fmextract.features import FeatureMap
    from fmextract.interpret import split_core_subsets

    fmap, adaptor = FeatureMap.load(snakemake.input.feature_map), Adaptor.load(snakemake.input.adaptor)
    for split, out, (train, test, truth) in split_data():
        core, subsets = split_core_subsets(
            fmap, adaptor, train, test, truth, endpoints=snakemake.params.endpoints, n_core=snakemake.params.n_core,
            subtypes=snakemake.params.subtypes, seed=snakemake.params.seed)
        log.info("core factors of %s (top %d by leave-one-out impact on its %d training cells): %s",
                 split, len(core), train.n_obs, core)
        write_tsv(subsets.assign(split=split), out)

elif rule == "compression_table":
    from fmextract.compaction import COLUMNS, chain_table, paper_chain
    from fmextract.features import FeatureMap

    per_split = pd.concat([read_tsv(p) for p in snakemake.input.per_split], ignore_index=True)
    chain = snakemake.params.variants
    table = chain_table(per_split, chain, margin=snakemake.params.margin, loss_endpoints=snakemake.params.paper_endpoints,
                        paper=paper_chain(chain, snakemake.params.base))
    sizes = {}
    for variant, path in zip(snakemake.params.variants, snakemake.input.maps):
        n_weights = FeatureMap.load(path).n_weights
        sizes[variant] = {"size_mb": os.path.getsize(path) / 1e6, "n_weights": n_weights, "float32_bytes": 4 * n_weights}
    table = table.join(pd.DataFrame(sizes).T.astype({"n_weights": int, "float32_bytes": int}), on="variant")
    per_rung = table.drop_duplicates("variant").set_index("variant")
    log.info("compaction chain (size MB on disk, float32 bytes, losses of the paper's endpoints vs the paper's previous "
             "rung / our previous rung / pooled, non-inferior):\n%s",
             per_rung[["paper_previous", "size_mb", "float32_bytes", "losses_vs_paper_previous", "losses_vs_previous",
                       "losses_vs_pooled", "noninferior_endpoints"]].to_string())
    write_tsv(table[COLUMNS], snakemake.output[0])

elif rule == "factor_table":
    from fmextract.features import FeatureMap
    from fmextract.interpret import ablation_table, factor_top_genes, program_enrichment
    from fmextract.stages import load_marker_programs
    from fmextract.stats import bh_q_values

    per_split = pd.concat([read_tsv(p) for p in snakemake.input.per_split], ignore_index=True)
    subsets = pd.concat([read_tsv(p) for p in snakemake.input.subsets], ignore_index=True)
    surrogate, sparse = snakemake.params.surrogates
    table = ablation_table(per_split[per_split["surrogate"] == surrogate], per_split[per_split["surrogate"] == sparse],
                           subsets, endpoints=snakemake.params.endpoints, n_core=snakemake.params.n_top_factors,
                           surrogate=surrogate, sparse_surrogate=sparse)
    shares = table[table["analysis"] == "core_share"]
    log.info("core share of the ablation impact:\n%s", shares[["surrogate", "factors", "n_factors", "value"]].to_string())
    fmap = FeatureMap.load(snakemake.input.feature_map)
    programs = load_marker_programs(snakemake.input.programs)
    ranked = table[table["analysis"] == "leave_one_out"].drop_duplicates("factors").sort_values("rank")
    enrich = []
    for row in ranked.head(snakemake.params.n_top_factors).itertuples():
        top = factor_top_genes(fmap, int(row.factors), snakemake.params.n_top_genes)
        e = program_enrichment(top, fmap.genes, programs)
        e.insert(0, "factor", int(row.factors))
        e.insert(1, "factor_rank", int(row.rank))
        e["top_genes"] = ",".join(top)
        enrich.append(e)
    enrich = pd.concat(enrich, ignore_index=True)
    enrich["q_value"] = bh_q_values(enrich["p_value"])  # BH across every factor x program test
    write_tsv(table, snakemake.output.ablation)
    write_tsv(enrich, snakemake.output.programs)

elif rule == "planted_factor_programs":  # are the planted head's rank-r surrogate's leading factors its programs?
    from fmextract.features import FeatureMap
    from fmextract.interpret import factor_programs
    from fmextract.stages import load_marker_programs

    fmap = FeatureMap.load(snakemake.input.feature_map)
    programs = load_marker_programs(snakemake.input.programs)
    in_panel = {p: [g for g in genes if g in set(fmap.genes)] for p, genes in programs.items()}
    n_factors = sum(len(g) >= 2 for g in in_panel.values())  # one factor per planted program the panel can show
    table = factor_programs(fmap, programs, n_factors=n_factors, n_top_genes=snakemake.params.n_top_genes)
    best = table.sort_values("q_value", kind="stable").groupby("factor").head(1).sort_values("factor")
    log.info("heads %s, rank %s: best program per factor\n%s", fmap.meta.get("heads"), fmap.meta.get("rank"),
             best[["factor", "program", "overlap", "n_top", "q_value"]].to_string(index=False))
    log.info("%d of %d factors enriched (q < 0.05) for a planted program; %d distinct programs",
             (best["q_value"] < 0.05).sum(), len(best), best.loc[best["q_value"] < 0.05, "program"].nunique())
    write_tsv(table, snakemake.output[0])
