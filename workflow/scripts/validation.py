"""Rule manifold_validation, for both adaptors (anchor- and cell-trained): the internal panel (reference donors'
anchors), the external panel (benchmark donors' anchors, frozen adaptor: the headline) and zero-shot immune transfer,
each beside the comparators (raw expression, its PCA: the same protocol, their own adaptors) with the attribution
table; the controls whose verdict must fail (each through the external protocol; the mismatched compartment on its
own lineage ruler), the planted-head positive control, the supplementary communication manifold, and the per-gate
separation of real panels from controls."""

import logging

import anndata as ad
import numpy as np
import pandas as pd

from fmextract import attribution, communication, data, logs, stages, validation
from fmextract.adaptor import Adaptor, cell_adaptor_kwargs, cell_training_set, fit_adaptor
from fmextract.errors import InputError
from fmextract.features import FeatureMap
from fmextract.io import write_tsv

logs.start(snakemake)
log = logging.getLogger("validation")
cfg, acfg, seed = snakemake.params.validation, snakemake.params.adaptor, snakemake.params.seed
gates, n_perm, min_cells = cfg["gates"], cfg["n_permutations"], snakemake.params.min_cells
MODES = ("anchor", "cell")  # both adaptors: the anchor-trained (the gates' own) and the cell-trained (benchmark winner)


def load_ruler(table_path, graph_path):
    """Stage x stage hop distances of a stage graph."""
    ids = sorted(stages.load_stage_table(table_path)["stage"].unique())
    return pd.DataFrame(stages.ruler_distances(ids, stages.load_stage_graph(graph_path, ids)), index=ids, columns=ids)


ruler = load_ruler(snakemake.input.stage_table, snakemake.input.stage_graph)
fmap = FeatureMap.load(snakemake.input.feature_map)
#: frozen feature maps, each with its two frozen adaptors from the adaptor rule: pooled drift, the comparators (raw
#: expression, its PCA), the untrained and the planted model's pooled drift
maps = {name: FeatureMap.load(path) for name, path in (
    ("pooled_drift", snakemake.input.feature_map), ("raw_expression", snakemake.input.raw_map),
    ("raw_pca", snakemake.input.raw_pca_map), ("untrained", snakemake.input.untrained_map),
    ("planted", snakemake.input.planted_map))}
for name, m in maps.items():  # every map reads the same genes in the same order (the anchors are aligned to them)
    if m.genes != fmap.genes:
        raise InputError(f"{snakemake.input.feature_map}: the {name} map's genes differ from pooled drift's; rebuild "
                         "results/operators/ from one gene panel")
frozen = {mode: {name: Adaptor.load(getattr(snakemake.input, f"{name}_{mode}")) for name in maps} for mode in MODES}
common = dict(alpha=acfg["alpha"], beta=acfg["beta"], lr=acfg["lr"], batch_size=acfg["batch_size"], seed=seed)
holdout_kw = dict(d_latent=acfg["d_latent"], epochs=cfg["epochs"], **common)  # holdout refits of the internal panel
recipes = {"anchor": dict(d_latent=acfg["d_latent"], epochs=acfg["epochs"], **common),  # the adaptor rule's recipes
           "cell": dict(**cell_adaptor_kwargs(acfg), seed=seed)}
COMPARATORS = {"raw_expression": "comparator_raw_expression", "raw_pca": "comparator_raw_pca"}

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
# the cell recipe's training cells (the adaptor rule's own draw), for the controls refitted with that recipe
cells, M_cells = cell_training_set(data.reference_cells(snakemake.input.h5ad, sorted(reference_donors), fmap.genes),
                                   per_stage=acfg["cell_per_stage"], seed=seed, source=str(snakemake.input.h5ad))
P_cells = np.asarray(cells.X.toarray() if hasattr(cells.X, "toarray") else cells.X, dtype=np.float32)
tables, attributions = [], []


def add(values, name, mode):
    tables.append(validation.gate_table(values, name, gates).assign(adaptor=mode))
    verdict = tables[-1].set_index("metric")["passed"].get("all_gates")
    log.info("%s (%s-trained adaptor): verdict %s", name, mode, "PASS" if verdict else "fail")


