"""A seeded multi-donor hematopoiesis simulator: the embedded demo's reference and immune panels.

Cells sit on the edges of the stage graph with a continuous true pseudotime. Each stage has a log-expression
profile built from marker programs that switch on along their branches (leaking smoothly to graph neighbours);
a cell's profile interpolates between its stage and the neighbouring stage it drifts towards. Donors scale genes
(log-normal), shift stage composition and add branch-specific gene effects; tissues set composition; counts are
negative binomial around a varying library size. "Biology" (gene levels, programs, stage profiles) comes from
`biology_seed`, shared by every panel; donors, tissues and cells come from `seed`.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract.errors import InputError
from fmextract.stages import fine_stages, lineage_pools, ruler_distances, stage_info

#: Where each marker program is on (stage: weight); genes of a program without an entry in GENE_STAGES
#: follow this pattern with a random per-gene subset and strength.
PROGRAM_STAGES: dict[str, dict[str, float]] = {
    "stem_progenitor": {"hsc": 1, "mpp": 1, "cmp": 0.6, "clp": 0.6, "gmp": 0.3, "mep": 0.3},
    "erythroid": {"mep": 0.3, "proerythroblast": 0.8, "erythroblast": 1, "erythrocyte": 0.8},
    "megakaryocyte": {"mep": 0.3, "megakaryocyte": 1, "platelet": 0.9},
    "granulocytic": {"gmp": 0.4, "promyelocyte": 1, "myelocyte": 1, "neutrophil": 0.8, "eosinophil": 0.6, "basophil": 0.5,
                     "mast_cell": 0.4},
    "monocyte_macrophage": {"gmp": 0.2, "classical_monocyte": 1, "nonclassical_monocyte": 0.9, "macrophage": 0.9},
    "dc": {"cdc1": 1, "cdc2": 1, "pdc": 0.8},
    "b_plasma": {"pro_b": 0.5, "pre_b": 0.8, "naive_b": 1, "memory_b": 1, "plasma_cell": 0.6},
    "t_lymphoid": {"thymocyte": 0.8, "naive_cd4_t": 1, "memory_cd4_t": 1, "treg": 1, "naive_cd8_t": 1, "effector_cd8_t": 1,
                   "innate_like_t": 0.8},
    "nk": {"nk": 1, "effector_cd8_t": 0.6, "innate_like_t": 0.6, "ilc": 0.4},
}

_T_ALL = "thymocyte cd4_thymocyte cd8_thymocyte naive_cd4_t memory_cd4_t treg naive_cd8_t effector_cd8_t innate_like_t"
_CYTO = "nk effector_cd8_t innate_like_t:0.7 memory_cd4_t:0.35"
_B = "pre_b:0.6 naive_b memory_b plasma_cell:0.3"
_GENE_SPEC = {
    # stem / progenitor
    "CD34": "hsc mpp cmp clp gmp:0.7 mep:0.7 pro_b:0.4", "CRHBP": "hsc mpp:0.6", "HLF": "hsc mpp:0.7", "AVP": "hsc mpp:0.4",
    "MECOM": "hsc mpp:0.7", "PROCR": "hsc mpp:0.5", "HOPX": "hsc mpp:0.8 clp:0.3", "SPINK2": "hsc mpp cmp:0.6 clp:0.6",
    "MLLT3": "hsc mpp cmp:0.5", "KIT": "hsc:0.6 mpp:0.7 cmp mep:0.8 mast_cell", "GATA2": "hsc mpp cmp:0.8 mep:0.8 mast_cell basophil",
    "DNTT": "clp pro_b:0.8 thymocyte:0.6", "FLT3": "mpp:0.6 clp cmp:0.6 gmp:0.4 pdc:0.5 cdc1:0.5 cdc2:0.4",
    "PROM1": "hsc mpp clp:0.7 cmp:0.5",
    # erythroid / megakaryocyte
    "GATA1": "mep proerythroblast erythroblast:0.7 megakaryocyte:0.8 eosinophil:0.5 mast_cell:0.5",
    "KLF1": "mep:0.4 proerythroblast erythroblast:0.7", "TFRC": "proerythroblast erythroblast:0.8",
    "EPOR": "mep:0.3 proerythroblast erythroblast:0.5",
    "HBB": "proerythroblast:0.4 erythroblast erythrocyte", "HBA1": "proerythroblast:0.3 erythroblast erythrocyte",
    "HBA2": "proerythroblast:0.3 erythroblast erythrocyte", "ALAS2": "erythroblast erythrocyte:0.8",
    "SLC4A1": "erythroblast erythrocyte:0.7", "AHSP": "proerythroblast:0.5 erythroblast erythrocyte:0.5",
    "PF4": "megakaryocyte platelet", "PPBP": "megakaryocyte:0.8 platelet", "ITGA2B": "mep:0.4 megakaryocyte platelet:0.6",
    "VWF": "hsc:0.3 mep:0.3 megakaryocyte", "GP9": "megakaryocyte platelet",
    # granulocytic
    "MPO": "gmp promyelocyte myelocyte:0.3", "ELANE": "gmp:0.8 promyelocyte", "AZU1": "gmp:0.6 promyelocyte",
    "PRTN3": "gmp:0.7 promyelocyte", "CTSG": "gmp:0.6 promyelocyte mast_cell:0.4", "DEFA4": "promyelocyte myelocyte",
    "LTF": "myelocyte", "CAMP": "myelocyte neutrophil:0.3", "LCN2": "myelocyte neutrophil:0.3", "CEACAM8": "myelocyte neutrophil:0.5",
    "MMP9": "myelocyte:0.6 neutrophil", "S100A8": "myelocyte neutrophil classical_monocyte nonclassical_monocyte:0.4",
    "S100A9": "myelocyte neutrophil classical_monocyte nonclassical_monocyte:0.4", "FCGR3B": "neutrophil", "CXCR2": "neutrophil",
    "CSF3R": "myelocyte:0.5 neutrophil classical_monocyte:0.3", "CLC": "eosinophil basophil", "PRG2": "eosinophil",
    "HDC": "basophil mast_cell:0.6", "MS4A2": "basophil mast_cell", "CPA3": "basophil:0.5 mast_cell", "TPSAB1": "mast_cell",
    # monocyte / macrophage
    "CD14": "classical_monocyte nonclassical_monocyte:0.3 macrophage:0.5", "FCN1": "classical_monocyte nonclassical_monocyte:0.6",
    "VCAN": "classical_monocyte", "LYZ": "myelocyte:0.4 classical_monocyte nonclassical_monocyte:0.7 macrophage:0.7 cdc2:0.8",
    "CD68": "classical_monocyte:0.7 nonclassical_monocyte:0.7 macrophage", "CSF1R": "classical_monocyte:0.6 nonclassical_monocyte macrophage",
    "FCGR3A": "nonclassical_monocyte nk:0.8 macrophage:0.3", "MS4A7": "nonclassical_monocyte macrophage:0.5",
    "CDKN1C": "nonclassical_monocyte", "LST1": "classical_monocyte:0.6 nonclassical_monocyte cdc2:0.4",
    "C1QA": "macrophage", "C1QB": "macrophage", "C1QC": "macrophage", "APOE": "macrophage", "CD163": "classical_monocyte:0.2 macrophage",
    "MRC1": "macrophage cdc2:0.2", "MARCO": "macrophage:0.8", "MAFB": "nonclassical_monocyte:0.5 macrophage",
    # dendritic cells
    "CLEC9A": "cdc1", "XCR1": "cdc1", "BATF3": "cdc1 cdc2:0.3", "CD1C": "cdc2", "FCER1A": "cdc2 basophil mast_cell:0.8",
    "CLEC10A": "cdc2", "CLEC4C": "pdc", "LILRA4": "pdc", "IL3RA": "pdc basophil:0.7", "PLD4": "pdc cdc1:0.5",
    "TCF4": "pdc naive_b:0.3", "IRF8": "pdc cdc1 classical_monocyte:0.3 memory_b:0.3", "ITGAX": "cdc2 macrophage:0.6 nonclassical_monocyte:0.4",
    "HLA-DQA1": "cdc1 cdc2 pdc:0.6 naive_b:0.6 memory_b:0.6 macrophage:0.6",
    # B / plasma
    "MS4A1": _B.replace(" plasma_cell:0.3", ""), "CD79A": "pro_b:0.5 " + _B, "CD79B": "pro_b:0.5 " + _B, "CD19": _B,
    "CD22": _B.replace(" plasma_cell:0.3", ""), "PAX5": "pro_b:0.6 " + _B.replace(" plasma_cell:0.3", ""),
    "BANK1": "naive_b memory_b", "TCL1A": "pre_b:0.5 naive_b", "FCER2": "naive_b", "IGHD": "naive_b memory_b:0.3",
    "IGHM": "pre_b naive_b memory_b:0.5", "VPREB1": "pro_b pre_b", "IGLL1": "pro_b pre_b:0.7", "JCHAIN": "plasma_cell pdc:0.3",
    "MZB1": "plasma_cell pdc:0.4 memory_b:0.2", "XBP1": "plasma_cell", "PRDM1": "plasma_cell", "TNFRSF17": "plasma_cell",
    # T
    "CD3E": _T_ALL, "CD3D": _T_ALL, "CD3G": _T_ALL, "TRAC": _T_ALL, "CD2": _T_ALL + " nk:0.6", "CD7": _T_ALL + " nk ilc:0.6",
    "CD5": _T_ALL.replace(" innate_like_t", ""), "CD1A": "thymocyte",
    "CD4": "thymocyte:0.4 cd4_thymocyte:0.5 naive_cd4_t:0.5 memory_cd4_t:0.5 treg:0.5 classical_monocyte:0.2 macrophage:0.2",
    "CD8A": "thymocyte:0.6 cd8_thymocyte naive_cd8_t effector_cd8_t innate_like_t:0.4",
    "CD8B": "thymocyte:0.5 cd8_thymocyte:0.7 naive_cd8_t:0.7 effector_cd8_t:0.7",
    "TRDC": "innate_like_t nk:0.5", "IL7R": "naive_cd4_t memory_cd4_t naive_cd8_t:0.5 innate_like_t ilc",
    "CCR7": "cd4_thymocyte:0.5 cd8_thymocyte:0.5 naive_cd4_t naive_cd8_t memory_cd4_t:0.5 naive_b:0.4 treg:0.4",
    "LEF1": "thymocyte cd4_thymocyte cd8_thymocyte naive_cd4_t naive_cd8_t",
    "TCF7": "thymocyte cd4_thymocyte cd8_thymocyte naive_cd4_t naive_cd8_t memory_cd4_t:0.5",
    "FOXP3": "treg", "IL2RA": "treg memory_cd4_t:0.2",
    "CTLA4": "treg memory_cd4_t:0.3", "CD40LG": "naive_cd4_t:0.3 memory_cd4_t:0.5",
    # NK / cytotoxic
    "NKG7": _CYTO, "GNLY": _CYTO, "PRF1": _CYTO, "GZMA": _CYTO, "GZMH": "effector_cd8_t nk:0.7", "CST7": _CYTO,
    "GZMB": "nk effector_cd8_t:0.6 innate_like_t:0.5 pdc:0.8", "KLRD1": "nk effector_cd8_t:0.5 innate_like_t:0.6",
    "KLRF1": "nk", "NCAM1": "nk ilc:0.4", "NCR1": "nk ilc:0.5", "SPON2": "nk", "FGFBP2": "nk effector_cd8_t:0.4", "XCL1": "nk:0.7 ilc",
    "KLRB1": "innate_like_t nk:0.6 ilc memory_cd4_t:0.4",
}


def _parse_spec(spec: str) -> dict[str, float]:
    """'a b:0.5' -> {'a': 1.0, 'b': 0.5}."""
    out = {}
    for item in spec.split():
        name, _, w = item.partition(":")
        out[name] = float(w) if w else 1.0
    return out


#: Curated on-stages of well-known markers (stage: weight); the rest follow PROGRAM_STAGES.
GENE_STAGES: dict[str, dict[str, float]] = {g: _parse_spec(s) for g, s in _GENE_SPEC.items()}

#: Relative abundance of branches (defaults) and stages (overrides) per tissue; 0 means absent from that tissue.
TISSUES: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "bone_marrow": (
        {"stem_progenitor": 1.0, "erythroid_megakaryocyte": 1.0, "granulocytic": 1.0, "monocyte_macrophage_dc": 0.5,
         "b_plasma": 0.6, "t_nk": 0.35, "other_immune": 0.1},
        {"hsc": 0.6, "mpp": 0.8, "erythrocyte": 0.3, "platelet": 0.15, "megakaryocyte": 0.4, "neutrophil": 1.2,
         "macrophage": 0.25, "pdc": 0.3, "cdc1": 0.15, "thymocyte": 0.0, "cd4_thymocyte": 0.0, "cd8_thymocyte": 0.0,
         "plasma_cell": 0.4, "memory_b": 0.3, "treg": 0.15, "innate_like_t": 0.2, "eosinophil": 0.4, "basophil": 0.25,
         "mast_cell": 0.08},
    ),
    "blood": (
        {"stem_progenitor": 0.03, "erythroid_megakaryocyte": 0.05, "granulocytic": 0.1, "monocyte_macrophage_dc": 0.6,
         "b_plasma": 0.6, "t_nk": 1.0, "other_immune": 0.03},
        {"hsc": 0.01, "erythrocyte": 0.4, "platelet": 0.5, "neutrophil": 1.0, "eosinophil": 0.2, "basophil": 0.15,
         "classical_monocyte": 1.4, "nonclassical_monocyte": 0.5, "macrophage": 0.03, "cdc1": 0.08, "cdc2": 0.3, "pdc": 0.2,
         "pro_b": 0.01, "pre_b": 0.02, "naive_b": 0.8, "memory_b": 0.5, "plasma_cell": 0.1, "thymocyte": 0.0,
         "cd4_thymocyte": 0.0, "cd8_thymocyte": 0.0, "naive_cd4_t": 1.4, "memory_cd4_t": 1.2, "treg": 0.35, "naive_cd8_t": 0.7, "innate_like_t": 0.4, "nk": 0.9},
    ),
    "spleen": (
        {"stem_progenitor": 0.03, "erythroid_megakaryocyte": 0.1, "granulocytic": 0.15, "monocyte_macrophage_dc": 0.6,
         "b_plasma": 1.2, "t_nk": 0.9, "other_immune": 0.1},
        {"macrophage": 1.2, "neutrophil": 0.5, "thymocyte": 0.0, "cd4_thymocyte": 0.0, "cd8_thymocyte": 0.0,
         "pro_b": 0.05, "pre_b": 0.1, "plasma_cell": 0.7, "nk": 1.0, "erythrocyte": 0.3, "platelet": 0.2, "treg": 0.4, "ilc": 0.15},
    ),
    "lymph_node": (
        {"stem_progenitor": 0.01, "erythroid_megakaryocyte": 0.01, "granulocytic": 0.03, "monocyte_macrophage_dc": 0.3,
         "b_plasma": 1.2, "t_nk": 1.3, "other_immune": 0.2},
        {"macrophage": 0.6, "cdc1": 0.3, "cdc2": 0.5, "pdc": 0.3, "classical_monocyte": 0.15, "nonclassical_monocyte": 0.05,
         "thymocyte": 0.0, "cd4_thymocyte": 0.0, "cd8_thymocyte": 0.0,
         "pro_b": 0.01, "pre_b": 0.02, "naive_cd4_t": 1.8, "naive_b": 1.6, "nk": 0.3, "effector_cd8_t": 0.6,
         "plasma_cell": 0.3},
    ),
    "thymus": (
        {"stem_progenitor": 0.05, "erythroid_megakaryocyte": 0.01, "granulocytic": 0.02, "monocyte_macrophage_dc": 0.2,
         "b_plasma": 0.2, "t_nk": 0.8, "other_immune": 0.05},
        {"thymocyte": 4.0, "cd4_thymocyte": 1.0, "cd8_thymocyte": 0.5, "naive_cd4_t": 1.0, "naive_cd8_t": 0.8,
         "treg": 0.5, "macrophage": 0.3, "cdc1": 0.2, "pdc": 0.2, "memory_cd4_t": 0.2, "effector_cd8_t": 0.2},
    ),
    "lung": (
        {"stem_progenitor": 0.01, "erythroid_megakaryocyte": 0.02, "granulocytic": 0.2, "monocyte_macrophage_dc": 1.0,
         "b_plasma": 0.3, "t_nk": 0.7, "other_immune": 0.3},
        {"macrophage": 3.0, "classical_monocyte": 1.0, "neutrophil": 0.6, "mast_cell": 0.4, "thymocyte": 0.0,
         "cd4_thymocyte": 0.0, "cd8_thymocyte": 0.0, "pro_b": 0.0, "pre_b": 0.0, "effector_cd8_t": 1.0, "memory_cd4_t": 1.0, "naive_cd4_t": 0.4, "naive_cd8_t": 0.3},
    ),
}

#: Share of a fine stage's cells that an annotator labels with the lineage instead ("B cell" for a naive B cell), as
#: in Tabula Sapiens v2's immune cells (docs/labels.md derives them): a cell of a stage pooled by several lineage stages
#: (naive CD4 T: cd4_t and t_cell) takes each with its share.
LINEAGE_SHARE: dict[str, float] = {"b_cell": 0.9, "cd4_t": 0.85, "cd8_t": 0.9, "t_cell": 0.03, "monocyte": 0.55}

#: Log library-size offsets of small (platelets, red cells) and large (plasma cells, progenitors) cells.
STAGE_LIBRARY: dict[str, float] = {"erythrocyte": -1.0, "platelet": -1.3, "neutrophil": -0.5, "eosinophil": -0.3,
                                   "plasma_cell": 0.5, "hsc": 0.2, "mpp": 0.2, "cmp": 0.2, "gmp": 0.3, "mep": 0.2,
                                   "promyelocyte": 0.3, "proerythroblast": 0.3, "macrophage": 0.3}


def tissue_stage_weights(tissue: str, info: pd.DataFrame) -> pd.Series:
    """Relative abundance of each stage (index of `info`) in `tissue` (stages of unknown branches get 0.1)."""
    if tissue not in TISSUES:
        raise InputError(f"simulate: unknown tissue '{tissue}'; use one of {', '.join(TISSUES)}")
    branch_w, stage_w = TISSUES[tissue]
    w = [stage_w.get(s, branch_w.get(b, 0.1)) for s, b in zip(info.index, info["branch"])]
    return pd.Series(np.asarray(w, dtype=float), index=info.index)


def lineage_relabel(
    labels: pd.Series, true_stage: pd.Series, donors: pd.Series, stage_table: pd.DataFrame, *,
    share: Mapping[str, float], rng: np.random.Generator,
) -> np.ndarray:
    """Labels with a `share` of each lineage's fine-stage cells relabelled by the lineage (one alias per donor)."""
    pools = {lin: set(members) for lin, members in lineage_pools(stage_table).items() if share.get(lin, 0) > 0}
    labels_of = stage_table.groupby("stage", sort=False)["label"].apply(list).to_dict()
    out = np.asarray(labels, dtype=object).copy()
    stage, donor = np.asarray(true_stage, dtype=str), np.asarray(donors, dtype=str)
    u = rng.random(len(out))
    for d in pd.unique(donor):
        alias = {lin: labels_of[lin][int(rng.integers(len(labels_of[lin])))] for lin in pools}
        upper = np.zeros(len(out))
        for lin, members in pools.items():
            lower, upper = upper, upper + np.where(np.isin(stage, sorted(members)), share[lin], 0.0)
            out[(donor == d) & (u >= lower) & (u < upper)] = alias[lin]
    return out


