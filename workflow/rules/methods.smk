# One generic rule runs any method (workflow/methods/<method>.py) on any donor-holdout split (or, with splits.jobs:
# all_in_one, on all splits in one job).
# A job stops itself at methods_deadline_fraction of its runtime: before its last attempt it exits to be retried with
# runtime and mem_mb x attempt; on the last one it records the timeout (failures.tsv) so the campaign goes on.


rule run_method:
    input:
        unpack(method_inputs),
        h5ad="results/data/benchmark.h5ad",
        splits="results/splits/splits.tsv",
        code=method_file,
    output:
        metrics=per_split("results/methods/{method}/{split}.tsv"),
        info=per_split("results/methods/{method}/{split}.json"),
    log:
        per_job("results/logs/methods/{method}/{split}.log"),
    benchmark:
        per_job("results/benchmarks/methods/{method}/{split}.tsv")
    retries: METHOD_RETRIES
    conda:
        method_env
    threads: method_resource("threads", 1)
    resources:
        mem_mb=method_resource("mem_mb", 4000),
        runtime=method_resource("runtime", 30),
        gpu=method_resource("gpu", 0),
        attempt=lambda wc, attempt: attempt,
    params:
        spec=lambda wc: config["methods"][wc.method],
        subtypes=config["endpoints"]["subtypes"],
        max_train_cells=config["splits"]["max_train_cells"],
        fail_fast=config.get("methods_fail_fast", False),
        retries=METHOD_RETRIES,
        deadline_fraction=config.get("methods_deadline_fraction", 0.95),
        seed=SEED,
    script:
        "../scripts/method.py"
