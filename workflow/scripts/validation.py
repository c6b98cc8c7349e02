"""Rule manifold_validation: the internal panel (reference donors' anchors, the adaptor's own), the external panel
(benchmark donors' anchors, frozen adaptor: the headline), zero-shot immune transfer, the controls whose verdict must
fail (each through the external protocol), the planted-head positive control, the supplementary communication
manifold, and the per-gate separation of real panels from controls."""

import logging

import anndata as ad
import pandas as pd

from fmextract import communication, data, logs, stages, validation
from fmextract.adaptor import Adaptor, fit_adaptor
from fmextract.features import FeatureMap
from fmextract.io import write_tsv

logs.start(snakemake)
log = logging.getLogger("validation")
cfg, acfg, seed = snakemake.params.validation, snakemake.params.adaptor, snakemake.params.seed
gates, n_perm, min_cells = cfg["gates"], cfg["n_permutations"], snakemake.params.min_cells

stage_ids = sorted(stages.load_stage_table(snakemake.input.stage_table)["stage"].unique())
ruler = pd.DataFrame(stages.ruler_distances(stage_ids, stages.load_stage_graph(snakemake.input.stage_graph, stage_ids)),
                     index=stage_ids, columns=stage_ids)
fmap = FeatureMap.load(snakemake.input.feature_map)
frozen = Adaptor.load(snakemake.input.adaptor)
common = dict(alpha=acfg["alpha"], beta=acfg["beta"], lr=acfg["lr"], batch_size=acfg["batch_size"], seed=seed)
holdout_kw = dict(d_latent=acfg["d_latent"], epochs=cfg["epochs"], **common)  # holdout refits of the internal panel
anchor_kw = dict(d_latent=acfg["d_latent"], epochs=acfg["epochs"], **common)  # the anchor-trained adaptor's recipe

with open(snakemake.input.reference_donors) as fh:
    reference_donors = {line.strip() for line in fh if line.strip()}


def panel_anchors(path, name="the"):
    """Anchors of a prepared panel over the feature map's genes (absent genes as zero), read backed: only the map's
    columns; stops with one line when too few anchors reach anchors.min_cells."""
    with data.open_backed(path) as panel:
        X, coverage = data.align_genes(panel, fmap.genes)
        obs = panel.obs.copy()
    P, M = data.anchors(ad.AnnData(X=X, obs=obs), min_cells=min_cells)
    data.require_anchors(M, min_cells=min_cells, source=str(path), what=f"{name} {obs['donor'].nunique()} donors")
    log.info("%s: %.1f%% of panel genes present (missing genes set to 0), %d anchors", path, 100 * coverage, len(M))
    return P, M, coverage


profiles, meta, _ = panel_anchors(snakemake.input.h5ad, "the benchmark panel's")
is_ref = meta["donor"].astype(str).isin(reference_donors).to_numpy()
P_ref, M_ref = profiles[is_ref], meta[is_ref].reset_index(drop=True)
P_ext, M_ext = profiles[~is_ref], meta[~is_ref].reset_index(drop=True)
log.info("internal: %d anchors of %d reference donors; external: %d anchors of %d benchmark donors", len(M_ref),
         M_ref["donor"].nunique(), len(M_ext), M_ext["donor"].nunique())
tables = []


def add(values, name):
    tables.append(validation.gate_table(values, name, gates))
    verdict = tables[-1].set_index("metric")["passed"].get("all_gates")
    log.info("%s: verdict %s", name, "PASS" if verdict else "fail")


def refit_external(F_ref, F_ext, target_ruler, meta_ref=M_ref, meta_ext=M_ext):
    """The external protocol for a control: the anchor adaptor's recipe refitted on its reference anchors, frozen,
    scored on the external anchors."""
    refit = fit_adaptor(F_ref, meta_ref["stage"], target_ruler, **anchor_kw)
    return validation.external_metrics(F_ext, meta_ext, target_ruler, adaptor=refit, n_permutations=n_perm, seed=seed)


F_ref, F_ext = fmap.transform(P_ref), fmap.transform(P_ext)
add(validation.internal_metrics(F_ref, M_ref, ruler, adaptor=frozen, adaptor_kw=holdout_kw, n_permutations=n_perm,
                                dims=cfg["dims"], seed=seed), "internal")
Z_ext = frozen.transform(F_ext)
external = validation.external_metrics(F_ext, M_ext, ruler, adaptor=frozen, n_permutations=n_perm, seed=seed)
external.update(validation.branch_trajectories(Z_ext, M_ext, n_permutations=n_perm, seed=seed))
add(external, "external")

latent = pd.concat([
    pd.concat([m.assign(panel=name), pd.DataFrame(frozen.transform(F), columns=[f"z{i}" for i in range(frozen.W.shape[0])])],
              axis=1)
    for name, m, F in (("internal", M_ref, F_ref), ("external", M_ext, F_ext))], ignore_index=True)


