"""Rule manifold_validation: gates on reference anchors, the shuffled-gene negative control, zero-shot immune panel."""

import logging

import anndata as ad
import numpy as np
import pandas as pd

from fmextract import data, logs, stages, validation
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
F = fmap.transform(profiles)
log.info("reference: %d anchors over %d donors", len(meta), meta["donor"].nunique())
values = validation.manifold_metrics(F, meta, ruler, **kw)
frozen = Adaptor.load(snakemake.input.adaptor)
values.update(validation.branch_trajectories(frozen.transform(F), meta, n_permutations=cfg["n_permutations"], seed=seed))
tables = [validation.gate_table(values, "reference", cfg["gates"])]

shuffled = fmap.transform(validation.shuffle_gene_panel(profiles, seed=seed))
tables.append(validation.gate_table(validation.manifold_metrics(shuffled, meta, ruler, **kw), "negative_control_shuffled_genes",
                                    cfg["gates"]))

latent = pd.DataFrame(frozen.transform(F), columns=[f"z{i}" for i in range(frozen.W.shape[0])])
latent = pd.concat([meta.assign(panel="reference"), latent], axis=1)
if snakemake.input.immune:
    immune = ad.read_h5ad(snakemake.input.immune[0])
    X, coverage = data.align_genes(immune, fmap.genes)
    log.info("immune panel: %.1f%% of panel genes present (missing genes set to 0)", 100 * coverage)
    imm_profiles, imm_meta = data.anchors(ad.AnnData(X=X, obs=immune.obs), min_cells=snakemake.params.min_cells)
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
