# Stage 1 (operator export from the frozen model, its untrained control or the planted-head control, under each
# operator definition; head screens; the definitions table; feature maps) and stage 2 (the adaptors).


rule export_operators:
    input:
        unpack(operator_checkpoint),
        unpack(operator_data),
        genes="results/data/gene_panel.txt",
    output:
        "results/operators/{model}/{definition}.npz",
    log:
        "results/logs/export_operators/{model}_{definition}.log",
    benchmark:
        "results/benchmarks/export_operators/{model}_{definition}.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
        gpu=lambda wc: 0 if wc.definition in WEIGHT_DEFINITIONS else 1,
    params:
        operators=config["operators"],
        device=config["model"]["device"],
        seed=SEED,
        kind=MODEL_KIND,
    script:
        "../scripts/operators.py"


rule head_screen:
    input:
        operators="results/operators/{model}/{definition}.npz",
        h5ad="results/data/benchmark.h5ad",
        reference_donors="results/data/reference_donors.txt",
        stage_graph=config["data"]["stage_graph"],
        stage_table=config["data"]["stage_table"],
    output:
        heads="results/screen/{model}/{definition}.tsv",
        pooled="results/screen/{model}/{definition}_pooled_drift.tsv",
    log:
        "results/logs/head_screen/{model}_{definition}.log",
    benchmark:
        "results/benchmarks/head_screen/{model}_{definition}.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        adaptor=config["adaptor"],
        min_cells=config["anchors"]["min_cells"],
        seed=SEED,
    script:
        "../scripts/operators.py"


rule operator_definitions:
    input:
        screens=expand("results/screen/{model}/{definition}.tsv", model=SCREENED_MODELS, definition=COMPARED),
        pooled=expand(
            "results/screen/{model}/{definition}_pooled_drift.tsv", model=SCREENED_MODELS, definition=COMPARED
        ),
        configured=f"results/screen/trained/{DEFINITION}.tsv",
    output:
        definitions="results/tables/operator_definitions.tsv",
        screen="results/tables/head_screen.tsv",
    log:
        "results/logs/operator_definitions.log",
    benchmark:
        "results/benchmarks/operator_definitions.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        models=SCREENED_MODELS,
        definitions=COMPARED,
        configured=DEFINITION,
        planted=config["model"]["planted"],
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
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        sparse_factors=config["compression"]["sparse_factors"],
        sparse_genes=config["compression"]["sparse_genes"],
        comparator_pca_comps=config["validation"].get("comparator_pca_comps"),
        seed=SEED,
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
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        adaptor=config["adaptor"],
        min_cells=config["anchors"]["min_cells"],
        seed=SEED,
    script:
        "../scripts/operators.py"
