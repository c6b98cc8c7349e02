"""Rules simulate, prepare, reference_donors, gene_panel, splits: read snakemake.*, call fmextract, write outputs."""

import logging
import os

import pandas as pd

from fmextract import data, logs, splits, stages
from fmextract.io import write_tsv

logs.start(snakemake)
log = logging.getLogger("data")
rule = snakemake.rule


def read_lines(path):
    with open(path) as fh:
        return [line.strip() for line in fh if line.strip()]


def write_lines(lines, path):
    from fmextract.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("".join(f"{x}\n" for x in lines))


if rule == "simulate":
    from fmextract.simulate import simulate_panel

    cfg, sim = snakemake.params.data, snakemake.params.panel["simulate"]
    table = stages.load_stage_table(cfg["stage_table"])
    edges = stages.load_stage_graph(cfg["stage_graph"], table["stage"].unique().tolist())
    programs = stages.load_marker_programs(cfg["marker_programs"])
    background = read_lines(cfg["background_genes"])
    prefix = snakemake.wildcards.panel[:3].upper()
    donors = [f"{prefix}{i:02d}" for i in range(sim["donors"])]
    if sim.get("compartment", "hematopoietic") == "non_hematopoietic":  # the mismatched-compartment control panel
        from fmextract.compartment import simulate_compartment

        spec = snakemake.params.panel  # its own lineage ruler: the panel's stage table and graph
        lineage = stages.load_stage_table(spec["stage_table"])
        lineage_edges = stages.load_stage_graph(spec["stage_graph"], lineage["stage"].unique().tolist())
        adata = simulate_compartment(lineage, lineage_edges, programs, background, donors=donors,
                                     tissues=sim["tissues"], cells_per_donor=sim["cells_per_donor"], seed=sim["seed"])
        log.info("non-hematopoietic cells on their own lineage ruler (%s): %d stages", spec["stage_table"],
                 len(adata.uns["simulation"]["stages"]))
    else:
        adata = simulate_panel(
            table, edges, programs, background, donors=donors,
            tissues=sim["tissues"], stages=sim.get("stages"), cells_per_donor=sim["cells_per_donor"],
            n_genes=None, seed=sim["seed"], lineage_labels=sim.get("lineage_labels", True),
        )
    log.info("simulated %s: %d cells x %d genes, %d donors", snakemake.wildcards.panel, *adata.shape, sim["donors"])
    data.write_h5ad(adata, snakemake.output[0])

elif rule == "prepare":
    # streamed: counts are read from disk in row chunks (never the whole atlas), checked, harmonised, normalised sparse
    spec, panel = snakemake.params.panel, snakemake.wildcards.panel
    source = str(snakemake.input.panel)
    keys = {k: spec.get(k) for k in ("donor_key", "cell_type_key", "tissue_key", "counts_layer", "gene_symbol_column",
                                     "assay_key", "keep_assays", "keep_tissues")}
    keys["ontology_key"] = spec.get("cell_type_ontology_key", "cell_type_ontology_term_id")
    table = stages.load_label_table(snakemake.input.stage_table)  # coarse labels (branch, no stage) included
    table = stages.lineage_as(table, snakemake.params.lineage_labels)  # "branch": lineage labels keep their branch only
    unmapped, info = data.prepare_panel(source, table, snakemake.output.h5ad, source=source,
                                        min_donors=snakemake.params.min_donors, config=f"panels.{panel}", **keys)
    log.info("%s: %d cells, %d genes, %d donors, %d stages; dropped %d cells (%d by assay, %d by tissue, %d unmapped "
             "labels); "
             "%d coarse-label cells kept (branch only); counts from %s", source, info["n_obs"], info["n_vars"],
             info["n_donors"], info["n_stages"], info["n_dropped"], info["n_dropped_assay"], info["n_dropped_tissue"],
             info["n_dropped_unmapped"],
             info["n_coarse"], info["counts_source"])
    write_tsv(unmapped, snakemake.output.unmapped)

