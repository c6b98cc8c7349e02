"""Rules export_operators, head_screen, operator_definitions, feature_map, adaptor: read snakemake.*, call fmextract,
write outputs."""

import itertools
import logging

import anndata as ad
import numpy as np
import pandas as pd

from fmextract import logs
from fmextract.io import read_tsv, write_tsv

logs.start(snakemake)
log = logging.getLogger("operators")
rule = snakemake.rule


def read_lines(path):
    with open(path) as fh:
        return [line.strip() for line in fh if line.strip()]


def load_ruler():
    """Stage x stage hop distances of the stage graph."""
    from fmextract import stages

    stage_ids = sorted(stages.load_stage_table(snakemake.input.stage_table)["stage"].unique())
    edges = stages.load_stage_graph(snakemake.input.stage_graph, stage_ids)
    return pd.DataFrame(stages.ruler_distances(stage_ids, edges), index=stage_ids, columns=stage_ids)


def reference_cells(genes):
    """Reference donors' cells of the benchmark panel (log1p X only, read backed), columns in `genes` order."""
    from fmextract.data import reference_cells as read_reference_cells

    return read_reference_cells(snakemake.input.h5ad, read_lines(snakemake.input.reference_donors), genes)


def reference_anchors(genes):
    """Anchor profiles and metadata of the reference donors, and the ruler."""
    from fmextract import data

    ref = reference_cells(genes)
    profiles, meta = data.anchors(ref, min_cells=snakemake.params.min_cells)
    data.require_anchors(meta, min_cells=snakemake.params.min_cells, source=str(snakemake.input.h5ad),
                         what=f"the {ref.obs['donor'].nunique()} reference donors ({ref.n_obs} cells)")
    log.info("%d anchors (donor x tissue x stage, >= %d cells) from %d reference cells", len(meta),
             snakemake.params.min_cells, ref.n_obs)
    return profiles, meta, load_ruler()


if rule == "export_operators":
    import torch

    from fmextract.chunks import open_backed, read_rows
    from fmextract.operators import (
        WEIGHT_DEFINITIONS, context_cells, export_operators, save_operators, weights_operators,
    )
    from fmextract.models import checkpoint_dir, load_model
    from fmextract.models.base import resolve_device

    torch.set_num_threads(snakemake.threads)
    cfg, definition, kind = snakemake.params.operators, snakemake.wildcards.definition, snakemake.params.kind
    device = resolve_device(snakemake.params.device)
    model = load_model(kind, checkpoint_dir(kind, snakemake.input), device=device)
    genes = read_lines(snakemake.input.genes)
    if definition in WEIGHT_DEFINITIONS:  # read from the checkpoint's weights: no data, no forward pass
        ops = weights_operators(model, genes, definition)
        log.info("read %s operators %s from the weights of %s", definition, ops.operators.shape, model.checkpoint_sha256)
    else:
        with open_backed(snakemake.input.h5ad) as panel:  # the benchmark panel: panel genes only, on disk
            donors = read_lines(snakemake.input.reference_donors)
            reference = np.flatnonzero(panel.obs["donor"].isin(donors).to_numpy())
            rows = np.zeros(panel.n_obs, dtype=bool)
            rows[reference[context_cells(len(reference), cfg["n_context"], snakemake.params.seed)]] = True
            counts = read_rows(panel.layers["counts"], rows)  # the sampled context cells' counts, nothing else
            context = ad.AnnData(obs=panel.obs[rows].copy(), var=panel.var.copy(), layers={"counts": counts})
        log.info("%d context cells of %d reference-donor cells read from %s; model on %s", context.n_obs,
                 len(reference), snakemake.input.h5ad, device)
        ops = export_operators(
            model, context, genes=genes, n_context=context.n_obs,
            definition=definition, seed=snakemake.params.seed, batch_size=cfg["batch_size"],
        )
        log.info("exported %s operators %s from %d context cells", definition, ops.operators.shape, context.n_obs)
    save_operators(ops, snakemake.output[0])

elif rule == "head_screen":
    from fmextract.features import pooled_drift_map
    from fmextract.operators import load_operators
    from fmextract.screen import score_features, screen_heads

    ops = load_operators(snakemake.input.operators)
    profiles, meta, ruler = reference_anchors(ops.genes)
    cfg = snakemake.params.adaptor
    kw = dict(d_latent=cfg["d_latent"], alpha=cfg["alpha"], beta=cfg["beta"], epochs=cfg["screen_epochs"], lr=cfg["lr"],
              batch_size=cfg["batch_size"], seed=snakemake.params.seed)
    table = screen_heads(ops.operators, profiles, meta, ruler, adaptor_kw=kw)
    log.info("%s head screen (leave-one-reference-donor-out, %d anchors of %d donors):\n%s", ops.definition, len(meta),
             meta["donor"].nunique(), table.head(10).to_string(index=False))
    pooled = score_features(pooled_drift_map(ops.operators, ops.genes).transform(profiles), meta, ruler, adaptor_kw=kw)
    log.info("pooled drift: %s", pooled)
    write_tsv(table.assign(definition=ops.definition), snakemake.output.heads)
    write_tsv(pd.DataFrame([{"definition": ops.definition, **pooled}]), snakemake.output.pooled)

