"""Rules compression_split, factor_ablation_split, compression_table, factor_table."""

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd

from fmextract import logs
from fmextract.io import read_tsv, write_tsv

logs.to_file(snakemake.log[0])
log = logging.getLogger("interpret")
rule = snakemake.rule


def split_data():
    """The split's train view, test view and truth (same views as the method rule)."""
    from fmextract.methods import split_views

    panel = ad.read_h5ad(snakemake.input.h5ad)
    return split_views(panel, read_tsv(snakemake.input.splits), snakemake.wildcards.split,
                       max_train_cells=snakemake.params.max_train_cells, seed=snakemake.params.seed)


if rule == "compression_split":
    from fmextract.adaptor import Adaptor
    from fmextract.features import FeatureMap
    from fmextract.methods import evaluate

    train, test, truth = split_data()
    rows = []
    for variant, map_path, adaptor_path in zip(snakemake.params.variants, snakemake.input.maps, snakemake.input.adaptors):
        fmap, adaptor = FeatureMap.load(map_path), Adaptor.load(adaptor_path)
        z = {f"Z_{name}": adaptor.transform(fmap.transform(a[:, fmap.genes].X)) for name, a in (("train", train), ("test", test))}
        values, _ = evaluate("embedding", z, train, truth, subtypes=snakemake.params.subtypes, seed=snakemake.params.seed)
        rows += [{"split": snakemake.wildcards.split, "variant": variant, "endpoint": k, "value": v} for k, v in values.items()]
    write_tsv(pd.DataFrame(rows), snakemake.output[0])

elif rule == "factor_ablation_split":
    from fmextract.adaptor import Adaptor
    from fmextract.features import FeatureMap, without_factor
    from fmextract.metrics import endpoint_metrics
    from fmextract.readouts import fit_readouts

    train, test, truth = split_data()
    fmap, adaptor = FeatureMap.load(snakemake.input.feature_map), Adaptor.load(snakemake.input.adaptor)
    subtypes, seed = snakemake.params.subtypes, snakemake.params.seed
    embed = lambda m, a: adaptor.transform(m.transform(a[:, m.genes].X))
    readouts = fit_readouts(embed(fmap, train), train.obs, subtypes=subtypes, seed=seed)  # held fixed below
    score = lambda m: endpoint_metrics(truth, readouts.predict(embed(m, test)), subtypes=subtypes, donor_key="donor")
    full = score(fmap)
    rows = []
    for k in range(fmap.left.shape[1]):
        ablated = score(without_factor(fmap, k))
        for endpoint in snakemake.params.endpoints:
            if endpoint in full:
                rows.append({"split": snakemake.wildcards.split, "factor": k, "endpoint": endpoint, "full": full[endpoint],
                             "ablated": ablated.get(endpoint, np.nan)})
    table = pd.DataFrame(rows)
    table["drop"] = table["full"] - table["ablated"]
    write_tsv(table, snakemake.output[0])

elif rule == "compression_table":
    from fmextract.stats import paired_tests

    per_split = pd.concat([read_tsv(p) for p in snakemake.input.per_split], ignore_index=True)
    sizes = {v: os.path.getsize(p) / 1e6 for v, p in zip(snakemake.params.variants, snakemake.input.maps)}
    full = snakemake.params.variants[0]
    tests = paired_tests(per_split.rename(columns={"variant": "method"}), reference=full)
    summary = per_split.groupby(["variant", "endpoint"], as_index=False)["value"].agg(mean="mean", sd="std", n="count")
    summary = summary.merge(tests[["method", "endpoint", "median_diff", "p_value", "q_value"]].rename(columns={"method": "variant"}),
                            on=["variant", "endpoint"], how="left")
    summary["size_mb"] = summary["variant"].map(sizes)
    summary["rank"] = summary["variant"].str.extract(r"rank(\d+)$")[0].astype(float)
    summary["reference"] = full
    order = {v: i for i, v in enumerate(snakemake.params.variants)}
    summary = summary.sort_values(["endpoint", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c, kind="stable")
    cols = ["variant", "rank", "size_mb", "endpoint", "mean", "sd", "n", "reference", "median_diff", "p_value", "q_value"]
    log.info("operator sizes (MB): %s", sizes)
    write_tsv(summary[cols], snakemake.output[0])

elif rule == "factor_table":
    from fmextract.features import FeatureMap
    from fmextract.interpret import factor_top_genes, impact_shares, program_enrichment
    from fmextract.stages import load_marker_programs
    from fmextract.stats import bh_q_values

    per_split = pd.concat([read_tsv(p) for p in snakemake.input.per_split], ignore_index=True)
    impact = per_split.groupby("factor")["drop"].mean()
    table = impact_shares(impact)
    n_top = snakemake.params.n_top_factors
    log.info("top %d factors explain %.1f%% of the ablation impact", n_top, 100 * table["cumulative_share"].iloc[n_top - 1])
    fmap = FeatureMap.load(snakemake.input.feature_map)
    programs = load_marker_programs(snakemake.input.programs)
    enrich = []
    for row in table.head(n_top).itertuples():
        top = factor_top_genes(fmap, int(row.factor), snakemake.params.n_top_genes)
        e = program_enrichment(top, fmap.genes, programs)
        e.insert(0, "factor", int(row.factor))
        e.insert(1, "factor_rank", int(row.rank))
        e["top_genes"] = ",".join(top)
        enrich.append(e)
    enrich = pd.concat(enrich, ignore_index=True)
    enrich["q_value"] = bh_q_values(enrich["p_value"])  # BH across every factor x program test
    write_tsv(table, snakemake.output.ablation)
    write_tsv(enrich, snakemake.output.programs)