elif rule == "label_coverage":
    from fmextract.coverage import label_coverage
    from fmextract.io import read_tsv

    table = stages.lineage_as(stages.load_label_table(snakemake.input.stage_table), snakemake.params.lineage_labels)
    panel, subtypes = snakemake.wildcards.panel, snakemake.params.subtypes
    unmapped = read_tsv(snakemake.input.unmapped).fillna({"ontology_id": ""})
    coverage = label_coverage(
        data.read_obs(snakemake.input.h5ad), unmapped, subtypes, stages.stage_info(table),
        lineage=list(stages.lineage_pools(table)), min_cells=snakemake.params.min_cells, benchmark=panel == "reference",
        reference_donors=read_lines(snakemake.input.reference_donors[0]) if snakemake.input.reference_donors else (),
        cell_per_stage=snakemake.params.cell_per_stage, seed=snakemake.params.seed,
        ontology_key=snakemake.params.ontology_key,
    )
    cells = coverage.groupby("mapping")["n_cells"].sum()
    log.info("%s: cells by mapping (data.lineage_labels: %s): %s", panel, snakemake.params.lineage_labels,
             cells.to_dict())
    for name in subtypes if panel == "reference" else ():
        used = coverage[coverage[name] != ""]
        log.info("%s: endpoint %s scores %d labelled cells (%s)", panel, name, used["n_cells"].sum(),
                 ", ".join(f"{s}: {n}" for s, n in used.groupby("stage")["n_cells"].sum().items() if n))
    write_tsv(coverage, snakemake.output[0])

elif rule == "reference_donors":
    from fmextract import donors

    obs = data.read_obs(snakemake.input.h5ad)
    needed = donors.needed_stages(snakemake.params.subtypes)
    chosen = donors.choose_reference_donors(obs, n_reference=snakemake.params.n_reference,
                                            min_cells=snakemake.params.min_cells, needed=list(needed),
                                            seed=snakemake.params.seed)
    log.info("reference donors (HVGs, operators, adaptor; never test donors): %s", chosen)
    info = stages.stage_info(stages.load_stage_table(snakemake.input.stage_table))
    roles = donors.stage_roles(obs, chosen, info, min_cells=snakemake.params.min_cells, needed=needed)
    log.info("stage x role:\n%s", roles.to_string(index=False))
    reference = obs["donor"].astype(str).isin(chosen).to_numpy()
    others = {"benchmark donors' cells": obs.index[~reference]}
    if snakemake.input.immune:
        others["immune panel's cells"] = data.read_obs(snakemake.input.immune[0]).index
    donors.check_non_overlap(obs.index[reference], others, source=str(snakemake.input.h5ad))
    write_tsv(roles, snakemake.output.roles)
    donors.check_needed_stages(roles, snakemake.params.subtypes, source=str(snakemake.input.h5ad))
    write_lines(chosen, snakemake.output.donors)

elif rule == "gene_panel":
    from fmextract.models import model_class

    vocab = model_class(snakemake.params.kind).vocabulary(os.path.dirname(snakemake.input.vocab))
    with data.open_backed(snakemake.input.h5ad) as panel:  # only the reference donors' counts are read
        genes = data.select_gene_panel(
            panel, reference_donors=read_lines(snakemake.input.reference_donors), n_genes=snakemake.params.n_genes,
            vocab=vocab, min_vocab_overlap=snakemake.params.min_vocab_overlap, source=str(snakemake.input.h5ad),
        )
    log.info("gene panel: %d genes", len(genes))
    write_lines(genes, snakemake.output.genes)
    data.write_gene_subset(snakemake.input.h5ad, snakemake.output.h5ad, genes)

elif rule == "splits":
    donors = data.read_obs(snakemake.input.h5ad)["donor"].unique().tolist()
    reserved = set(read_lines(snakemake.input.reference_donors))
    cfg = snakemake.params.splits
    plan = splits.split_plan(cfg.get("n_splits"), cfg.get("design"), scale=cfg.get("scale", 1.0))
    table = splits.make_splits(
        sorted(d for d in donors if d not in reserved), blocks=[{"name": n, "n_splits": k} for n, k in plan],
        n_test_donors=cfg["n_test_donors"], seed=snakemake.params.seed,
    )
    # reference donors are training donors of every split (they never enter a test set)
    block = table.drop_duplicates("split").set_index("split")["block"]
    extra = pd.DataFrame([(s, d, "train", block[s]) for s in block.index for d in sorted(reserved)],
                         columns=["split", "donor", "role", "block"])
    table = pd.concat([table, extra], ignore_index=True).sort_values(["split", "role", "donor"], kind="stable")
    log.info("%d splits over %d benchmark donors", table["split"].nunique(), len(donors) - len(reserved))
    write_tsv(table, snakemake.output[0])
