# Figures, wrapped in report() so that `snakemake --report results/report.html` collects them with captions.


report: "../report/workflow.rst"


rule figures:
    input:
        metrics="results/tables/metrics.tsv",
        stats="results/tables/stats.tsv",
        runtime_summary="results/tables/runtime_summary.tsv",
        latent="results/validation/anchor_latent.tsv",
        compression="results/tables/compression.tsv",
        ablation="results/tables/factor_ablation.tsv",
    output:
        manifold=report("results/figures/manifold.png", caption="../report/manifold.rst", category="Manifold"),
        benchmark=report("results/figures/benchmark.png", caption="../report/benchmark.rst", category="Benchmark"),
        runtime=report("results/figures/runtime.png", caption="../report/runtime.rst", category="Benchmark"),
        compression=report(
            "results/figures/compression.png", caption="../report/compression.rst", category="Compression"
        ),
        factors=report("results/figures/factors.png", caption="../report/factors.rst", category="Interpretability"),
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=10,
    params:
        reference=config["stats"]["reference"],
        compression_endpoint=config["compression"]["ablation_endpoints"][0],
    script:
        "../scripts/report.py"