def bfs_parents(stages: Sequence[str], edges: Sequence[tuple[str, str]], root: str) -> dict[str, str | None]:
    """Parent of every stage in the breadth-first tree of the stage graph from `root`."""
    nbrs: dict[str, list[str]] = {s: [] for s in stages}
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    parent: dict[str, str | None] = {root: None}
    queue = deque([root])
    while queue:
        s = queue.popleft()
        for n in nbrs[s]:
            if n not in parent:
                parent[n] = s
                queue.append(n)
    return parent


def gene_activation(
    genes: Sequence[str], gene_program: Sequence[str], stages: Sequence[str], dist: np.ndarray, *, leak: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Activation in [0, 1] of each gene (cols) at each stage (rows): on-stages leak to neighbours as exp(-d^2 / 2 leak^2)."""
    index = {s: i for i, s in enumerate(stages)}
    home = np.zeros((len(stages), len(genes)))
    for j, (g, p) in enumerate(zip(genes, gene_program)):
        if g in GENE_STAGES:
            spec = GENE_STAGES[g]
        elif p in PROGRAM_STAGES:
            pattern = PROGRAM_STAGES[p]
            keep = rng.random(len(pattern)) < 0.7
            keep[int(np.argmax(list(pattern.values())))] = True
            spec = {s: w * rng.uniform(0.5, 1.0) for (s, w), k in zip(pattern.items(), keep) if k}
        else:  # a user program the simulator has no pattern for: on around one random stage
            spec = {stages[int(rng.integers(len(stages)))]: 1.0}
        for s, w in spec.items():
            if s in index:
                home[index[s], j] = w
    kernel = np.exp(-(dist**2) / (2 * leak**2))
    # activation at s = max over home stages h of home[h] * kernel[s, h]
    return np.max(kernel[:, :, None] * home[None, :, :], axis=1)


def base_levels(gene_program: Sequence[str], *, marker_off: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's log-expression where its programs are off (markers low, background spread) and the marker mask."""
    n_genes = len(gene_program)
    is_marker = np.array([p != "background" for p in gene_program])
    return np.where(is_marker, rng.normal(marker_off, 0.7, n_genes), rng.normal(0.0, 1.2, n_genes)), is_marker


def stage_profiles(
    genes: Sequence[str], gene_program: Sequence[str], info: pd.DataFrame, edges: Sequence[tuple[str, str]], *,
    marker_log_fold: float, marker_off: float, leak: float, stage_drift_sd: float, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-expression profile of every stage (rows, `info` order) and each gene's NB dispersion; seeded "biology"."""
    rng = np.random.default_rng(seed)
    stages = list(info.index)
    n_genes = len(genes)
    base, is_marker = base_levels(gene_program, marker_off=marker_off, rng=rng)
    fold = marker_log_fold * np.exp(rng.normal(0.0, 0.25, n_genes))
    dist = ruler_distances(stages, list(edges))
    act = gene_activation(genes, gene_program, stages, dist, leak=leak, rng=rng)
    # a smooth random field along the lineage tree: every gene drifts a little from parent to child stage
    root = stages[int(np.argmin(info["depth"].to_numpy()))]
    parent = bfs_parents(stages, edges, root)
    order = sorted(stages, key=lambda s: dist[stages.index(root), stages.index(s)])
    drift = np.zeros((len(stages), n_genes))
    steps = rng.normal(0.0, stage_drift_sd, (len(stages), n_genes))
    for s in order:
        i = stages.index(s)
        if parent.get(s) is not None:
            drift[i] = drift[stages.index(parent[s])] + steps[i]
    profiles = base[None, :] + fold[None, :] * act * is_marker[None, :] + drift
    dispersion = np.exp(rng.normal(np.log(0.3), 0.5, n_genes))
    return profiles, dispersion


def gene_list(programs: Mapping[str, Sequence[str]], background: Sequence[str], n_genes: int | None) -> tuple[list[str], list[str]]:
    """Program genes (first program wins) then background genes, capped at `n_genes`; returns (genes, program per gene)."""
    genes: dict[str, str] = {}
    for p, gs in programs.items():
        for g in gs:
            genes.setdefault(str(g), str(p))
    n_prog = len(genes)
    for g in background:
        genes.setdefault(str(g), "background")
    if n_genes is not None:
        if n_genes < n_prog:
            raise InputError(
                f"simulate: n_genes={n_genes} is below the {n_prog} marker-program genes; raise n_genes or pass null"
            )
        genes = dict(list(genes.items())[:n_genes])
    return list(genes), list(genes.values())


def nb_counts(mu: np.ndarray, dispersion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial draws with mean `mu` and variance mu + dispersion * mu^2 (gamma-Poisson)."""
    shape = 1.0 / dispersion
    return rng.poisson(rng.gamma(shape[None, :], mu / shape[None, :]))


def simulate_panel(
    stage_table: pd.DataFrame,
    edges: Sequence[tuple[str, str]],
    programs: Mapping[str, Sequence[str]],
    background: Sequence[str],
    *,
    donors: Sequence[str],
    tissues: Sequence[str],
    stages: Sequence[str] | None,
    cells_per_donor: int,
    n_genes: int | None,
    seed: int,
    biology_seed: int = 0,
    mean_library: float = 1000.0,
    library_sd: float = 0.45,
    marker_log_fold: float = 3.5,
    marker_off: float = -3.5,
    leak: float = 0.7,
    stage_drift_sd: float = 0.03,
    edge_spread: float = 0.5,
    donor_gene_sd: float = 0.3,
    donor_branch_gene_sd: float = 0.15,
    donor_stage_sd: float = 0.6,
    tissue_gene_sd: float = 0.1,
    n_nuisance: int = 3,
    nuisance_sd: float = 0.5,
    lineage_labels: bool = True,
    stage_weights: Mapping[str, float] | None = None,
) -> ad.AnnData:
    """Simulate one multi-donor panel: integer counts (CSR float32) with donor/tissue/label obs and truth columns.

    Cells are drawn from the fine stages (`stages` restricts them; None: every fine stage of the table). With
    `lineage_labels`, a Tabula Sapiens-like share (`LINEAGE_SHARE`) of B, T and monocyte cells is labelled by its
    lineage ("B cell"), as the atlas labels them; the truth keeps the fine stage. Truth: `true_stage`, `true_branch`,
    `true_depth` and `true_pseudotime` (depth interpolated along the edge the cell sits on). `stage_weights` (stage:
    relative abundance) replaces the tissues' composition (`TISSUES`) in every tissue, e.g. an atlas's label counts.
    """
    info = stage_info(stage_table)
    all_stages = list(info.index)
    lineage = set(lineage_pools(stage_table))
    donors = [str(d) for d in donors]
    if not donors or len(set(donors)) != len(donors):
        raise InputError(f"simulate: donors {donors[:5]} must be a non-empty list of unique ids; fix panels.*.simulate.donors")
    if not tissues:
        raise InputError(f"simulate: no tissues given; set panels.*.simulate.tissues (one of {', '.join(TISSUES)})")
    if cells_per_donor < 1:
        raise InputError(f"simulate: cells_per_donor={cells_per_donor} must be >= 1; fix panels.*.simulate.cells_per_donor")
    chosen = fine_stages(stage_table) if stages is None else list(dict.fromkeys(stages))
    unknown = [s for s in chosen if s not in info.index]
    if unknown or not chosen:
        raise InputError(f"simulate: stage '{(unknown or ['(none)'])[0]}' is not in the stage table; fix panels.*.simulate.stages")
    pooled = [s for s in chosen if s in lineage]
    if pooled:
        raise InputError(f"simulate: '{pooled[0]}' is a lineage stage (a label, not a state of its own); list fine stages "
                         "in panels.*.simulate.stages (lineage labels come with simulate.lineage_labels)")
    bad_edge = [e for e in edges if e[0] not in info.index or e[1] not in info.index]
    if bad_edge:
        raise InputError(f"simulate: edge {bad_edge[0]} names a stage absent from the stage table; fix the stage graph")
    tissue_w = {t: tissue_stage_weights(t, info).loc[chosen].to_numpy() if stage_weights is None else
                np.array([float(stage_weights.get(s, 0.0)) for s in chosen]) for t in tissues}
    absent = [s for s, w in zip(chosen, sum(tissue_w.values())) if w <= 0]
    if stages is not None and absent:
        raise InputError(
            f"simulate: stage '{absent[0]}' never occurs in tissues {list(tissues)}; add a tissue that has it or drop the stage"
        )
    if len(absent) == len(chosen):
        raise InputError(f"simulate: no stage occurs in tissues {list(tissues)}; fix panels.*.simulate.tissues")

    genes, gene_program = gene_list(programs, background, n_genes)
    profiles, dispersion = stage_profiles(genes, gene_program, info, edges, marker_log_fold=marker_log_fold,
                                          marker_off=marker_off, leak=leak,
                                          stage_drift_sd=stage_drift_sd, seed=biology_seed)
    n_g = len(genes)
    s_index = {s: i for i, s in enumerate(all_stages)}
    neighbours = {s: [] for s in all_stages}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    branches = list(dict.fromkeys(info["branch"]))
    branch_of = np.array([branches.index(b) for b in info["branch"]])
    depth = info["depth"].to_numpy(dtype=float)
    labels_of = stage_table.groupby("stage", sort=False)["label"].apply(list).to_dict()
    lib_offset = np.array([STAGE_LIBRARY.get(s, 0.0) for s in all_stages])

    rng = np.random.default_rng(seed)
    tissue_effect = {t: rng.normal(0.0, tissue_gene_sd, n_g) for t in tissues}
    background_idx = np.flatnonzero(np.array(gene_program) == "background")
    loadings = np.zeros((n_nuisance, n_g))
    for k in range(n_nuisance):  # co-varying background modules (cell cycle, interferon, stress-like)
        if background_idx.size:
            idx = rng.choice(background_idx, size=min(15, background_idx.size), replace=False)
            loadings[k, idx] = rng.normal(1.0, 0.3, idx.size)

    parts = []
    for d in donors:
        gene_eff = rng.normal(0.0, donor_gene_sd, n_g)
        branch_eff = rng.normal(0.0, donor_branch_gene_sd, (len(branches), n_g))
        comp = np.exp(rng.normal(0.0, donor_stage_sd, len(chosen)))
        lib_eff = rng.normal(0.0, 0.2)
        alias = {s: labels_of[s][int(rng.integers(len(labels_of[s])))] for s in chosen}
        n_t = rng.multinomial(cells_per_donor, rng.dirichlet(np.full(len(tissues), 8.0)))
        for t, n in zip(tissues, n_t):
            if n == 0:
                continue
            w = tissue_w[t] * comp
            stage_i = np.array([s_index[s] for s in rng.choice(chosen, size=n, p=w / w.sum())])
            nbr_i = np.array([s_index[neighbours[all_stages[i]][int(rng.integers(len(neighbours[all_stages[i]])))]]
                              if neighbours[all_stages[i]] else i for i in stage_i])
            frac = edge_spread * rng.beta(1.0, 1.6, n)
            logmu = ((1 - frac)[:, None] * profiles[stage_i] + frac[:, None] * profiles[nbr_i]
                     + gene_eff[None, :] + branch_eff[branch_of[stage_i]] + tissue_effect[t][None, :]
                     + rng.normal(0.0, nuisance_sd, (n, n_nuisance)) @ loadings)
            p = np.exp(logmu - logmu.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            lib = mean_library * np.exp(lib_offset[stage_i] + lib_eff + rng.normal(0.0, library_sd, n) - library_sd**2 / 2)
            counts = nb_counts(p * lib[:, None], dispersion, rng)
            stage_names = [all_stages[i] for i in stage_i]
            parts.append((counts, pd.DataFrame({
                "donor_id": d,
                "tissue": t,
                "cell_type": [alias[s] for s in stage_names],
                "true_stage": stage_names,
                "true_branch": info["branch"].to_numpy()[stage_i],
                "true_depth": depth[stage_i],
                "true_pseudotime": depth[stage_i] + frac * (depth[nbr_i] - depth[stage_i]),
            })))

    X = sp.csr_matrix(np.vstack([c for c, _ in parts]).astype(np.float32))
    obs = pd.concat([o for _, o in parts], ignore_index=True)
    obs.index = pd.Index([f"{d}_c{i:06d}" for i, d in enumerate(obs["donor_id"])], name="cell")
    if lineage_labels:  # its own stream: the counts and truth do not depend on it
        obs["cell_type"] = lineage_relabel(obs["cell_type"], obs["true_stage"], obs["donor_id"], stage_table,
                                           share=LINEAGE_SHARE, rng=np.random.default_rng([seed, 18]))
    for col in ("donor_id", "tissue", "cell_type", "true_stage", "true_branch"):
        obs[col] = pd.Categorical(obs[col].astype(str))
    var = pd.DataFrame({"program": pd.Categorical(gene_program)}, index=pd.Index(genes, name="gene"))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = X.copy()
    adata.uns["simulation"] = {"seed": int(seed), "biology_seed": int(biology_seed), "stages": list(chosen),
                               "tissues": list(tissues), "donors": donors, "lineage_labels": bool(lineage_labels)}
    return adata