if snakemake.input.immune:  # zero-shot: the frozen head on an independent panel
    P_imm, M_imm, coverage = panel_anchors(snakemake.input.immune[0])
    F_imm = fmap.transform(P_imm)
    Z_imm = frozen.transform(F_imm)
    zs = validation.zero_shot_metrics(F_imm, M_imm, Z_imm, ruler, n_permutations=n_perm, seed=seed)
    zs["gene_coverage"] = coverage
    add(zs, "immune")
    latent = pd.concat([latent, pd.concat([M_imm.assign(panel="immune"),
                                           pd.DataFrame(Z_imm, columns=latent.columns[-Z_imm.shape[1]:])], axis=1)],
                       ignore_index=True)

# Controls whose verdict must fail, each through the external protocol.
# Null branch: same cells and operators, the ruler relabelled by a seeded permutation of the stage graph.
null_ruler = validation.permuted_ruler(ruler, seed=seed)
add(refit_external(F_ref, F_ext, null_ruler), "control_null_branch")
# Mismatched compartment: a panel with no hematopoietic manifold, labelled onto the ruler; the frozen adaptor.
if snakemake.input.mismatched:
    P_mis, M_mis, coverage = panel_anchors(snakemake.input.mismatched[0])
    F_mis = fmap.transform(P_mis)
    mis = validation.external_metrics(F_mis, M_mis, ruler, adaptor=frozen, n_permutations=n_perm, seed=seed)
    mis["gene_coverage"] = coverage
    add(mis, "control_mismatched_compartment")
# Shuffled gene panel: every gene's values permuted across anchors (reference and external shuffled separately).
S_ref, S_ext = (validation.shuffle_gene_panel(P, seed=seed + k) for k, P in enumerate((P_ref, P_ext)))
add(refit_external(fmap.transform(S_ref), fmap.transform(S_ext), ruler), "control_shuffled_genes")
# Untrained model: the same architecture with fresh weights.
untrained = FeatureMap.load(snakemake.input.untrained_map)
add(refit_external(untrained.transform(P_ref), untrained.transform(P_ext), ruler), "control_untrained_model")
# Permuted operator: the operator's gene labels permuted (P A Pᵀ per block).
permuted = FeatureMap(genes=fmap.genes, kind="permuted", matrix=validation.permuted_operator(fmap.dense(), seed=seed))
add(refit_external(permuted.transform(P_ref), permuted.transform(P_ext), ruler), "control_permuted_operator")
# Positive control: the planted-head model's pooled drift, the same protocol; its verdict must pass.
planted = FeatureMap.load(snakemake.input.planted_map)
add(refit_external(planted.transform(P_ref), planted.transform(P_ext), ruler), "planted_model")

# Second manifold (supplementary): the communication ruler from the reserved reference donors over all measured
# genes (an HVG panel holds few ligand-receptor genes); the external protocol on anchors of the ruler's stages.
pairs = communication.load_pairs(snakemake.input.lr_pairs)
with data.open_backed(snakemake.input.reference) as full:
    pairs_used = communication.usable_pairs(pairs, full.var_names)
    n_pairs_used = pairs_used["interaction"].nunique()  # gene-level rows: a complex's subunits repeat its pair
    lr_genes = sorted(set(pairs_used["ligand"]) | set(pairs_used["receptor"]))
    X_lr, _ = data.align_genes(full, lr_genes)
    lr_profiles, lr_meta = data.anchors(ad.AnnData(X=X_lr, obs=full.obs), min_cells=min_cells)
fit = lr_meta["donor"].astype(str).isin(reference_donors).to_numpy()  # the ruler sees reserved reference donors only
comm_ruler = communication.communication_ruler(lr_profiles[fit], lr_meta[fit].reset_index(drop=True), lr_genes, pairs,
                                               source=snakemake.input.lr_pairs)
on_ref, on_ext = (m["stage"].astype(str).isin(comm_ruler.index).to_numpy() for m in (M_ref, M_ext))
log.info("communication ruler: %d of %d ligand-receptor pairs measured, %d stages from %d reference donors; "
         "%d reference and %d external anchors on its stages", n_pairs_used, len(pairs), len(comm_ruler),
         len(reference_donors), on_ref.sum(), on_ext.sum())
comm_meta = (M_ref[on_ref].reset_index(drop=True), M_ext[on_ext].reset_index(drop=True))
comm = refit_external(F_ref[on_ref], F_ext[on_ext], comm_ruler, *comm_meta)
comm["lr_pairs_used"] = float(n_pairs_used)
add(comm, "communication")
add(refit_external(fmap.transform(S_ref)[on_ref], fmap.transform(S_ext)[on_ext], comm_ruler, *comm_meta),
    "communication_control_shuffled_genes")

table = pd.concat(tables, ignore_index=True)
log.info("\n%s", table.to_string(index=False))
separation = validation.gate_separation(table)
log.info("gate separation:\n%s", separation.to_string(index=False))
write_tsv(table, snakemake.output.table)
write_tsv(separation, snakemake.output.separation)
write_tsv(latent, snakemake.output.latent)
