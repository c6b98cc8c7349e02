"""The demo simulator's non-hematopoietic compartment: the mismatched-compartment control panel.

Epithelial, endothelial and fibroblast cells with their own marker genes and one program per tissue, and no stage
structure (no continuum, no branches). Hematopoietic genes keep the shared "biology" of `fmextract.simulate` (same
base levels and dispersions from `biology_seed`), with every marker program off and leukocyte genes low. Each
(cell type x tissue) group is labelled onto the hematopoietic ruler by a seeded arbitrary assignment to a distinct
stage (its first label in the stage table), the role the paper's lung panel plays: a panel on which no hematopoietic
manifold can be found. The true identity stays in `true_cell_type`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract.errors import InputError
from fmextract.simulate import base_levels, gene_list, nb_counts, stage_profiles
from fmextract.stages import fine_stages, stage_info

#: Cell types: their own marker genes (weight 1 unless `gene:w`) and shifts of shared genes.
CELL_TYPES: dict[str, str] = {
    "epithelial": "EPCAM KRT8 KRT18 KRT19 CDH1 CLDN4 CLDN7 ELF3 SPINT2 S100A6:0.6",
    "endothelial": "PECAM1 CDH5 KDR CLDN5 EMCN ESAM RAMP2 SPARCL1 VWF:0.8 VIM:0.6",
    "fibroblast": "COL1A1 COL1A2 COL3A1 DCN LUM PDGFRA FBLN1 MGP VIM:0.8",
}
#: Tissue programs: genes on in that tissue (fully in epithelial cells, at TISSUE_SHARE elsewhere).
TISSUE_PROGRAMS: dict[str, str] = {
    "lung": "SFTPC SFTPB SFTPA1 AGER NAPSA SCGB1A1",
    "gut": "VIL1 CDX2 MUC2 LGALS4 FABP1 TFF3",
    "skin": "KRT14 KRT5 KRT1 LOR DSP COL17A1",
    "kidney": "UMOD SLC34A1 LRP2 PAX8 CUBN",
}
TISSUE_SHARE = 0.3
#: Leukocyte genes of the shared gene list that non-hematopoietic cells do not express.
LEUKOCYTE_GENES = ("PTPRC", "CORO1A", "LCP1", "RAC2", "ARHGDIB")
#: Expected share of each cell type in every tissue (donors vary around it).
COMPOSITION = {"epithelial": 0.5, "endothelial": 0.25, "fibroblast": 0.25}


def _spec(spec: str) -> dict[str, float]:
    out = {}
    for item in spec.split():
        name, _, w = item.partition(":")
        out[name] = float(w) if w else 1.0
    return out


def assign_stages(groups: Sequence[str], stage_table: pd.DataFrame, *, seed: int) -> dict[str, str]:
    """Seeded arbitrary map of each group (e.g. 'epithelial|lung') to a distinct fine stage of the table."""
    stages = fine_stages(stage_table)
    if len(groups) > len(stages):
        raise InputError(f"simulate: {len(groups)} non-hematopoietic groups but only {len(stages)} stages to label them "
                         "with; use fewer tissues")
    picks = np.random.default_rng(seed).choice(len(stages), size=len(groups), replace=False)
    return {g: stages[i] for g, i in zip(groups, picks)}


def simulate_compartment(
    stage_table: pd.DataFrame,
    edges: Sequence[tuple[str, str]],
    programs: Mapping[str, Sequence[str]],
    background: Sequence[str],
    *,
    donors: Sequence[str],
    tissues: Sequence[str],
    cells_per_donor: int,
    seed: int,
    biology_seed: int = 0,
    mean_library: float = 1000.0,
    library_sd: float = 0.45,
    marker_off: float = -3.5,
    type_log_fold: float = 3.5,
    leukocyte_log_fold: float = -2.5,
    type_gene_sd: float = 0.3,
    donor_gene_sd: float = 0.3,
    tissue_gene_sd: float = 0.1,
) -> ad.AnnData:
    """Simulate the non-hematopoietic compartment: integer counts with donor/tissue/label obs and truth columns.

    Genes: the hematopoietic simulator's list (marker programs + background) followed by the compartment's own
    genes. `cell_type` holds the arbitrary hematopoietic label of the cell's (type x tissue) group; `true_cell_type`
    and `true_compartment` the truth.
    """
    donors = [str(d) for d in donors]
    if not donors or len(set(donors)) != len(donors):
        raise InputError(f"simulate: donors {donors[:5]} must be a non-empty list of unique ids; fix panels.*.simulate.donors")
    unknown = [t for t in tissues if t not in TISSUE_PROGRAMS]
    if unknown or not tissues:
        raise InputError(f"simulate: tissue '{(unknown or ['(none)'])[0]}' has no non-hematopoietic program; use one of "
                         f"{', '.join(TISSUE_PROGRAMS)}")
    if cells_per_donor < 1:
        raise InputError(f"simulate: cells_per_donor={cells_per_donor} must be >= 1; fix panels.*.simulate.cells_per_donor")
    info = stage_info(stage_table)
    heme_genes, heme_program = gene_list(programs, background, None)
    base_h, _ = base_levels(heme_program, marker_off=marker_off, rng=np.random.default_rng(biology_seed))
    _, dispersion_h = stage_profiles(heme_genes, heme_program, info, edges, marker_log_fold=3.5, marker_off=marker_off,
                                     leak=0.7, stage_drift_sd=0.03, seed=biology_seed)
    own = {t: _spec(s) for t, s in CELL_TYPES.items()}
    tissue_genes = {t: _spec(TISSUE_PROGRAMS[t]) for t in tissues}
    extra = [g for spec in [*own.values(), *tissue_genes.values()] for g in spec if g not in set(heme_genes)]
    genes = heme_genes + list(dict.fromkeys(extra))
    index = {g: i for i, g in enumerate(genes)}
    n_g, types = len(genes), list(CELL_TYPES)

    bio = np.random.default_rng([biology_seed, 1])  # the compartment's own biology; the hematopoietic stream untouched
    base = np.r_[base_h, bio.normal(marker_off, 0.7, n_g - len(heme_genes))]
    dispersion = np.r_[dispersion_h, np.exp(bio.normal(np.log(0.3), 0.5, n_g - len(heme_genes)))]
    for g in LEUKOCYTE_GENES:
        if g in index:
            base[index[g]] += leukocyte_log_fold
    profile = {}
    for t in types:
        shift = bio.normal(0.0, type_gene_sd, n_g)
        for g, w in own[t].items():
            shift[index[g]] += type_log_fold * w
        for tissue in tissues:
            tissue_shift = np.zeros(n_g)
            for g, w in tissue_genes[tissue].items():
                tissue_shift[index[g]] = type_log_fold * w * (1.0 if t == "epithelial" else TISSUE_SHARE)
            profile[t, tissue] = base + shift + tissue_shift + bio.normal(0.0, type_gene_sd / 2, n_g)

    groups = [f"{t}|{tissue}" for tissue in tissues for t in types]
    stage_of = assign_stages(groups, stage_table, seed=seed)
    label_of = stage_table.groupby("stage", sort=False)["label"].first().to_dict()
    rng = np.random.default_rng(seed)
    tissue_effect = {t: rng.normal(0.0, tissue_gene_sd, n_g) for t in tissues}
    share = np.array([COMPOSITION[t] for t in types])
    parts = []
    for d in donors:
        gene_eff = rng.normal(0.0, donor_gene_sd, n_g)
        lib_eff = rng.normal(0.0, 0.2)
        n_t = rng.multinomial(cells_per_donor, rng.dirichlet(np.full(len(tissues), 8.0)))
        for tissue, n in zip(tissues, n_t):
            if n == 0:
                continue
            kind = rng.choice(len(types), size=n, p=rng.dirichlet(20 * share))
            logmu = np.stack([profile[types[k], tissue] for k in kind]) + gene_eff + tissue_effect[tissue]
            p = np.exp(logmu - logmu.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            lib = mean_library * np.exp(lib_eff + rng.normal(0.0, library_sd, n) - library_sd**2 / 2)
            counts = nb_counts(p * lib[:, None], dispersion, rng)
            group = [f"{types[k]}|{tissue}" for k in kind]
            parts.append((counts, pd.DataFrame({
                "donor_id": d, "tissue": tissue, "cell_type": [label_of[stage_of[g]] for g in group],
                "true_cell_type": [types[k] for k in kind], "true_compartment": "non_hematopoietic",
                "assigned_stage": [stage_of[g] for g in group],
            })))
    X = sp.csr_matrix(np.vstack([c for c, _ in parts]).astype(np.float32))
    obs = pd.concat([o for _, o in parts], ignore_index=True)
    obs.index = pd.Index([f"{d}_c{i:06d}" for i, d in enumerate(obs["donor_id"])], name="cell")
    for col in ("donor_id", "tissue", "cell_type", "true_cell_type", "true_compartment", "assigned_stage"):
        obs[col] = pd.Categorical(obs[col].astype(str))
    program = heme_program + ["non_hematopoietic"] * (n_g - len(heme_genes))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame({"program": pd.Categorical(program)}, index=pd.Index(genes, name="gene")))
    adata.layers["counts"] = X.copy()
    adata.uns["simulation"] = {"seed": int(seed), "biology_seed": int(biology_seed), "compartment": "non_hematopoietic",
                               "tissues": list(tissues), "donors": donors, "assignment": stage_of}
    return adata
