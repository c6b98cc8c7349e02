# The demo model of the configured kind (model.kind; scGPT: masked-value pretraining on the reference donors), the
# untrained-model control (the configured checkpoint's architecture, freshly initialised with the config seed) and
# the planted-head positive control (that untrained copy with one head built to attend within marker programs).
# Checkpoint file names are the kind's (fmextract.models.<kind>.CHECKPOINT_FILES).
# The shipped resources/demo_model was made by pretrain_demo_model (docs/method.md, "The embedded demo").


rule pretrain_demo_model:
    input:
        h5ad="results/data/reference.h5ad",
        reference_donors="results/data/reference_donors.txt",
    output:
        **checkpoint_files("results/model/pretrained"),
        curve="results/model/pretrained/loss_curve.tsv",
    log:
        "results/logs/pretrain_demo_model.log",
    benchmark:
        "results/benchmarks/pretrain_demo_model.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
        gpu=1,
    params:
        pretrain=config["model"]["pretrain"],
        device=config["model"]["device"],
        kind=MODEL_KIND,
    script:
        "../scripts/model.py"


rule untrained_model:
    input:
        unpack(checkpoint_inputs),
    output:
        **checkpoint_files("results/model/untrained"),
    log:
        "results/logs/untrained_model.log",
    benchmark:
        "results/benchmarks/untrained_model.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        seed=SEED,
        kind=MODEL_KIND,
    script:
        "../scripts/model.py"


rule planted_model:
    input:
        unpack(checkpoint_inputs),
        programs=config["data"]["marker_programs"],
    output:
        **checkpoint_files("results/model/planted"),
    log:
        "results/logs/planted_model.log",
    benchmark:
        "results/benchmarks/planted_model.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        planted=config["model"]["planted"],
        seed=SEED,
        kind=MODEL_KIND,
    script:
        "../scripts/model.py"
