"""Rule manifold_validation: gates on reference anchors, the shuffled-gene negative control, the untrained-model
control, zero-shot immune panel, and the supplementary second manifold (the same gates against the
intercellular-communication ruler)."""

import logging

import anndata as ad
import numpy as np
import pandas as pd

from fmextract import communication, data, logs, stages, validation
from fmextract.adaptor import Adaptor
from fmextract.features import FeatureMap
from fmextract.io import write_tsv

logs.to_file(snakemake.log[0])
log = logging.getLogger("validation")
cfg, acfg, seed = snakemake.params.validation, snakemake.params.adaptor, snakemake.params.seed

stage_ids = sorted(stages.load_stage_table(snakemake.input.stage_table)["stage"].unique())
ruler = pd.DataFrame(stages.ruler_distances(stage_ids, stages.load_stage_graph(snakemake.input.stage_graph, stage_ids)),
                     index=stage_ids, columns=stage_ids)
fmap = FeatureMap.load(snakemake.input.feature_map)
adaptor_kw = dict(d_latent=acfg["d_latent"], alpha=acfg["alpha"], beta=acfg["beta"], epochs=cfg["epochs"], lr=acfg["lr"],
                  batch_size=acfg["batch_size"], seed=seed)
kw = dict(adaptor_kw=adaptor_kw, n_permutations=cfg["n_permutations"], dims=cfg["dims"], seed=seed)

panel = ad.read_h5ad(snakemake.input.h5ad)
profiles, meta = data.anchors(panel[:, fmap.genes], min_cells=snakemake.params.min_cells)
data.require_anchors(meta, min_cells=snakemake.params.min_cells, source=str(snakemake.input.h5ad),
                     what=f"the {panel.obs['donor'].nunique()} donors of the benchmark panel")
F = fmap.transform(profiles)
log.info("reference: %d anchors over %d donors", len(meta), meta["donor"].nunique())
values = validation.manifold_metrics(F, meta, ruler, **kw)
frozen = Adaptor.load(snakemake.input.adaptor)
values.update(validation.branch_trajectories(frozen.transform(F), meta, n_permutations=cfg["n_permutations"], seed=seed))
tables = [validation.gate_table(values, "reference", cfg["gates"])]

shuffled = fmap.transform(validation.shuffle_gene_panel(profiles, seed=seed))
tables.append(validation.gate_table(validation.manifold_metrics(shuffled, meta, ruler, **kw), "negative_control_shuffled_genes",
                                    cfg["gates"]))

# The same validation on the untrained model's pooled-drift features: what the architecture alone gives the gates.
untrained = FeatureMap.load(snakemake.input.untrained_map)
tables.append(validation.gate_table(validation.manifold_metrics(untrained.transform(profiles), meta, ruler, **kw),
                                    "control_untrained_model", cfg["gates"]))

# Second manifold: the communication ruler from the reference anchors over all measured genes (an HVG panel holds few
# ligand-receptor genes); adaptor refitted against it inside manifold_metrics, same gates, same negative control.
pairs = communication.load_pairs(snakemake.input.lr_pairs)
with data.open_backed(snakemake.input.reference) as full:
    pairs_used = communication.usable_pairs(pairs, full.var_names)
    lr_genes = sorted(set(pairs_used["ligand"]) | set(pairs_used["receptor"]))
    X_lr, _ = data.align_genes(full, lr_genes)
    lr_profiles, lr_meta = data.anchors(ad.AnnData(X=X_lr, obs=full.obs), min_cells=snakemake.params.min_cells)
with open(snakemake.input.reference_donors) as fh:
    ruler_donors = {line.strip() for line in fh if line.strip()}
fit = lr_meta["donor"].astype(str).isin(ruler_donors).to_numpy()  # the ruler sees reserved reference donors only
comm_ruler = communication.communication_ruler(lr_profiles[fit], lr_meta[fit].reset_index(drop=True), lr_genes, pairs,
                                               source=snakemake.input.lr_pairs)
on_ruler = meta["stage"].astype(str).isin(comm_ruler.index).to_numpy()
log.info("communication ruler: %d of %d ligand-receptor pairs measured, %d stages from %d reference donors; "
         "%d of %d anchors on its stages", len(pairs_used), len(pairs), len(comm_ruler), len(ruler_donors),
         on_ruler.sum(), len(meta))
comm_meta = meta[on_ruler].reset_index(drop=True)
comm_kw = {**kw, "dims": []}  # supplementary: the gates without the dimension sweep
comm = validation.manifold_metrics(F[on_ruler], comm_meta, comm_ruler, **comm_kw)
comm["lr_pairs_used"] = float(len(pairs_used))
tables.append(validation.gate_table(comm, "communication", cfg["gates"]))
tables.append(validation.gate_table(validation.manifold_metrics(shuffled[on_ruler], comm_meta, comm_ruler, **comm_kw),
                                    "communication_negative_control_shuffled_genes", cfg["gates"]))

latent = pd.DataFrame(frozen.transform(F), columns=[f"z{i}" for i in range(frozen.W.shape[0])])
latent = pd.concat([meta.assign(panel="reference"), latent], axis=1)
if snakemake.input.immune:
    immune = ad.read_h5ad(snakemake.input.immune[0])
    X, coverage = data.align_genes(immune, fmap.genes)
    log.info("immune panel: %.1f%% of panel genes present (missing genes set to 0)", 100 * coverage)
    imm_profiles, imm_meta = data.anchors(ad.AnnData(X=X, obs=immune.obs), min_cells=snakemake.params.min_cells)
    data.require_anchors(imm_meta, min_cells=snakemake.params.min_cells, source=snakemake.input.immune[0],
                         what=f"the {immune.obs['donor'].nunique()} donors of the immune panel")
    F_imm = fmap.transform(imm_profiles)
    Z_imm = frozen.transform(F_imm)
    zs = validation.zero_shot_metrics(F_imm, imm_meta, Z_imm, ruler, n_permutations=cfg["n_permutations"], seed=seed)
    zs["gene_coverage"] = coverage
    tables.append(validation.gate_table(zs, "immune", cfg["gates"]))
    imm_latent = pd.DataFrame(Z_imm, columns=latent.columns[-Z_imm.shape[1]:])
    latent = pd.concat([latent, pd.concat([imm_meta.assign(panel="immune"), imm_latent], axis=1)], ignore_index=True)

table = pd.concat(tables, ignore_index=True)
log.info("\n%s", table.to_string(index=False))
write_tsv(table, snakemake.output.table)
write_tsv(latent, snakemake.output.latent)