def refit_external(mode, transform, target_ruler, ref=(P_ref, M_ref), ext=(P_ext, M_ext), train_cells=(P_cells, M_cells)):
    """The external protocol for a control: the `mode` adaptor recipe refitted on its reference anchors (anchor) or
    the reference training cells (cell) mapped by `transform`, frozen, scored on the external anchors."""
    rows, rows_meta = ref if mode == "anchor" else train_cells
    refit = fit_adaptor(transform(rows), rows_meta["stage"], target_ruler, **recipes[mode])
    return validation.external_metrics(transform(ext[0]), ext[1], target_ruler, adaptor=refit, n_permutations=n_perm,
                                       seed=seed)


def attribute(panel, mode, meta_panel, features, score, observed):
    """attribution.tsv rows of one panel and adaptor: extracted minus each comparator, donor-clustered bootstrap CI."""
    reps = attribution.bootstrap_values(features, meta_panel, score, n_bootstrap=cfg["n_bootstrap"], seed=seed)
    directions = {**{m: d for m, (_, d) in validation.GATES.items()}, "residualised_spearman": ">="}
    attributions.append(attribution.attribution_rows(
        observed, reps, extracted="pooled_drift", comparators={k: k for k in COMPARATORS}, gates=directions,
        panel=panel, adaptor=mode))


def latent_rows(panel, meta_panel, Z):
    """Rows of anchor_latent.tsv: a panel's anchor meta beside its latent coordinates z0, z1, ..."""
    return pd.concat([meta_panel.assign(panel=panel), pd.DataFrame(Z, columns=[f"z{i}" for i in range(Z.shape[1])])],
                     axis=1)


F_ref = {name: m.transform(P_ref) for name, m in maps.items()}
F_ext = {name: m.transform(P_ext) for name, m in maps.items()}
immune = panel_anchors(snakemake.input.immune[0]) if snakemake.input.immune else None
F_imm = {name: m.transform(immune[0]) for name, m in maps.items()} if immune else {}
mismatched = None
if snakemake.input.get("mismatched"):  # non-hematopoietic anchors and their own lineage ruler
    mismatched = (*panel_anchors(snakemake.input.mismatched),
                  load_ruler(snakemake.input.mismatched_stage_table, snakemake.input.mismatched_stage_graph))
