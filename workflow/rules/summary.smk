# The run at a glance: the paper's reported figures beside ours (paper_comparison.tsv), and results/summary.md, the
# headline tables rendered as Markdown from the result TSVs.


rule paper_comparison:
    input:
        figures="resources/paper_figures.tsv",
        summary="results/tables/summary.tsv",
        stats="results/tables/stats.tsv",
        compression="results/tables/compression.tsv",
        factors="results/tables/factor_ablation.tsv",
        validation="results/tables/manifold_validation.tsv",
        attribution="results/tables/attribution.tsv",
        screen="results/tables/head_screen.tsv",
        parameters="results/tables/parameters.tsv",
        splits="results/splits/splits.tsv",
    output:
        "results/tables/paper_comparison.tsv",
    log:
        "results/logs/paper_comparison.log",
    benchmark:
        "results/benchmarks/paper_comparison.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    script:
        "../scripts/summary.py"


rule summary_markdown:
    input:
        summary="results/tables/summary.tsv",
        stats="results/tables/stats.tsv",
        compression="results/tables/compression.tsv",
        factors="results/tables/factor_ablation.tsv",
        validation="results/tables/manifold_validation.tsv",
        attribution="results/tables/attribution.tsv",
        parameters="results/tables/parameters.tsv",
        paper_comparison="results/tables/paper_comparison.tsv",
    output:
        "results/summary.md",
    log:
        "results/logs/summary_markdown.log",
    benchmark:
        "results/benchmarks/summary_markdown.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        reference=config["stats"]["reference"],
        title=(
            "fmextract results (simulated demo)"
            if "simulate" in config["panels"]["reference"]
            else "fmextract results"
        ),
    script:
        "../scripts/summary.py"
