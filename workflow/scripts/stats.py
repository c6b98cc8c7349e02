"""Rules collect and stats: join per-split outputs, then paired Wilcoxon + BH (over splits and donors)."""

import json
import logging

import pandas as pd

from fmextract import logs
from fmextract.io import read_tsv, write_tsv

logs.start(snakemake)
log = logging.getLogger("stats")
rule = snakemake.rule

if rule == "collect":
    metrics = pd.concat([read_tsv(p) for p in snakemake.input.metrics], ignore_index=True)
    from fmextract.runtime import split_seconds

    infos = []
    for info_path in snakemake.input.info:
        with open(info_path) as fh:
            infos.append(json.load(fh))
    benches = {path: read_tsv(path).iloc[0] for path in snakemake.input.benchmarks}
    job_of = snakemake.params.benchmark_of  # a split's job: its own, or its method's all-splits job (splits.jobs)
    seconds = split_seconds([i.get("split_seconds", 0.0) for i in infos], job_of, {p: b["s"] for p, b in benches.items()})
    runtime, params = [], []
    for info, job, wall in zip(infos, job_of, seconds):
        if info.get("status") == "failed":
            log.warning("%s on %s failed (%s); its metrics are missing and its pairs are dropped", info["method"],
                        info["split"], info.get("error"))
        runtime.append({"method": info["method"], "split": info["split"], "status": info.get("status", "ok"),
                        "seconds": wall, "method_seconds": info["method_seconds"],
                        "max_rss_mb": benches[job]["max_rss"],
                        "n_train": info.get("n_train"), "n_test": info.get("n_test"), "mode": info.get("mode", "")})
        params += [{"method": info["method"], "split": info["split"], **row} for row in info["parameters"]]
    keys = ["method", "role", "fitted", "component"]
    params = pd.DataFrame(params, columns=["split", *keys, "n_parameters"])
    params = params.groupby(keys, as_index=False)["n_parameters"].median()  # per-split counts vary with the classes
    role_order = {"adaptor": 0, "embedding": 1, "readout": 2}
    params = params.sort_values(["method", "role", "component"], key=lambda c: c.map(role_order) if c.name == "role" else c,
                                kind="stable")
    log.info("%d metric rows from %d jobs", len(metrics), len(snakemake.input.metrics))
    write_tsv(metrics.sort_values(["split", "method", "endpoint"], kind="stable"), snakemake.output.metrics)
    write_tsv(pd.DataFrame(runtime).sort_values(["method", "split"], kind="stable"), snakemake.output.runtime)
    write_tsv(params, snakemake.output.parameters)

elif rule == "stats":
    from fmextract.failures import finished_lines
    from fmextract.stats import donor_level_tests, paired_tests, summary_table

    for line in finished_lines(read_tsv(snakemake.input.runtime)):  # the statistics use the finished splits only
        log.info(line)
    metrics = read_tsv(snakemake.input.metrics)
    families, supervision = snakemake.params.families, snakemake.params.pseudotime
    pseudotime_of = lambda frame: frame["method"].map(supervision).where(frame["endpoint"].str.startswith("pseudotime"))
    paper = snakemake.params.paper_endpoints  # BH families: the paper's eight; other endpoints in families of their own
    table = paired_tests(metrics, reference=snakemake.params.reference, families=families, endpoints=paper)
    table.insert(table.columns.get_loc("family") + 1, "pseudotime", pseudotime_of(table))
    dropped = table[table["n_dropped"] > 0] if "n_dropped" in table else table.iloc[:0]
    for row in dropped.itertuples():
        log.warning("%s vs %s on %s: %d split(s) without a pair dropped", row.method, row.reference, row.endpoint, row.n_dropped)
    write_tsv(table, snakemake.output.stats)
    donor = donor_level_tests(metrics, read_tsv(snakemake.input.splits), reference=snakemake.params.reference,
                              n_boot=snakemake.params.n_boot, seed=snakemake.params.seed, families=families,
                              endpoints=paper)
    log.info("per BH family, comparisons with q < 0.05 over splits: %s", table.groupby("family")["q_value"].apply(
        lambda q: f"{(q < 0.05).sum()} of {len(q)}").to_dict())
    log.info("%d comparisons with q < 0.05 over splits, %d over unique test donors (of %d; at most %d donors, "
             "%d bootstrap resamples)", (table["q_value"] < 0.05).sum(), (donor["q_value"] < 0.05).sum(), len(donor),
             donor["n_donors"].max() if len(donor) else 0, snakemake.params.n_boot)
    write_tsv(donor, snakemake.output.donor)
    summary = summary_table(metrics)
    summary["family"] = summary["method"].map(families).where(summary["method"] != snakemake.params.reference, "reference")
    summary["pseudotime"] = pseudotime_of(summary)  # supervised readouts vs unsupervised DPT/Palantir: apart
    runtime = read_tsv(snakemake.input.runtime).groupby("method")["seconds"].sum()
    log.info("campaign seconds per method:\n%s", runtime.to_string())
    write_tsv(summary, snakemake.output.summary)

elif rule == "runtime_summary":
    from fmextract.runtime import runtime_summary

    one_time = {method: {step: float(read_tsv(path)["s"].iloc[0]) for step, path in steps.items()}
                for method, steps in snakemake.params.steps.items()}
    table = runtime_summary(read_tsv(snakemake.input.runtime), one_time, reference=snakemake.params.reference,
                            campaign_splits=snakemake.params.campaign_splits)
    log.info("one-time builds vs per-split cost (%d-split campaign):\n%s", snakemake.params.campaign_splits,
             table.drop(columns="one_time_steps").to_string(index=False))
    write_tsv(table, snakemake.output[0])