S_ref, S_ext, S_cells = (validation.shuffle_gene_panel(P, seed=seed + k) for k, P in enumerate((P_ref, P_ext, P_cells)))
permuted = FeatureMap(genes=fmap.genes, kind="permuted", matrix=validation.permuted_operator(fmap.dense(), seed=seed))
latent = []
for mode in MODES:
    A = frozen[mode]
    add(validation.internal_metrics(F_ref["pooled_drift"], M_ref, ruler, adaptor=A["pooled_drift"],
                                    adaptor_kw=holdout_kw if mode == "anchor" else None, n_permutations=n_perm,
                                    dims=cfg["dims"], seed=seed), "internal", mode)
    # external panel: pooled drift (the claim) and the comparators, the same protocol with each one's own adaptor
    observed = {}
    for name in ("pooled_drift", *COMPARATORS):
        observed[name] = validation.external_metrics(F_ext[name], M_ext, ruler, adaptor=A[name], n_permutations=n_perm,
                                                     seed=seed)
    Z_ext = A["pooled_drift"].transform(F_ext["pooled_drift"])
    add({**observed["pooled_drift"],
         **validation.branch_trajectories(Z_ext, M_ext, n_permutations=n_perm, seed=seed)}, "external", mode)
    for name, panel in COMPARATORS.items():
        add(observed[name], panel, mode)
    attribute("external", mode, M_ext, {k: F_ext[k] for k in observed},
              lambda name, F, m: validation.frozen_gate_values(F, m, ruler, adaptor=A[name], seed=seed), observed)
    if mode == "anchor":  # the anchor-trained latent of the figures
        for name, m, F in (("internal", M_ref, F_ref["pooled_drift"]), ("external", M_ext, F_ext["pooled_drift"])):
            latent.append(latent_rows(name, m, A["pooled_drift"].transform(F)))

    if immune:  # zero-shot: the frozen head (and the comparators) on an independent panel
        P_imm, M_imm, coverage = immune
        observed = {}
        for name in ("pooled_drift", *COMPARATORS):
            Z = A[name].transform(F_imm[name])
            observed[name] = {**validation.zero_shot_metrics(F_imm[name], M_imm, Z, ruler, n_permutations=n_perm,
                                                             seed=seed), "gene_coverage": coverage}
        add(observed["pooled_drift"], "immune", mode)
        for name, panel in COMPARATORS.items():
            add(observed[name], f"{panel}_immune", mode)
        attribute("immune", mode, M_imm, {k: F_imm[k] for k in observed},
                  lambda name, F, m: validation.zero_shot_gate_values(F, m, A[name].transform(F), ruler), observed)
        if mode == "anchor":
            latent.append(latent_rows("immune", M_imm, A["pooled_drift"].transform(F_imm["pooled_drift"])))

    # Controls whose verdict must fail, each through the external protocol.
    # Null branch: same cells and operators, the ruler relabelled by a seeded permutation of the stage graph.
    add(refit_external(mode, fmap.transform, validation.permuted_ruler(ruler, seed=seed)), "control_null_branch", mode)
    # Mismatched compartment: non-hematopoietic cells on their own lineage ruler; the frozen operator and adaptor.
    if mismatched:
        P_mis, M_mis, coverage, mis_ruler = mismatched
        mis = validation.external_metrics(fmap.transform(P_mis), M_mis, mis_ruler, adaptor=A["pooled_drift"],
                                          n_permutations=n_perm, seed=seed)
        add({**mis, "gene_coverage": coverage}, "control_mismatched_compartment", mode)
    # Shuffled gene panel: every gene's values permuted across rows (reference, external and cells shuffled apart).
    add(refit_external(mode, fmap.transform, ruler, (S_ref, M_ref), (S_ext, M_ext), (S_cells, M_cells)),
        "control_shuffled_genes", mode)
    # Untrained model: the same architecture with fresh weights, its own frozen adaptor.
    add(validation.external_metrics(F_ext["untrained"], M_ext, ruler, adaptor=A["untrained"], n_permutations=n_perm,
                                    seed=seed), "control_untrained_model", mode)
    # Permuted operator: the operator's gene labels permuted (P A Pᵀ per block).
    add(refit_external(mode, permuted.transform, ruler), "control_permuted_operator", mode)
    # Positive control: the planted-head model's pooled drift and its own frozen adaptor; its verdict must pass.
    add(validation.external_metrics(F_ext["planted"], M_ext, ruler, adaptor=A["planted"], n_permutations=n_perm,
                                    seed=seed), "planted_model", mode)

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
on_cells = M_cells["stage"].astype(str).isin(comm_ruler.index).to_numpy()
comm_meta = (M_ref[on_ref].reset_index(drop=True), M_ext[on_ext].reset_index(drop=True),
             M_cells[on_cells].reset_index(drop=True))
for mode in MODES:
    comm = refit_external(mode, fmap.transform, comm_ruler, *zip((P_ref[on_ref], P_ext[on_ext], P_cells[on_cells]),
                                                                 comm_meta))
    add({**comm, "lr_pairs_used": float(n_pairs_used)}, "communication", mode)
    add(refit_external(mode, fmap.transform, comm_ruler, *zip((S_ref[on_ref], S_ext[on_ext], S_cells[on_cells]),
                                                              comm_meta)),
        "communication_control_shuffled_genes", mode)

table = pd.concat(tables, ignore_index=True)
table = table[["metric", "panel", "adaptor", *[c for c in table.columns if c not in ("metric", "panel", "adaptor")]]]
attribution_table = pd.concat(attributions, ignore_index=True) if attributions else pd.DataFrame(
    columns=attribution.COLUMNS)
log.info("attribution (extracted - comparator, donor-clustered bootstrap 95%% CI):\n%s",
         attribution_table.to_string(index=False))
log.info("%s", attribution.attention_sentence(attribution_table))
log.info("\n%s", table.to_string(index=False))
separation = validation.gate_separation(table)
log.info("gate separation:\n%s", separation.to_string(index=False))
write_tsv(table, snakemake.output.table)
write_tsv(separation, snakemake.output.separation)
write_tsv(pd.concat(latent, ignore_index=True), snakemake.output.latent)
write_tsv(attribution_table, snakemake.output.attribution)
