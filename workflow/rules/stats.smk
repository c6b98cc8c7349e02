# Collect per-split metrics, runtimes and parameter counts; paired Wilcoxon + BH (within the paper's family, controls,
# extracted variants) against the reference method, over splits and over unique test donors (clustered bootstrap CI,
# per-donor Wilcoxon, leave-one-donor-out).


rule collect:
    input:
        metrics=[f"results/methods/{m}/{s}.tsv" for m, s in METHOD_SPLITS],
        info=[f"results/methods/{m}/{s}.json" for m, s in METHOD_SPLITS],
        benchmarks=sorted({rules.run_method.benchmark.format(method=m, split=s) for m, s in METHOD_SPLITS}),
    output:
        metrics="results/tables/metrics.tsv",
        runtime="results/tables/runtime.tsv",
        parameters="results/tables/parameters.tsv",
    log:
        "results/logs/collect.log",
    benchmark:
        "results/benchmarks/collect.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        benchmark_of=[rules.run_method.benchmark.format(method=m, split=s) for m, s in METHOD_SPLITS],  # per info
    script:
        "../scripts/stats.py"


rule stats:
    input:
        metrics="results/tables/metrics.tsv",
        runtime="results/tables/runtime.tsv",
        splits="results/splits/splits.tsv",
    output:
        stats="results/tables/stats.tsv",
        summary="results/tables/summary.tsv",
        donor="results/tables/stats_donor_level.tsv",
    log:
        "results/logs/stats.log",
    benchmark:
        "results/benchmarks/stats.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        reference=config["stats"]["reference"],
        n_boot=config["stats"].get("n_bootstrap", 2000),
        families=METHOD_FAMILIES,
        paper_endpoints=PAPER_ENDPOINTS,
        pseudotime=PSEUDOTIME_SUPERVISION,
        seed=SEED,
    script:
        "../scripts/stats.py"


rule runtime_summary:
    input:
        runtime="results/tables/runtime.tsv",
        one_time=sorted({path for m in METHODS for path in one_time_benchmarks(m).values()}),
    output:
        "results/tables/runtime_summary.tsv",
    log:
        "results/logs/runtime_summary.log",
    benchmark:
        "results/benchmarks/runtime_summary.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        steps={m: one_time_benchmarks(m) for m in METHODS},
        reference=config["stats"]["reference"],
        campaign_splits=config["stats"].get("campaign_splits", 12),
    script:
        "../scripts/stats.py"
