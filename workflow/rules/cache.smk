# Per-cell caches computed ONCE per panel and read by every split (as the paper did): frozen model embeddings for
# the frozen-embedding baselines, and the frozen latent of every (feature map, adaptor) pair for the extracted methods.


rule embed_cells:
    input:
        unpack(operator_checkpoint),
        h5ad=dataset_path,
    output:
        "results/embeddings/{model}/{dataset}.h5",
    log:
        "results/logs/embed_cells/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/embed_cells/{model}/{dataset}.tsv"
    conda:
        "../../envs/scgpt.yaml"
    # one thread: on a GPU the forward pass is not CPU-bound; on CPU a 2-thread job starves behind the 1-thread split
    # jobs (it only starts when both cores are free at once) and torch stalls with more threads than free cores
    threads: 1
    # measured (benchmarks/results/caches.md, full-size random checkpoint, 1,200-gene panel): peak RSS 1.6 GB; CPU
    # 3.1 cells/s per core, i.e. ~51 core-hours for 564k cells -- a GPU job (the paper's cache build: 1.4 h)
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 1440 * attempt,
        gpu=1,
    params:
        model=config["model"],
        seed=SEED,
        kind=MODEL_KIND,
    script:
        "../scripts/cache.py"


rule frozen_latent:
    input:
        feature_map="results/operators/{feature}.npz",
        adaptor="results/adaptor/{feature}_{mode}.npz",
        h5ad="results/data/benchmark.h5ad",
    output:
        "results/latent/{feature}_{mode}.h5",
    log:
        "results/logs/frozen_latent/{feature}_{mode}.log",
    benchmark:
        "results/benchmarks/frozen_latent/{feature}_{mode}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    # measured at 564,253 x 1,200 (benchmarks/results/caches.md): 8.5 s, peak RSS 0.33 GB
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../scripts/cache.py"