elif rule == "operator_definitions":
    from fmextract.screen import definitions_table

    keys = list(itertools.product(snakemake.params.models, snakemake.params.definitions))  # expand()'s order
    screens = {k: read_tsv(path) for k, path in zip(keys, snakemake.input.screens)}
    pooled = {k: read_tsv(path) for k, path in zip(keys, snakemake.input.pooled)}
    planted = snakemake.params.planted
    table = definitions_table(screens, pooled, configured=snakemake.params.configured,
                              planted=(planted["layer"], planted["head"]))
    log.info("operator definitions on reference anchors:\n%s", table.to_string(index=False))
    write_tsv(table, snakemake.output.definitions)
    write_tsv(read_tsv(snakemake.input.configured), snakemake.output.screen)

elif rule == "feature_map":
    from fmextract.features import (
        FeatureMap, hard_sparse_map, head_map, identity_map, low_rank_map, map_rank, pca_map, pooled_drift_map,
    )
    from fmextract.operators import load_operators
    from fmextract.screen import top_heads

    feature = snakemake.wildcards.feature
    for prefix in ("untrained_", "planted_"):  # another model's map: same construction on its operators
        feature = feature.removeprefix(prefix)
    base, _, surrogate = feature.partition("_")
    if feature == "raw":
        fmap = identity_map(read_lines(snakemake.input.genes))
    elif feature == "raw_pca":  # comparator: PCA of reference cells' expression at the pooled-drift map's width
        width = snakemake.params.comparator_pca_comps or map_rank(FeatureMap.load(snakemake.input.width_of))
        genes = FeatureMap.load(snakemake.input.width_of).genes
        fmap = pca_map(reference_cells(genes).X, genes, width, seed=snakemake.params.seed)
    elif feature == "pooled_drift":
        ops = load_operators(snakemake.input.operators)
        fmap = pooled_drift_map(ops.operators, ops.genes)
    elif surrogate.startswith("rank"):
        fmap = low_rank_map(FeatureMap.load(snakemake.input.base), int(surrogate.removeprefix("rank")))
    elif surrogate == "sparse":
        fmap = hard_sparse_map(FeatureMap.load(snakemake.input.base), n_factors=snakemake.params.sparse_factors,
                               n_genes=snakemake.params.sparse_genes)
    else:
        ops = load_operators(snakemake.input.operators)
        heads, weights = top_heads(read_tsv(snakemake.input.screen), int(base.removeprefix("top")))
        fmap = head_map(ops.operators, ops.genes, heads, weights)
    log.info("%s: %s map %s", feature, fmap.kind, fmap.meta)
    fmap.save(snakemake.output[0])

elif rule == "adaptor":
    from fmextract.adaptor import cell_adaptor_kwargs, cell_training_set, fit_adaptor
    from fmextract.features import FeatureMap

    cfg = snakemake.params.adaptor
    fmap = FeatureMap.load(snakemake.input.feature_map)
    mode = snakemake.wildcards.mode
    if mode == "anchor":
        profiles, meta, ruler = reference_anchors(fmap.genes)
        F = fmap.transform(profiles)
        kw = dict(d_latent=cfg["d_latent"], alpha=cfg["alpha"], beta=cfg["beta"], epochs=cfg["epochs"], lr=cfg["lr"],
                  batch_size=cfg["batch_size"])
    else:  # the paper's cell-trained recipe: stage-balanced reference cells, four-term loss
        rows, meta = cell_training_set(reference_cells(fmap.genes), per_stage=cfg["cell_per_stage"],
                                       seed=snakemake.params.seed, source=str(snakemake.input.h5ad))
        F, ruler, kw = fmap.transform(rows.X), load_ruler(), cell_adaptor_kwargs(cfg)
        log.info("cell-trained adaptor: %d stage-balanced cells (<= %d per stage, %d stages); %s", len(meta),
                 cfg["cell_per_stage"], meta["stage"].nunique(), kw)
    adaptor = fit_adaptor(F, meta["stage"], ruler, **kw, seed=snakemake.params.seed)
    log.info("%s-trained adaptor on %d rows x %d features; loss %.4f -> %.4f", mode, *F.shape, adaptor.history[0],
             adaptor.history[-1])
    adaptor.save(snakemake.output.adaptor)
    write_tsv(meta, snakemake.output.training)
