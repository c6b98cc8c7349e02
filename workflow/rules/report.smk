# The run's report, results/report.html (rule report_html: one self-contained page that leads with the answer), and
# the figures and tables wrapped in report() so that `snakemake --report results/snakemake_report.html` (or .zip)
# collects them with captions; its landing page carries the same headline (results/report/headline.rst).


report: "../report/workflow.rst" if os.path.exists("results/report/headline.rst") else "../report/workflow_no_run.rst"


#: Tables of the report, in this order: results/tables/<name>.tsv -> an HTML table with this caption. Adding a table
#: is one line here; a table is included (rule all) only when some rule of the workflow makes it.
REPORT_TABLES = {
    "paper_comparison": "The paper's reported figures beside this run's (result, paper value, ours, unit, note).",
    "stats": "Paired two-sided Wilcoxon signed-rank tests over splits of each method against the reference method, "
    "per endpoint: n pairs, dropped splits, median difference (reference - method), rank-biserial effect, BH q.",
    "stats_donor_level": "The same comparisons over unique test donors: donor-clustered bootstrap CI of the mean "
    "difference, Wilcoxon over per-donor mean differences with BH q, leave-one-donor-out range.",
    "summary": "Mean, standard deviation and number of splits of every method on every endpoint.",
    "manifold_validation": "Manifold gates (trustworthiness, holdout ruler Spearman, blocked permutation p) per "
    "panel, control and comparator, for both adaptors (anchor- and cell-trained), with thresholds and pass/fail.",
    "attribution": "Attribution: pooled drift minus each comparator (raw panel expression, its PCA) per panel, "
    "adaptor and gate, through the same protocol; positive favours attention; donor-clustered bootstrap 95% CI and "
    "the verdict (credited to attention only where the CI excludes zero in attention's favour).",
    "gate_separation": "Per gate (and the verdict): its value on every panel, how many real panels pass and how many "
    "controls fail, whether it separates them.",
    "operator_definitions": "Per model (trained, planted) and operator definition: pooled-drift and best-head screen "
    "scores on reference anchors, and the planted head's rank.",
    "compression": "Compression ladder: operator size against endpoint means and tests against the uncompressed map.",
    "parameters": "Trainable parameters of each method's readouts (median over splits).",
    **{
        f"label_coverage_{p}": f"Labels of the {p} panel: cells, stage, branch, how each maps (stage, lineage stage, "
        "branch only, unmapped; absent: a stage an endpoint lists that the panel lacks) and which parts use it: "
        "branch and stage endpoints, each subtype endpoint, anchors (cells), the cell-trained adaptor (cells drawn)."
        for p in PANELS
    },
    "failures": "Method jobs that raised and were recorded as failed (their splits are dropped from the statistics), "
    "with the error and the job's log. Empty when every job succeeded.",
    "attribution": "Whether a manifold gain is credited to attention: per panel, adaptor and gate, the extracted "
    "method against each comparator, the difference with its confidence interval, and the verdict.",
}


rule report_table:
    input:
        table="results/tables/{table}.tsv",
    output:
        html=report(
            "results/report/{table}.html",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        "results/logs/report_table/{table}.log",
    wildcard_constraints:
        table="|".join(REPORT_TABLES),
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        caption=lambda wc: REPORT_TABLES[wc.table],
    script:
        "../scripts/report_table.py"


rule figures:
    input:
        metrics="results/tables/metrics.tsv",
        stats="results/tables/stats.tsv",
        runtime_summary="results/tables/runtime_summary.tsv",
        latent="results/validation/anchor_latent.tsv",
        compression="results/tables/compression.tsv",
        ablation="results/tables/factor_ablation.tsv",
        validation="results/tables/manifold_validation.tsv",
    output:
        manifold=report("results/figures/manifold.png", caption="../report/manifold.rst", category="Manifold"),
        benchmark=report("results/figures/benchmark.png", caption="../report/benchmark.rst", category="Benchmark"),
        runtime=report("results/figures/runtime.png", caption="../report/runtime.rst", category="Benchmark"),
        compression=report(
            "results/figures/compression.png", caption="../report/compression.rst", category="Compression"
        ),
        factors=report("results/figures/factors.png", caption="../report/factors.rst", category="Interpretability"),
        verdicts=report("results/figures/verdicts.png", caption="../report/verdicts.rst", category="Manifold"),
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        reference=config["stats"]["reference"],
        compression_endpoint=config["compression"]["ablation_endpoints"][0],
    script:
        "../scripts/report.py"


rule report_html:
    input:
        summary="results/tables/summary.tsv",
        stats="results/tables/stats.tsv",
        validation="results/tables/manifold_validation.tsv",
        attribution=lambda wc: (["results/tables/attribution.tsv"] if "attribution" in report_tables() else []),
        benchmark=rules.figures.output.benchmark,
        verdicts=rules.figures.output.verdicts,
        manifold=rules.figures.output.manifold,
        runtime_figure=rules.figures.output.runtime,
        compression=rules.figures.output.compression,
        factors=rules.figures.output.factors,
        tables=lambda wc: [f"results/tables/{t}.tsv" for t in report_tables()],
        pages=lambda wc: [f"results/report/{t}.html" for t in report_tables()],
    output:
        html="results/report.html",
        headline="results/report/headline.rst",
    log:
        "results/logs/report_html.log",
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        reference=config["stats"]["reference"],
        title=(
            "fmextract run report (simulated demo)"
            if "simulate" in config["panels"]["reference"]
            else "fmextract run report"
        ),
    script:
        "../scripts/report.py"
