"""Rules export_head, apply_head: bundle the extracted algorithm into one file; apply it to the immune panel."""

import logging
import time

import anndata as ad
import numpy as np

from fmextract import data, logs
from fmextract.adaptor import Adaptor
from fmextract.features import FeatureMap
from fmextract.head import PREFIX, Head, build_head
from fmextract.splits import cap_training_cells

logs.to_file(snakemake.log[0])
log = logging.getLogger("head")

if snakemake.rule == "export_head":
    # training donors: every donor of the benchmark panel (the head is the final product; no cells are held out)
    panel = ad.read_h5ad(snakemake.input.h5ad)
    donors = sorted(panel.obs["donor"].astype(str).unique())
    train = panel[cap_training_cells(panel.obs, donors, snakemake.params.max_train_cells, snakemake.params.seed)].copy()
    head = build_head(FeatureMap.load(snakemake.input.feature_map), Adaptor.load(snakemake.input.adaptor), train,
                      subtypes=snakemake.params.subtypes, seed=snakemake.params.seed, source=snakemake.input.h5ad)
    head.save(snakemake.output[0])
    log.info("head: %d genes, %s map, %d-D latent; readouts fitted on %d cells of %d donors; parameters %s; skipped %s",
             len(head.genes), head.fmap.kind, head.meta["latent_dim"], train.n_obs, len(donors),
             head.meta["n_parameters"], head.readouts.skipped or "none")

elif snakemake.rule == "apply_head":
    head = Head.load(snakemake.input.head)
    panel = ad.read_h5ad(snakemake.input.h5ad)
    start = time.perf_counter()
    head.apply(panel, counts_layer="counts", source=snakemake.input.h5ad, inplace=True)
    seconds = time.perf_counter() - start
    info = panel.uns["fmextract"]
    log.info("%d cells in %.2f s; %d of %d panel genes found (coverage %.1f%%)", panel.n_obs, seconds,
             info["n_genes_found"], info["n_panel_genes"], 100 * info["coverage"])
    for key in ("branch", "stage"):  # zero-shot agreement with the panel's own harmonised labels (a log line, no gate)
        if key in panel.obs:
            known = panel.obs[key].notna().to_numpy()  # coarse labels have a branch but no stage
            agree = np.mean(panel.obs[f"{PREFIX}{key}"].astype(str).to_numpy()[known]
                            == panel.obs[key].astype(str).to_numpy()[known]) if known.any() else np.nan
            log.info("%s agreement with obs['%s'] (%d labelled cells): %.3f", key, key, known.sum(), agree)
    data.write_h5ad(panel, snakemake.output[0])
