"""The demo simulator's non-hematopoietic compartment: the mismatched-compartment control panel.

Epithelial, endothelial and stromal cells on a lineage ruler of their own (`resources/nonhematopoietic_stages.tsv`
and `_graph.tsv`): every lineage has its marker genes, and the cell types of a lineage drift apart along its graph (a
random walk from parent to child type), so expression distances follow the compartment's true hop distances and the
control *could* pass its gates. One program per tissue overlays the types. Hematopoietic genes keep the shared
"biology" of `fmextract.simulate` (same base levels from `biology_seed`), with every marker program
off and leukocyte genes low. Cells are labelled with their own lineage stage (a label of the lineage table), the role
the paper's Tabula Sapiens lung panel plays.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract.errors import InputError
from fmextract.simulate import base_levels, bfs_parents, gene_list, nb_counts
from fmextract.stages import ruler_distances, stage_info

#: Lineages (the lineage table's branches): their own marker genes (weight 1 unless `gene:w`) and shifts of shared genes.
LINEAGES: dict[str, str] = {
    "epithelial": "EPCAM KRT8 KRT18 KRT19 CDH1 CLDN4 CLDN7 ELF3 SPINT2 S100A6:0.6",
    "endothelial": "PECAM1 CDH5 KDR CLDN5 EMCN ESAM RAMP2 SPARCL1 VWF:0.8 VIM:0.6",
    "stromal": "COL1A1 COL1A2 COL3A1 DCN LUM PDGFRA FBLN1 MGP VIM:0.8",
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
#: Expected share of each lineage in every tissue (donors vary around it; types share their lineage's evenly).
COMPOSITION = {"epithelial": 0.5, "endothelial": 0.25, "stromal": 0.25}


def _spec(spec: str) -> dict[str, float]:
    out = {}
    for item in spec.split():
        name, _, w = item.partition(":")
        out[name] = float(w) if w else 1.0
    return out


def lineage_steps(info: pd.DataFrame, edges: Sequence[tuple[str, str]], n_genes: int, *, step_sd: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Per stage (rows, `info` order), a log-expression offset that random-walks from the root down the lineage
    graph (N(0, step_sd) per edge and gene): types one hop apart differ by one step, so distances follow the ruler."""
    stages = list(info.index)
    root = stages[int(np.argmin(info["depth"].to_numpy()))]
    parent = bfs_parents(stages, edges, root)
    dist = ruler_distances(stages, list(edges))[stages.index(root)]
    steps = rng.normal(0.0, step_sd, (len(stages), n_genes))
    walk = np.zeros((len(stages), n_genes))
    for s in sorted(stages, key=lambda s: dist[stages.index(s)]):
        if parent.get(s) is not None:
            walk[stages.index(s)] = walk[stages.index(parent[s])] + steps[stages.index(s)]
    return walk


