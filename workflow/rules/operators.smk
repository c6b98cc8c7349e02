# Stage 1 (operator export from the frozen model or its untrained control, head screen, feature maps) and
# stage 2 (the adaptors).


rule export_operators:
    input:
        unpack(operator_checkpoint),
        h5ad="results/data/benchmark.h5ad",
        reference_donors="results/data/reference_donors.txt",
        genes="results/data/gene_panel.txt",
    output:
        "results/operators/{model}/operators.npz",
    log:
        "results/logs/export_operators/{model}.log",
    benchmark:
        "results/benchmarks/export_operators/{model}.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=120,
        gpu=1,
    params:
        operators=config["operators"],
        device=config["model"]["device"],
        seed=SEED,
    script:
        "../scripts/operators.py"


rule head_screen:
    input:
        operators="results/operators/trained/operators.npz",
        h5ad="results/data/benchmark.h5ad",
        reference_donors="results/data/reference_donors.txt",
        stage_graph=config["data"]["stage_graph"],
        stage_table=config["data"]["stage_table"],
    output:
        "results/tables/head_screen.tsv",
    log:
        "results/logs/head_screen.log",
    benchmark:
        "results/benchmarks/head_screen.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    params:
        adaptor=config["adaptor"],
        min_cells=config["anchors"]["min_cells"],
        seed=SEED,
    script:
        "../scripts/operators.py"


rule feature_map:
    input:
        unpack(feature_map_inputs),
    output:
        "results/operators/{feature}.npz",
    log:
        "results/logs/feature_map/{feature}.log",
    benchmark:
        "results/benchmarks/feature_map/{feature}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=10,
    params:
        sparse_density=config["compression"]["sparse_density"],
    script:
        "../scripts/operators.py"


rule adaptor:
    input:
        feature_map="results/operators/{feature}.npz",
        h5ad="results/data/benchmark.h5ad",
        reference_donors="results/data/reference_donors.txt",
        stage_table=config["data"]["stage_table"],
        stage_graph=config["data"]["stage_graph"],
    output:
        adaptor="results/adaptor/{feature}_{mode}.npz",
        training="results/adaptor/{feature}_{mode}.tsv",
    log:
        "results/logs/adaptor/{feature}_{mode}.log",
    benchmark:
        "results/benchmarks/adaptor/{feature}_{mode}.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    params:
        adaptor=config["adaptor"],
        min_cells=config["anchors"]["min_cells"],
        seed=SEED,
    script:
        "../scripts/operators.py"
