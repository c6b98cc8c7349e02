# The compaction chain (pooled drift -> best head -> rank-r surrogates -> hard-sparse; every rung with its own
# cell-trained adaptor and per-split readouts) and the factor ablation of the rank-r surrogate (leave-one-out, then
# core sufficiency and every subset of the core, with probes fixed, the core chosen per split on its training donors;
# leave-one-out of the hard-sparse surrogate).
# Last, the planted positive control read the same way: are the leading factors of the planted head's rank-r
# surrogate enriched for the marker programs it was planted on?


rule compression_split:
    input:
        latents=expand("results/latent/{feature}_cell.h5", feature=COMPRESSION_VARIANTS),
        h5ad="results/data/benchmark.h5ad",
        splits="results/splits/splits.tsv",
    output:
        per_split("results/compression/{split}.tsv"),
    log:
        per_job("results/logs/compression/{split}.log"),
    benchmark:
        per_job("results/benchmarks/compression/{split}.tsv")
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        variants=COMPRESSION_VARIANTS,
        subtypes=config["endpoints"]["subtypes"],
        max_train_cells=config["splits"]["max_train_cells"],
        seed=SEED,
    script:
        "../scripts/interpret.py"


rule factor_ablation_split:
    input:
        feature_map=f"results/operators/{ABLATION_MAP}.npz",
        adaptor=f"results/adaptor/{ABLATION_MAP}_cell.npz",
        sparse_map=f"results/operators/{SPARSE_MAP}.npz",
        sparse_adaptor=f"results/adaptor/{SPARSE_MAP}_cell.npz",
        h5ad="results/data/benchmark.h5ad",
        splits="results/splits/splits.tsv",
    output:
        per_split("results/factors/{split}.tsv"),
    log:
        per_job("results/logs/factors/{split}.log"),
    benchmark:
        per_job("results/benchmarks/factors/{split}.tsv")
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        surrogates=[ABLATION_MAP, SPARSE_MAP],
        subtypes=config["endpoints"]["subtypes"],
        max_train_cells=config["splits"]["max_train_cells"],
        seed=SEED,
    script:
        "../scripts/interpret.py"


rule factor_core_split:
    input:
        feature_map=f"results/operators/{ABLATION_MAP}.npz",
        adaptor=f"results/adaptor/{ABLATION_MAP}_cell.npz",
        h5ad="results/data/benchmark.h5ad",
        splits="results/splits/splits.tsv",
    output:
        per_split("results/factors/core/{split}.tsv"),
    log:
        per_job("results/logs/factors/core/{split}.log"),
    benchmark:
        per_job("results/benchmarks/factors/core/{split}.tsv")
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        endpoints=config["compression"]["ablation_endpoints"],
        n_core=config["compression"]["n_top_factors"],
        subtypes=config["endpoints"]["subtypes"],
        max_train_cells=config["splits"]["max_train_cells"],
        seed=SEED,
    script:
        "../scripts/interpret.py"


rule compression_table:
    input:
        per_split=expand("results/compression/{split}.tsv", split=SPLITS),
        maps=expand("results/operators/{feature}.npz", feature=COMPRESSION_VARIANTS),
    output:
        "results/tables/compression.tsv",
    log:
        "results/logs/compression_table.log",
    benchmark:
        "results/benchmarks/compression_table.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        variants=COMPRESSION_VARIANTS,
        base=config["compression"]["base"],
        margin=config["compression"]["noninferiority_margin"],
        paper_endpoints=PAPER_ENDPOINTS,
    script:
        "../scripts/interpret.py"


rule factor_table:
    input:
        per_split=expand("results/factors/{split}.tsv", split=SPLITS),
        subsets=expand("results/factors/core/{split}.tsv", split=SPLITS),
        feature_map=f"results/operators/{ABLATION_MAP}.npz",
        programs=config["data"]["marker_programs"],
    output:
        ablation="results/tables/factor_ablation.tsv",
        programs="results/tables/factor_programs.tsv",
    log:
        "results/logs/factor_table.log",
    benchmark:
        "results/benchmarks/factor_table.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        surrogates=[ABLATION_MAP, SPARSE_MAP],
        endpoints=config["compression"]["ablation_endpoints"],
        n_top_factors=config["compression"]["n_top_factors"],
        n_top_genes=config["compression"]["n_top_genes"],
    script:
        "../scripts/interpret.py"


rule planted_factor_programs:
    input:
        feature_map=f"results/operators/planted_{ABLATION_MAP}.npz",
        programs=config["data"]["marker_programs"],
    output:
        "results/tables/planted_factor_programs.tsv",
    log:
        "results/logs/planted_factor_programs.log",
    benchmark:
        "results/benchmarks/planted_factor_programs.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        n_top_genes=config["compression"]["n_top_genes"],
    script:
        "../scripts/interpret.py"