def simulate_compartment(
    lineage_table: pd.DataFrame,
    lineage_edges: Sequence[tuple[str, str]],
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
    step_sd: float = 0.4,
    donor_gene_sd: float = 0.3,
    tissue_gene_sd: float = 0.1,
) -> ad.AnnData:
    """Simulate the non-hematopoietic compartment: integer counts with donor/tissue/label obs and truth columns.

    `lineage_table` and `lineage_edges` are the compartment's own stage table and graph (branches = lineages of
    `LINEAGES`; the depth-0 root has no cells). `programs` and `background` are the hematopoietic simulator's, whose
    genes come first. `cell_type` holds a label of the cell's lineage stage; `true_stage` and `true_branch` the truth.
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
    info = stage_info(lineage_table)
    cell_stages = info.index[info["depth"] > info["depth"].min()].tolist()  # the root joins lineages; it has no cells
    foreign = sorted(set(info.loc[cell_stages, "branch"]) - set(LINEAGES))
    if foreign:
        raise InputError(f"simulate: lineage '{foreign[0]}' of the compartment's stage table has no marker genes; use "
                         f"the lineages {', '.join(LINEAGES)} (panels.mismatched.stage_table)")
    heme_genes, heme_program = gene_list(programs, background, None)
    base_h, _ = base_levels(heme_program, marker_off=marker_off, rng=np.random.default_rng(biology_seed))
    own = {t: _spec(s) for t, s in LINEAGES.items()}
    tissue_genes = {t: _spec(TISSUE_PROGRAMS[t]) for t in tissues}
    extra = [g for spec in [*own.values(), *tissue_genes.values()] for g in spec if g not in set(heme_genes)]
    genes = heme_genes + list(dict.fromkeys(extra))
    index = {g: i for i, g in enumerate(genes)}
    n_g = len(genes)

    bio = np.random.default_rng([biology_seed, 1])  # the compartment's own biology; the hematopoietic stream untouched
    base = np.r_[base_h, bio.normal(marker_off, 0.7, n_g - len(heme_genes))]
    dispersion = np.exp(bio.normal(np.log(0.3), 0.5, n_g))
    for g in LEUKOCYTE_GENES:
        if g in index:
            base[index[g]] += leukocyte_log_fold
    lineage_shift = {}
    for t in LINEAGES:
        shift = bio.normal(0.0, type_gene_sd, n_g)
        for g, w in own[t].items():
            shift[index[g]] += type_log_fold * w
        lineage_shift[t] = shift
    walk = lineage_steps(info, lineage_edges, n_g, step_sd=step_sd, rng=bio)
    position = {s: i for i, s in enumerate(info.index)}
    profile = {}
    for s in cell_stages:
        lineage = info.loc[s, "branch"]
        for tissue in tissues:
            tissue_shift = np.zeros(n_g)
            for g, w in tissue_genes[tissue].items():
                tissue_shift[index[g]] = type_log_fold * w * (1.0 if lineage == "epithelial" else TISSUE_SHARE)
            profile[s, tissue] = base + lineage_shift[lineage] + walk[position[s]] + tissue_shift

    labels_of = lineage_table[lineage_table["stage"].isin(cell_stages)].groupby("stage", sort=False)["label"].apply(list)
    lineage_of = info.loc[cell_stages, "branch"].to_numpy()
    share = np.array([COMPOSITION[b] / np.sum(lineage_of == b) for b in lineage_of])
    rng = np.random.default_rng(seed)
    tissue_effect = {t: rng.normal(0.0, tissue_gene_sd, n_g) for t in tissues}
    parts = []
    for d in donors:
        gene_eff = rng.normal(0.0, donor_gene_sd, n_g)
        lib_eff = rng.normal(0.0, 0.2)
        alias = {s: labels_of[s][int(rng.integers(len(labels_of[s])))] for s in cell_stages}
        n_t = rng.multinomial(cells_per_donor, rng.dirichlet(np.full(len(tissues), 8.0)))
        for tissue, n in zip(tissues, n_t):
            if n == 0:
                continue
            kind = rng.choice(len(cell_stages), size=n, p=rng.dirichlet(20 * share))
            logmu = np.stack([profile[cell_stages[k], tissue] for k in kind]) + gene_eff + tissue_effect[tissue]
            p = np.exp(logmu - logmu.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            lib = mean_library * np.exp(lib_eff + rng.normal(0.0, library_sd, n) - library_sd**2 / 2)
            counts = nb_counts(p * lib[:, None], dispersion, rng)
            parts.append((counts, pd.DataFrame({
                "donor_id": d, "tissue": tissue, "cell_type": [alias[cell_stages[k]] for k in kind],
                "true_stage": [cell_stages[k] for k in kind], "true_branch": lineage_of[kind],
                "true_depth": info["depth"].to_numpy(dtype=float)[[position[cell_stages[k]] for k in kind]],
                "true_compartment": "non_hematopoietic",
            })))
    X = sp.csr_matrix(np.vstack([c for c, _ in parts]).astype(np.float32))
    obs = pd.concat([o for _, o in parts], ignore_index=True)
    obs.index = pd.Index([f"{d}_c{i:06d}" for i, d in enumerate(obs["donor_id"])], name="cell")
    for col in ("donor_id", "tissue", "cell_type", "true_stage", "true_branch", "true_compartment"):
        obs[col] = pd.Categorical(obs[col].astype(str))
    program = heme_program + ["non_hematopoietic"] * (n_g - len(heme_genes))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame({"program": pd.Categorical(program)}, index=pd.Index(genes, name="gene")))
    adata.layers["counts"] = X.copy()
    adata.uns["simulation"] = {"seed": int(seed), "biology_seed": int(biology_seed), "compartment": "non_hematopoietic",
                               "tissues": list(tissues), "donors": donors, "stages": cell_stages}
    return adata
