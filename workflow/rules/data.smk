# Data: simulate the demo panels, validate and harmonise a panel, pick the gene panel.


rule simulate:
    output:
        "results/data/simulated/{panel}.h5ad",
    log:
        "results/logs/simulate/{panel}.log",
    benchmark:
        "results/benchmarks/simulate/{panel}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        panel=lambda wc: config["panels"][wc.panel],
        data=config["data"],
    script:
        "../scripts/data.py"


rule prepare:
    input:
        unpack(raw_panel),
        stage_table=panel_stage_table,
    output:
        h5ad="results/data/{panel}.h5ad",
        unmapped="results/tables/unmapped_labels_{panel}.tsv",
    log:
        "results/logs/prepare/{panel}.log",
    benchmark:
        "results/benchmarks/prepare/{panel}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        panel=lambda wc: config["panels"][wc.panel],
        min_donors=config["data"]["min_donors"],
        lineage_labels=config["data"].get("lineage_labels", "stage"),
    script:
        "../scripts/data.py"


rule label_coverage:
    input:
        h5ad="results/data/{panel}.h5ad",
        unmapped="results/tables/unmapped_labels_{panel}.tsv",
        stage_table=config["data"]["stage_table"],
        reference_donors=lambda wc: (["results/data/reference_donors.txt"] if wc.panel == "reference" else []),
    output:
        "results/tables/label_coverage_{panel}.tsv",
    log:
        "results/logs/label_coverage/{panel}.log",
    benchmark:
        "results/benchmarks/label_coverage/{panel}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        subtypes=config["endpoints"]["subtypes"],
        lineage_labels=config["data"].get("lineage_labels", "stage"),
        min_cells=config["anchors"]["min_cells"],
        cell_per_stage=config["adaptor"]["cell_per_stage"],
        ontology_key=lambda wc: config["panels"][wc.panel].get("cell_type_ontology_key", "cell_type_ontology_term_id"),
        seed=SEED,
    script:
        "../scripts/data.py"


rule reference_donors:
    input:
        h5ad="results/data/reference.h5ad",
        immune=zero_shot_panel,
        stage_table=config["data"]["stage_table"],
    output:
        donors="results/data/reference_donors.txt",
        roles="results/tables/stage_roles.tsv",
    log:
        "results/logs/reference_donors.log",
    benchmark:
        "results/benchmarks/reference_donors.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        n_reference=config["panel"]["n_reference_donors"],
        min_cells=config["anchors"]["min_cells"],
        subtypes=config["endpoints"]["subtypes"],
        seed=SEED,
    script:
        "../scripts/data.py"


rule gene_panel:
    input:
        h5ad="results/data/reference.h5ad",
        reference_donors="results/data/reference_donors.txt",
        vocab=vocabulary_file(),
    output:
        genes="results/data/gene_panel.txt",
        h5ad="results/data/benchmark.h5ad",
    log:
        "results/logs/gene_panel.log",
    benchmark:
        "results/benchmarks/gene_panel.tsv"
    conda:
        # the model kind's own vocabulary reader (fmextract.models) imports torch
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        n_genes=config["panel"]["n_genes"],
        min_vocab_overlap=config["panel"]["min_vocab_overlap"],
        kind=MODEL_KIND,
    script:
        "../scripts/data.py"


rule splits:
    input:
        h5ad="results/data/benchmark.h5ad",
        reference_donors="results/data/reference_donors.txt",
    output:
        "results/splits/splits.tsv",
    log:
        "results/logs/splits.log",
    benchmark:
        "results/benchmarks/splits.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        splits={k: v for k, v in config["splits"].items() if k != "jobs"},  # how jobs are cut changes no split
        seed=SEED,
    script:
        "../scripts/data.py"
