# Manifold validation on anchors, for the anchor- and the cell-trained adaptor: internal (reference donors), external
# (benchmark donors, frozen adaptor: the headline), zero-shot immune transfer, the comparators (raw expression and its
# PCA through the same protocol) and the attribution table, the controls whose verdict must fail, the planted-head
# positive control, the supplementary communication manifold and the per-gate separation table.


rule manifold_validation:
    input:
        unpack(validated_adaptors),
        unpack(mismatched_panel),
        feature_map="results/operators/pooled_drift.npz",
        raw_map="results/operators/raw.npz",
        raw_pca_map="results/operators/raw_pca.npz",
        untrained_map="results/operators/untrained_pooled_drift.npz",
        planted_map="results/operators/planted_pooled_drift.npz",
        h5ad="results/data/benchmark.h5ad",
        reference="results/data/reference.h5ad",
        reference_donors="results/data/reference_donors.txt",
        immune=zero_shot_panel,
        stage_table=config["data"]["stage_table"],
        stage_graph=config["data"]["stage_graph"],
        lr_pairs=config["data"]["ligand_receptor_pairs"],
    output:
        table="results/tables/manifold_validation.tsv",
        separation="results/tables/gate_separation.tsv",
        latent="results/validation/anchor_latent.tsv",
        attribution="results/tables/attribution.tsv",
    log:
        "results/logs/manifold_validation.log",
    benchmark:
        "results/benchmarks/manifold_validation.tsv"
    conda:
        "../../envs/scgpt.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        validation=config["validation"],
        adaptor=config["adaptor"],
        min_cells=config["anchors"]["min_cells"],
        seed=SEED,
    script:
        "../scripts/validation.py"
