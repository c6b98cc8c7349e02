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

logs.start(snakemake)
log = logging.getLogger("head")

if snakemake.rule == "export_head":
    # training donors: every donor of the benchmark panel (the head is the final product; no cells are held out)
    with data.open_backed(snakemake.input.h5ad) as panel:  # only the capped training cells' log1p rows are read
        donors = sorted(panel.obs["donor"].astype(str).unique())
        rows = panel.obs_names.isin(cap_training_cells(panel.obs, donors, snakemake.params.max_train_cells,
                                                       snakemake.params.seed))
        train = ad.AnnData(X=data.read_rows(panel.X, rows), obs=panel.obs[rows].copy(), var=panel.var.copy())
    head = build_head(FeatureMap.load(snakemake.input.feature_map), Adaptor.load(snakemake.input.adaptor), train,
                      subtypes=snakemake.params.subtypes, seed=snakemake.params.seed, model_kind=snakemake.params.kind,
                      source=snakemake.input.h5ad)
    head.save(snakemake.output[0])
    log.info("head: %d genes, %s map, %d-D latent; readouts fitted on %d cells of %d donors; parameters %s; skipped %s",
             len(head.genes), head.fmap.kind, head.meta["latent_dim"], train.n_obs, len(donors),
             head.meta["n_parameters"], head.readouts.skipped or "none")

elif snakemake.rule == "apply_head":
    head = Head.load(snakemake.input.head)
    with data.open_backed(snakemake.input.h5ad) as panel:  # all genes, counts read batch by batch (never whole)
        start = time.perf_counter()
        head.apply(panel, counts_layer="counts", source=snakemake.input.h5ad, inplace=True)
        seconds = time.perf_counter() - start
        # annotations only: the panel's expression stays in its own file
        applied = ad.AnnData(obs=panel.obs, obsm=dict(panel.obsm), uns={"fmextract": panel.uns["fmextract"]})
    info = applied.uns["fmextract"]
    log.info("%d cells in %.2f s; %d of %d panel genes found (coverage %.1f%%)", applied.n_obs, seconds,
             info["n_genes_found"], info["n_panel_genes"], 100 * info["coverage"])
    for key in ("branch", "stage"):  # zero-shot agreement with the panel's own harmonised labels (a log line, no gate)
        if key in applied.obs:
            known = applied.obs[key].notna().to_numpy()  # coarse labels have a branch but no stage
            agree = np.mean(applied.obs[f"{PREFIX}{key}"].astype(str).to_numpy()[known]
                            == applied.obs[key].astype(str).to_numpy()[known]) if known.any() else np.nan
            log.info("%s agreement with obs['%s'] (%d labelled cells): %.3f", key, key, known.sum(), agree)
    data.write_h5ad(applied, snakemake.output[0])
