# The standalone algorithm: export the head (panel genes, pooled-drift map, cell-trained adaptor, readouts fitted on
# every donor of the benchmark panel) as one file, and apply it zero-shot to the immune panel's raw counts.


rule export_head:
    input:
        feature_map="results/operators/pooled_drift.npz",
        adaptor="results/adaptor/pooled_drift_cell.npz",
        h5ad="results/data/benchmark.h5ad",
    output:
        "results/head/fmextract_head.npz",
    log:
        "results/logs/export_head.log",
    benchmark:
        "results/benchmarks/export_head.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        subtypes=config["endpoints"]["subtypes"],
        max_train_cells=config["splits"]["max_train_cells"],
        seed=SEED,
        kind=MODEL_KIND,
    script:
        "../scripts/head.py"


rule apply_head:
    input:
        head="results/head/fmextract_head.npz",
        h5ad="results/data/immune.h5ad",
    output:
        "results/head/immune_applied.h5ad",
    log:
        "results/logs/apply_head.log",
    benchmark:
        "results/benchmarks/apply_head.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    script:
        "../scripts/head.py"
