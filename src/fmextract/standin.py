"""CELLxGENE-layout stand-ins of Tabula Sapiens v2 and the Cross-tissue Immune Cell Atlas: seeded, any size.

The real atlases cannot be downloaded here, so tests and benchmarks run the paper path on files shaped as CELLxGENE
ships them: var indexed by Ensembl-style ids with symbols in `feature_name`; X normalised (log1p CP10k, float32);
integer counts stored as float32 in raw.X (plus a non-integer `decontXcounts` layer, as Tabula Sapiens has);
categorical obs with CELLxGENE's columns, unused categories kept; real Cell Ontology labels and ids, coarse ones
("T cell", "B cell", "dendritic cell"...) included; non-hematopoietic cells (epithelial, endothelial, fibroblast...:
prepare drops and lists them); mixed assays (10x UMI counts and Smart-seq2 read counts); 21 donors over 27 tissues,
one of them without a single blood or immune cell; genes the model vocabulary lacks. Hematopoietic cells come from
the demo simulator (`simulate.simulate_panel`, its biology untouched, one call per donor x tissue block); the other
cells and genes are drawn here. Memory holds one block at a time at any size (`max_block` cells), so the same
generator makes the full-shape stand-ins of the scale benchmarks (564,253 x ~20,000; 329,762 immune cells).

    python -m fmextract.standin reference resources/atlas/tabula_sapiens_v2.h5ad --cells 20000 --genes 600
    python -m fmextract.standin immune resources/atlas/cross_tissue_immune.h5ad --cells 4000 --genes 560

The Ensembl-style ids are derived from the symbols (not real Ensembl ids); filler genes are named by their id, as
CELLxGENE names features without a symbol.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import os
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract.chunks import write_h5ad_streamed
from fmextract.counts import log_cp10k
from fmextract.errors import InputError
from fmextract.simulate import gene_list, simulate_panel, tissue_stage_weights
from fmextract.stages import lineage_pools, load_label_table, load_marker_programs, load_stage_graph, stage_info

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


class Tissue(NamedTuple):
    name: str  #: obs tissue (UBERON name)
    publication: str  #: obs tissue_in_publication
    sim: str  #: the simulator tissue giving its immune composition
    immune: float  #: fraction of blood/immune cells
    other: tuple[str, ...]  #: non-hematopoietic cell types found there


_ORGAN = ("epithelial cell", "endothelial cell", "fibroblast")
#: Tabula Sapiens v2's 27 tissues.
TS_TISSUES = (
    Tissue("blood", "Blood", "blood", 1.0, ()),
    Tissue("bone marrow", "Bone_Marrow", "bone_marrow", 0.97, ("stromal cell",)),
    Tissue("spleen", "Spleen", "spleen", 0.9, ("endothelial cell", "fibroblast")),
    Tissue("lymph node", "Lymph_Node", "lymph_node", 0.9, ("endothelial cell", "fibroblast")),
    Tissue("thymus", "Thymus", "thymus", 0.85, ("epithelial cell", "fibroblast")),
    Tissue("lung", "Lung", "lung", 0.45, ("type II pneumocyte", "endothelial cell", "fibroblast")),
    Tissue("trachea", "Trachea", "lung", 0.2, _ORGAN),
    Tissue("liver", "Liver", "spleen", 0.3, ("hepatocyte", "endothelial cell")),
    Tissue("heart", "Heart", "lung", 0.15, ("endothelial cell", "fibroblast", "smooth muscle cell")),
    Tissue("kidney", "Kidney", "lung", 0.2, _ORGAN),
    Tissue("bladder organ", "Bladder", "lung", 0.2, ("epithelial cell", "smooth muscle cell", "fibroblast")),
    Tissue("large intestine", "Large_Intestine", "lymph_node", 0.3, _ORGAN),
    Tissue("small intestine", "Small_Intestine", "lymph_node", 0.3, _ORGAN),
    Tissue("stomach", "Stomach", "lung", 0.2, ("epithelial cell", "smooth muscle cell")),
    Tissue("pancreas", "Pancreas", "lung", 0.15, ("pancreatic acinar cell", "epithelial cell")),
    Tissue("salivary gland", "Salivary_Gland", "lung", 0.25, _ORGAN),
    Tissue("tongue", "Tongue", "lung", 0.1, ("keratinocyte", "fibroblast")),
    Tissue("skin of body", "Skin", "lung", 0.15, ("keratinocyte", "fibroblast")),
    Tissue("adipose tissue", "Fat", "lung", 0.25, ("fibroblast", "endothelial cell")),
    Tissue("skeletal muscle tissue", "Muscle", "lung", 0.15, ("endothelial cell", "fibroblast", "smooth muscle cell")),
    Tissue("vasculature", "Vasculature", "blood", 0.2, ("endothelial cell", "smooth muscle cell")),
    Tissue("mammary gland", "Mammary", "lung", 0.2, _ORGAN),
    Tissue("prostate gland", "Prostate", "lung", 0.15, ("epithelial cell", "smooth muscle cell")),
    Tissue("uterus", "Uterus", "lung", 0.15, ("smooth muscle cell", "fibroblast")),
    Tissue("ovary", "Ovary", "lung", 0.1, ("stromal cell", "endothelial cell")),
    Tissue("testis", "Testis", "lung", 0.1, ("stromal cell", "endothelial cell")),
    Tissue("eye", "Eye", "lung", 0.05, ("epithelial cell", "endothelial cell")),
)
#: The immune atlas's tissues (all cells immune).
IMMUNE_TISSUES = tuple(Tissue(n, n, s, 1.0, ()) for n, s in (
    ("blood", "blood"), ("bone marrow", "bone_marrow"), ("spleen", "spleen"), ("thymus", "thymus"), ("lung", "lung"),
    ("liver", "spleen"), ("mesenteric lymph node", "lymph_node"), ("thoracic lymph node", "lymph_node"),
    ("jejunum", "lymph_node"), ("ileum", "lymph_node"), ("duodenum", "lymph_node"), ("caecum", "lymph_node"),
    ("transverse colon", "lymph_node"), ("sigmoid colon", "lymph_node"), ("omentum", "lung"),
    ("skeletal muscle tissue", "lung")))
IMMUNE_DONORS = ("A29", "A31", "A35", "A36", "A37", "621B", "637C", "640C", "582C", "583B", "D496", "D503")

#: Fine Tabula Sapiens labels per stage (CELLxGENE cell_type); stages without one are not simulated.
STAGE_LABELS = {
    "hsc": ["hematopoietic stem cell"], "mpp": ["hematopoietic precursor cell"], "cmp": ["common myeloid progenitor"],
    "clp": ["common lymphoid progenitor"], "gmp": ["granulocyte monocyte progenitor cell"],
    "proerythroblast": ["erythroid progenitor cell"], "erythrocyte": ["erythrocyte"], "megakaryocyte": ["megakaryocyte"],
    "platelet": ["platelet"], "neutrophil": ["neutrophil", "mature neutrophil"], "eosinophil": ["eosinophil"],
    "basophil": ["basophil"], "mast_cell": ["mast cell"], "classical_monocyte": ["classical monocyte"],
    "nonclassical_monocyte": ["non-classical monocyte", "intermediate monocyte"],
    "macrophage": ["macrophage", "tissue-resident macrophage", "elicited macrophage"],
    "cdc1": ["CD141-positive myeloid dendritic cell"], "cdc2": ["CD1c-positive myeloid dendritic cell"],
    "pdc": ["plasmacytoid dendritic cell"], "naive_b": ["naive B cell", "transitional stage B cell"],
    "memory_b": ["memory B cell", "class switched memory B cell"], "plasma_cell": ["plasma cell", "plasmablast"],
    "thymocyte": ["thymocyte", "double-positive, alpha-beta thymocyte", "double negative thymocyte"],
    "naive_cd4_t": ["naive thymus-derived CD4-positive, alpha-beta T cell"],
    "memory_cd4_t": ["CD4-positive, alpha-beta memory T cell", "CD4-positive helper T cell"],
    "treg": ["regulatory T cell"], "naive_cd8_t": ["naive thymus-derived CD8-positive, alpha-beta T cell"],
    "effector_cd8_t": ["CD8-positive, alpha-beta memory T cell",
                       "CD8-positive, alpha-beta cytokine secreting effector T cell"],
    "innate_like_t": ["mucosal invariant T cell", "gamma-delta T cell", "mature NK T cell", "type I NK T cell"],
    "nk": ["natural killer cell"], "ilc": ["innate lymphoid cell"],
}
#: Tissue-specific macrophage names.
TISSUE_MACROPHAGE = {"lung": "alveolar macrophage", "liver": "Kupffer cell"}
#: Coarse labels an annotator gives a stage's cells instead of the fine one (with probability COARSE_RATE).
STAGE_COARSE = {
    "naive_b": ["B cell"], "memory_b": ["B cell"], "naive_cd4_t": ["CD4-positive, alpha-beta T cell", "T cell"],
    "memory_cd4_t": ["CD4-positive, alpha-beta T cell", "T cell"], "treg": ["T cell"],
    "naive_cd8_t": ["CD8-positive, alpha-beta T cell", "T cell"],
    "effector_cd8_t": ["CD8-positive, alpha-beta T cell", "mature alpha-beta T cell"],
    "cdc1": ["dendritic cell", "conventional dendritic cell"], "cdc2": ["myeloid dendritic cell", "dendritic cell"],
    "classical_monocyte": ["monocyte"], "nonclassical_monocyte": ["monocyte"], "neutrophil": ["granulocyte"],
    "eosinophil": ["granulocyte"], "erythrocyte": ["erythroid lineage cell"], "proerythroblast": ["erythroid lineage cell"],
}
COARSE_RATE = 0.15
#: Non-hematopoietic cell types: Cell Ontology id, compartment and marker genes (absent from the demo vocabulary).
OTHER_TYPES = {
    "epithelial cell": ("CL:0000066", "epithelial", ["EPCAM", "KRT8", "KRT18", "KRT19", "CDH1", "CLDN4"]),
    "endothelial cell": ("CL:0000115", "endothelial", ["PECAM1", "CDH5", "CLDN5", "KDR", "EMCN", "FLT1"]),
    "fibroblast": ("CL:0000057", "stromal", ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA"]),
    "smooth muscle cell": ("CL:0000192", "stromal", ["ACTA2", "MYH11", "TAGLN", "DES", "CNN1"]),
    "stromal cell": ("CL:0000499", "stromal", ["CXCL12", "LEPR", "VCAM1", "COL1A1", "DCN"]),
    "hepatocyte": ("CL:0000182", "epithelial", ["ALB", "APOA1", "TTR", "SERPINA1", "HP"]),
    "type II pneumocyte": ("CL:0002063", "epithelial", ["SFTPC", "SFTPB", "NAPSA", "SFTPA1"]),
    "keratinocyte": ("CL:0000312", "epithelial", ["KRT5", "KRT14", "KRT1", "KRT10"]),
    "pancreatic acinar cell": ("CL:0002064", "epithelial", ["PRSS1", "CPA1", "CELA3A", "CTRB2"]),
}
#: Tabula Sapiens v2's cells per donor in its immune tissues (all cell types; the consortium's
#: tissuedonorcounts.csv), and the lung donors of the mismatched-compartment control (cells per donor assumed).
TS_V2_DONORS: dict[str, dict[str, int]] = {
    "blood": {"TSP1": 4448, "TSP2": 12949, "TSP7": 20383, "TSP8": 4988, "TSP10": 4360, "TSP14": 20303, "TSP21": 14103,
              "TSP25": 3202, "TSP27": 497},
    "bone marrow": {"TSP2": 4129, "TSP11": 2552, "TSP13": 461, "TSP14": 11925, "TSP21": 3626, "TSP25": 3769,
                    "TSP27": 650},
    "lymph node": {"TSP2": 11008, "TSP7": 14534, "TSP14": 31230, "TSP21": 27926, "TSP25": 25366, "TSP27": 18998},
    "spleen": {"TSP2": 8948, "TSP7": 9347, "TSP14": 21463, "TSP21": 13479, "TSP25": 4105, "TSP27": 13106},
    "thymus": {"TSP2": 12907, "TSP14": 19889, "TSP21": 4547, "TSP25": 2973, "TSP27": 2413},
    "lung": {"TSP1": 8000, "TSP2": 8000, "TSP14": 8000, "TSP25": 8000},
}
#: Immune label counts per tissue, Tabula Sapiens v2-like. Blood and lymph node: the popV cards' largest labels
#: (10 % validation subsets), then rarer labels we add at small counts; spleen, bone marrow, thymus and lung: our
#: estimates shaped on the all-immune card (B cell > CD4 > CD8 alpha-beta T; fine CD4/CD8 labels ~10 % of them;
#: monocyte beside classical monocyte) and on what the thymus card states (CD4-positive thymocyte third largest).
TS_V2_LABELS: dict[str, dict[str, int]] = {
    "blood": {"neutrophil": 3190, "erythrocyte": 1197, "classical monocyte": 1081, "monocyte": 932,
              "CD4-positive, alpha-beta T cell": 511, "CD8-positive, alpha-beta T cell": 469, "B cell": 396,
              "natural killer cell": 266, "macrophage": 121, "intermediate monocyte": 117, "plasma cell": 76,
              "naive thymus-derived CD4-positive, alpha-beta T cell": 48, "platelet": 37, "non-classical monocyte": 30,
              "mature NK T cell": 30, "T cell": 20, "myeloid dendritic cell": 20, "plasmacytoid dendritic cell": 15,
              "regulatory T cell": 15, "activated CD4-positive, alpha-beta T cell": 10,
              "activated CD8-positive, alpha-beta T cell": 10, "basophil": 10, "leukocyte": 10},
    "lymph node": {"B cell": 5485, "CD4-positive, alpha-beta T cell": 3937, "CD8-positive, alpha-beta T cell": 1453,
                   "plasma cell": 604, "naive thymus-derived CD4-positive, alpha-beta T cell": 415,
                   "regulatory T cell": 150, "T cell": 150, "natural killer cell": 100, "macrophage": 100,
                   "myeloid dendritic cell": 60, "plasmacytoid dendritic cell": 40, "mature NK T cell": 40,
                   "innate lymphoid cell": 30, "gamma-delta T cell": 30, "monocyte": 30, "mononuclear phagocyte": 20,
                   "leukocyte": 15, "Langerhans cell": 10},
    "spleen": {"B cell": 3000, "CD8-positive, alpha-beta T cell": 1900, "CD4-positive, alpha-beta T cell": 1800,
               "macrophage": 900, "neutrophil": 600, "natural killer cell": 500, "plasma cell": 500, "monocyte": 400,
               "classical monocyte": 200, "T cell": 150, "naive thymus-derived CD4-positive, alpha-beta T cell": 150,
               "erythrocyte": 150, "mature NK T cell": 80, "tissue-resident macrophage": 60, "gamma-delta T cell": 60,
               "regulatory T cell": 60, "platelet": 50, "myeloid dendritic cell": 40, "plasmacytoid dendritic cell": 30,
               "innate lymphoid cell": 30, "hematopoietic cell": 20, "myeloid leukocyte": 20},
    "bone marrow": {"neutrophil": 2500, "erythroid progenitor cell": 700, "monocyte": 600, "classical monocyte": 400,
                    "CD8-positive, alpha-beta T cell": 400, "B cell": 400, "erythrocyte": 300,
                    "CD4-positive, alpha-beta T cell": 300, "plasma cell": 250, "natural killer cell": 150,
                    "hematopoietic precursor cell": 150, "macrophage": 150, "common myeloid progenitor": 80,
                    "myeloid leukocyte": 80, "hematopoietic stem cell": 60, "basophil": 40, "platelet": 40,
                    "plasmacytoid dendritic cell": 40, "hematopoietic cell": 40, "T cell": 40},
    "thymus": {"double-positive, alpha-beta thymocyte": 900, "T cell": 500, "CD4-positive, alpha-beta thymocyte": 438,
               "CD8-positive, alpha-beta thymocyte": 200, "double negative thymocyte": 150, "B cell": 120,
               "CD4-positive, alpha-beta T cell": 100, "CD8-positive, alpha-beta T cell": 80, "macrophage": 60,
               "regulatory T cell": 40, "myeloid dendritic cell": 30, "plasmacytoid dendritic cell": 30,
               "mature NK T cell": 20},
    "lung": {"macrophage": 1500, "CD8-positive, alpha-beta T cell": 400, "CD4-positive, alpha-beta T cell": 300,
             "monocyte": 300, "classical monocyte": 200, "natural killer cell": 200, "mast cell": 200, "neutrophil": 150,
             "B cell": 100, "plasma cell": 80, "myeloid dendritic cell": 50, "mononuclear phagocyte": 40},
}
#: Labels naming no lineage of the ruler (prepare drops or keeps them branch-only, and counts them): the fine stages
#: whose cells the stand-in gives them, and their Cell Ontology ids where the stage table has none.
NON_LINEAGE = {"leukocyte": (["naive_cd4_t", "memory_b", "nk", "classical_monocyte", "neutrophil"], "CL:0000738"),
               "hematopoietic cell": (["hsc", "mpp", "cmp", "neutrophil"], "CL:0000988"),
               "myeloid leukocyte": (["classical_monocyte", "neutrophil", "macrophage"], "CL:0000766"),
               "mononuclear phagocyte": (["classical_monocyte", "macrophage", "cdc2"], "")}
#: Every label the generator gives (the categories of obs cell_type, used or not).
ALL_LABELS = sorted({x for v in (*STAGE_LABELS.values(), *STAGE_COARSE.values()) for x in v}
                    | set(TISSUE_MACROPHAGE.values()) | set(OTHER_TYPES)
                    | {x for labels in TS_V2_LABELS.values() for x in labels})
#: Label sets of `write_standin(labels=...)`.
LABEL_SETS = ("mixed", "ts_v2")
#: obs broad_cell_class of blood and immune cells, by branch.
BROAD_CLASS = {"stem_progenitor": "hematopoietic precursor cell", "erythroid_megakaryocyte": "erythroid lineage cell",
               "granulocytic": "granulocyte", "monocyte_macrophage_dc": "myeloid leukocyte", "b_plasma": "B cell",
               "t_nk": "T cell", "other_immune": "leukocyte"}
TS_ASSAYS = ["10x 3' v3", "Smart-seq2", "10x 5' v2"]  # the last one unused: an empty category, as files keep them
IMMUNE_ASSAYS = ["10x 5' v1", "10x 5' v2", "10x 3' v3"]
SMARTSEQ_RATE = 0.08
#: Simulator genes the immune stand-in does not measure.
N_IMMUNE_MISSING = 8
#: Dirichlet weight of a tissue in a donor's cells: blood and lymphoid organs are sampled more deeply.
DEPTH = {"blood": 4.0, "bone marrow": 4.0, "spleen": 3.0, "lymph node": 3.0, "thymus": 3.0, "lung": 2.0}


def ensembl_id(symbol: str) -> str:
    """A stable Ensembl-style id for a symbol (ENSG + 11 digits from its sha256; not the real Ensembl id)."""
    return f"ENSG{int(hashlib.sha256(symbol.encode()).hexdigest(), 16) % 10**11:011d}"


def standin_genes(n_genes: int, *, resources: Path = RESOURCES, seed: int = 0) -> pd.DataFrame:
    """The gene universe: the simulator's genes (the demo vocabulary), non-hematopoietic markers, then fillers named
    by their id, `n_genes` in all; columns symbol, id, kind (simulator / other / filler)."""
    programs = load_marker_programs(resources / "marker_programs.tsv")
    background = (resources / "background_genes.txt").read_text().split()
    sim, _ = gene_list(programs, background, None)
    other = list(dict.fromkeys(g for _, _, genes in OTHER_TYPES.values() for g in genes if g not in set(sim)))
    n_fill = n_genes - len(sim) - len(other)
    if n_fill < 0:
        raise InputError(f"standin: --genes {n_genes} is below the {len(sim) + len(other)} simulator and marker genes")
    rng = np.random.default_rng(seed + 7919)
    fillers = sorted({f"ENSG{x:011d}" for x in rng.choice(10**11, size=n_fill, replace=False)})
    ids = [ensembl_id(g) for g in sim + other]
    if len(set(ids) | set(fillers)) != n_genes:
        raise InputError("standin: an Ensembl-style id repeats; pick another seed")
    return pd.DataFrame({"symbol": sim + other + fillers, "id": ids + fillers,
                         "kind": ["simulator"] * len(sim) + ["other"] * len(other) + ["filler"] * n_fill})


def _plan(kind: str, rng: np.random.Generator) -> tuple[list[str], dict[str, list[Tissue]]]:
    """Donors and each donor's tissues: 21 Tabula Sapiens donors over 27 tissues (bone marrow and thymus from two
    donors each, one donor with no blood or immune cell), or the immune atlas's 12 donors."""
    if kind == "immune":
        tissues = {d: [IMMUNE_TISSUES[i] for i in sorted(rng.choice(len(IMMUNE_TISSUES), 5, replace=False))]
                   for d in IMMUNE_DONORS}
        for d in IMMUNE_DONORS[:8]:  # blood for most donors, bone marrow for two
            tissues[d] = list(dict.fromkeys([IMMUNE_TISSUES[0], *tissues[d]]))
        for d in IMMUNE_DONORS[8:10]:
            tissues[d] = list(dict.fromkeys([IMMUNE_TISSUES[1], *tissues[d]]))
        return list(IMMUNE_DONORS), tissues
    donors = [f"TSP{i}" for i in range(1, 22)]
    by_name = {t.name: t for t in TS_TISSUES}
    order = rng.permutation(20)  # donor TSP21 has only tissues without immune cells
    special = {"bone marrow": order[:2], "thymus": order[2:4], "blood": order[:12], "spleen": order[4:11],
               "lymph node": order[3:10], "lung": order[6:14]}
    organ = [t for t in TS_TISSUES if t.name not in special]
    tissues = {d: [] for d in donors}
    for name, idx in special.items():
        for i in idx:
            tissues[donors[i]].append(by_name[name])
    for k, t in enumerate(organ):  # every tissue has donors; each organ tissue 3-6 of the first 20
        for i in rng.choice(20, size=3 + k % 4, replace=False):
            tissues[donors[i]].append(t)
    tissues["TSP21"] = [by_name["eye"]._replace(immune=0.0), by_name["skin of body"]._replace(immune=0.0),
                        by_name["tongue"]._replace(immune=0.0)]
    return donors, {d: sorted(set(ts), key=lambda t: [x.name for x in TS_TISSUES].index(t.name)) for d, ts in tissues.items()}


def _ts_v2_plan(n_cells: int, rng: np.random.Generator) -> list[tuple[str, Tissue, int]]:
    """(donor, tissue, cells) blocks in proportion to Tabula Sapiens v2's cells per donor and immune tissue."""
    by_name = {t.name: t for t in TS_TISSUES}
    blocks = [(d, by_name[t], n) for t, donors in TS_V2_DONORS.items() for d, n in donors.items()]
    counts = np.array([n for _, _, n in blocks], dtype=float)
    drawn = rng.multinomial(n_cells, counts / counts.sum())
    order = sorted(range(len(blocks)), key=lambda i: int(blocks[i][0][3:]))
    return [(blocks[i][0], blocks[i][1], int(drawn[i])) for i in order]


def label_pools(label_table: pd.DataFrame) -> dict[str, list[str]]:
    """Fine stages whose cells each Tabula Sapiens v2-like label is given: its stage, a lineage stage's pool, or
    (labels naming no lineage) `NON_LINEAGE`."""
    lineage = lineage_pools(label_table)
    staged = label_table[label_table["stage"].notna()]
    pools = {lab: lineage.get(st, [st]) for lab, st in zip(staged["label"], staged["stage"])}
    pools.update({lab: stages for lab, (stages, _) in NON_LINEAGE.items()})
    return pools


def ts_v2_stage_weights(tissue: str, pools: dict[str, list[str]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """A tissue's stage weights from its label counts (a label's count shared equally over its pool), and per stage
    the weight of each label that may name its cells."""
    stage_w: dict[str, float] = {}
    label_w: dict[str, dict[str, float]] = {}
    for label, count in TS_V2_LABELS[tissue].items():
        for stage in pools[label]:
            share = count / len(pools[label])
            stage_w[stage] = stage_w.get(stage, 0.0) + share
            label_w.setdefault(stage, {})[label] = share
    return stage_w, label_w


def _hematopoietic(table, edges, programs, background, donor, tissue, n, stages, seed,
                   stage_weights=None) -> tuple[sp.csr_matrix, list[str]]:
    """Counts over the simulator's genes and the true stage of `n` cells of one donor x tissue block (the simulator)."""
    adata = simulate_panel(table, edges, programs, background, donors=[donor], tissues=[tissue.sim], stages=stages,
                           cells_per_donor=n, n_genes=None, seed=seed, lineage_labels=False,
                           stage_weights=stage_weights)
    return sp.csr_matrix(adata.X, dtype=np.float32), adata.obs["true_stage"].astype(str).tolist()


def _labels(stages: Sequence[str], tissue: Tissue, rng: np.random.Generator) -> list[str]:
    """A Tabula Sapiens label per cell: a fine label of its stage, or (COARSE_RATE) a coarse one."""
    out = []
    for s in stages:
        fine = list(STAGE_LABELS[s])
        if s == "macrophage" and tissue.name in TISSUE_MACROPHAGE:
            fine.append(TISSUE_MACROPHAGE[tissue.name])
        coarse = STAGE_COARSE.get(s, [])
        pool = coarse if coarse and rng.random() < COARSE_RATE else fine
        out.append(pool[int(rng.integers(len(pool)))])
    return out


def _ts_v2_labels(stages: Sequence[str], label_w: dict[str, dict[str, float]], rng: np.random.Generator) -> list[str]:
    """A Tabula Sapiens v2-like label per cell: among the labels naming its stage, in proportion to their counts."""
    out = []
    for s in stages:
        names, weights = zip(*label_w[s].items())
        out.append(names[int(rng.choice(len(names), p=np.asarray(weights) / sum(weights)))])
    return out


def _other_cells(types: Sequence[str], genes: pd.DataFrame, rng: np.random.Generator,
                 profile: np.ndarray) -> sp.csr_matrix:
    """Negative-binomial counts of non-hematopoietic cells over the simulator + marker genes (fillers added later)."""
    n_named = int((genes["kind"] != "filler").sum())
    symbols = genes["symbol"].to_numpy()[:n_named]
    logmu = np.tile(profile, (len(types), 1))
    for i, t in enumerate(types):
        logmu[i, np.isin(symbols, OTHER_TYPES[t][2])] = 3.0
    p = np.exp(logmu - logmu.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    mu = p * np.exp(rng.normal(np.log(2000), 0.4, len(types)))[:, None]
    return sp.csr_matrix(rng.poisson(rng.gamma(1 / 0.3, mu * 0.3)).astype(np.float32))


def _fillers(n: int, n_fill: int, weights: np.ndarray, density: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Sparse low counts on the filler genes: about `density` of them non-zero per cell."""
    if n_fill == 0 or n == 0:
        return sp.csr_matrix((n, n_fill), dtype=np.float32)
    per_cell = rng.poisson(density * n_fill, n)
    rows = np.repeat(np.arange(n), per_cell)
    cols = rng.choice(n_fill, size=rows.size, p=weights)
    vals = 1 + rng.poisson(0.3, rows.size)
    m = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, n_fill))
    m.sum_duplicates()
    return m


def write_standin(
    kind: str, path: str | os.PathLike, *, n_cells: int, n_genes: int, seed: int = 0, filler_density: float = 0.02,
    decontx: bool = True, max_block: int = 20_000, resources: str | os.PathLike = RESOURCES, labels: str = "mixed",
) -> dict:
    """Write a CELLxGENE-layout stand-in ("reference": Tabula Sapiens v2; "immune": the immune atlas) to `path`.

    `n_cells` cells (split at random over donors and tissues, exactly `n_cells` in all), `n_genes` features of
    which the simulator's genes are in the demo vocabulary. Memory holds about `max_block` cells' matrices (plus
    obs); counts go to disk as they are made. Returns a summary (cells, genes, donors, tissues, labels).

    `labels` (reference only): "mixed" gives each cell a fine label of its stage or, at `COARSE_RATE`, a coarse one,
    over 21 donors and 27 tissues; "ts_v2" follows Tabula Sapiens v2 (docs/labels.md): its donors x immune tissues
    (and lung) in proportion to the atlas's cells (`TS_V2_DONORS`), and per tissue its immune label frequencies
    (`TS_V2_LABELS`: lineage labels such as "B cell" on most B and T cells, thymocytes, labels naming no lineage).
    """
    if kind not in ("reference", "immune"):
        raise InputError(f"standin: kind '{kind}' is unknown; use reference or immune")
    if labels not in LABEL_SETS or (labels == "ts_v2" and kind != "reference"):
        raise InputError(f"standin: labels '{labels}' is unknown for {kind}; use mixed (or ts_v2 for the reference)")
    ts_v2 = labels == "ts_v2"
    resources = Path(resources)
    label_table = load_label_table(resources / "hematopoiesis_stages.tsv")
    table = label_table[label_table["stage"].notna()].reset_index(drop=True)
    info = stage_info(table)
    edges = load_stage_graph(resources / "stage_graph.tsv", list(info.index))
    programs = load_marker_programs(resources / "marker_programs.tsv")
    background = (resources / "background_genes.txt").read_text().split()
    ids = dict(zip(label_table["label"], label_table["ontology_id"]))
    ids.update({name: spec[0] for name, spec in OTHER_TYPES.items()})
    ids.update({name: spec[1] for name, spec in NON_LINEAGE.items() if spec[1]})
    pools = label_pools(label_table)
    missing = [x for x in ALL_LABELS if not ids.get(x)]
    if missing:
        raise InputError(f"{resources / 'hematopoiesis_stages.tsv'}: label(s) {missing[:3]} have no ontology_id; the "
                         "stand-in gives every cell its Cell Ontology id: add them to the stage table")
    rng = np.random.default_rng(seed)
    genes = standin_genes(n_genes + (N_IMMUNE_MISSING if kind == "immune" else 0), resources=resources, seed=seed)
    if kind == "immune":  # the immune atlas lacks a few of the simulator's genes (absent panel genes)
        genes = genes.drop(index=rng.choice(np.flatnonzero(genes["kind"] == "simulator"), size=N_IMMUNE_MISSING,
                                            replace=False))
    n_sim, n_named = int((genes["kind"] == "simulator").sum()), int((genes["kind"] != "filler").sum())
    n_fill = len(genes) - n_named
    order = np.argsort(genes["id"].to_numpy(), kind="stable")  # CELLxGENE files list features by id
    sim_cols = np.flatnonzero(genes["kind"].to_numpy() == "simulator")
    sim_all, sim_program = gene_list(programs, background, None)
    sim_keep = pd.Index(sim_all).get_indexer(genes["symbol"].to_numpy()[sim_cols])
    filler_w = rng.lognormal(0, 1.5, n_fill)
    filler_w /= filler_w.sum() if filler_w.size else 1
    # non-hematopoietic cells: housekeeping-like simulator background genes on, blood programs off
    other_profile = np.concatenate([np.where(np.asarray(sim_program) == "background", rng.normal(-1, 1, len(sim_all)),
                                             -6.0)[sim_keep], np.full(n_named - n_sim, -4.0)])
    if ts_v2:
        plan = _ts_v2_plan(n_cells, rng)
        donors = list(dict.fromkeys(d for d, _, _ in plan))
    else:
        donors, tissues = _plan(kind, rng)
        donor_n = rng.multinomial(n_cells, rng.dirichlet(np.full(len(donors), 2.0)))

        def mixed_plan() -> Iterator[tuple[str, Tissue, int]]:
            """(donor, tissue, cells): each donor's cells split over its tissues, blood and lymphoid organs deeper."""
            for d, n_d in zip(donors, donor_n):
                depth = np.array([DEPTH.get(t.name, 1.0) for t in tissues[d]])
                yield from ((d, t, n_t) for t, n_t in zip(tissues[d], rng.multinomial(n_d, rng.dirichlet(2.0 * depth))))

        plan = mixed_plan()
    sex = dict(zip(donors, rng.choice(["female", "male"], len(donors))))
    age = dict(zip(donors, rng.integers(22, 75, len(donors))))
    obs_parts: list[pd.DataFrame] = []
    decontx_rng = np.random.default_rng(seed + 1)

    def cells() -> Iterator[sp.csr_matrix]:
        """Raw counts of one donor x tissue block (at most `max_block` cells) at a time; obs grows alongside."""
        for d, t, n_t in plan:
            n_hem = int(rng.binomial(n_t, t.immune))
            allowed = tissue_stage_weights(t.sim, info)
            stages = [s for s in STAGE_LABELS if allowed[s] > 0]
            for start in range(0, n_t, max_block):
                n = min(max_block, n_t - start)
                h = max(0, min(n, n_hem - start))
                yield _block(d, t, n, h, stages, int(rng.integers(2**31)))

    def blocks() -> Iterator[dict[str, sp.csr_matrix]]:
        """Blocks gathered to about `max_block` cells before normalising and writing (fewer, larger HDF5 appends)."""
        pending: list[sp.csr_matrix] = []
        for part in itertools.chain(cells(), [None]):
            if part is not None:
                pending.append(part)
            if pending and (part is None or sum(m.shape[0] for m in pending) >= max_block):
                counts = sp.vstack(pending, format="csr")
                pending = []
                out = {"X": sp.csr_matrix(log_cp10k(counts), dtype=np.float32), "raw.X": counts}
                if decontx:  # Tabula Sapiens' decontaminated counts: non-integer, never the raw counts
                    scale = decontx_rng.uniform(0.85, 1.0, counts.shape[0])
                    out["decontXcounts"] = sp.csr_matrix(sp.diags(scale) @ counts, dtype=np.float32)
                yield out

    def _block(donor, tissue, n, n_hem, stages, block_seed) -> sp.csr_matrix:
        brng = np.random.default_rng(block_seed)
        parts, labels, compartments, broad = [], [], [], []
        if n_hem:
            stage_w, label_w = ts_v2_stage_weights(tissue.name, pools) if ts_v2 else (None, None)
            hem, true_stage = _hematopoietic(table, edges, programs, background, donor, tissue, n_hem,
                                             list(stage_w) if ts_v2 else stages, block_seed, stage_weights=stage_w)
            hem = sp.hstack([hem[:, sim_keep], sp.csr_matrix((n_hem, n_named - n_sim), dtype=np.float32)], format="csr")
            parts.append(hem)
            labels += _ts_v2_labels(true_stage, label_w, brng) if ts_v2 else _labels(true_stage, tissue, brng)
            compartments += ["immune"] * n_hem
            broad += [BROAD_CLASS[info.loc[s, "branch"]] for s in true_stage]
        if n > n_hem:
            types = [tissue.other[i] for i in brng.integers(len(tissue.other), size=n - n_hem)] if tissue.other else \
                ["stromal cell"] * (n - n_hem)
            parts.append(_other_cells(types, genes, brng, other_profile))
            labels += types
            compartments += [OTHER_TYPES[t][1] for t in types]
            broad += types
        named = sp.vstack(parts, format="csr")
        counts = sp.hstack([named, _fillers(n, n_fill, filler_w, filler_density, brng)], format="csr")[:, order]
        smartseq = (brng.random(n) < SMARTSEQ_RATE) if kind == "reference" else np.zeros(n, bool)
        if smartseq.any():  # Smart-seq2: read counts, not UMIs (a larger, differently distributed count scale)
            rows = sp.diags(np.where(smartseq, brng.lognormal(np.log(25), 0.3, n), 1.0)) @ counts
            counts = sp.csr_matrix(rows)
            counts.data = np.where(np.repeat(smartseq, np.diff(counts.indptr)), brng.poisson(counts.data), counts.data)
            counts.eliminate_zeros()
        counts = sp.csr_matrix(counts, dtype=np.float32)
        counts.sort_indices()
        assays = np.where(smartseq, "Smart-seq2", TS_ASSAYS[0]) if kind == "reference" else \
            np.array(IMMUNE_ASSAYS)[brng.integers(len(IMMUNE_ASSAYS), size=n)]
        barcodes = ["".join(x) for x in brng.choice(list("ACGT"), size=(n, 16))]
        obs_parts.append(pd.DataFrame({
            "donor_id": donor, "tissue": tissue.name, "cell_type": labels,
            "cell_type_ontology_term_id": [ids[x] for x in labels], "assay": assays,
            "tissue_in_publication": tissue.publication, "compartment": compartments,
            "broad_cell_class": broad, "free_annotation": labels,
            "method": np.where(smartseq, "smartseq2", "10X"), "development_stage": f"{age[donor]}-year-old human stage",
            "sex": sex[donor],
        }, index=[f"{b}_{donor}_{tissue.publication}" if kind == "reference" else f"{b}-1-{donor}" for b in barcodes],
        ).astype("category"))  # categorical per block: obs of 564k cells stays small until written
        return counts

    def obs() -> pd.DataFrame:
        from pandas.api.types import union_categoricals

        index = pd.Index(np.concatenate([p.index.to_numpy() for p in obs_parts]))
        index = index.where(~index.duplicated(), index + "_dup")
        categories = {"tissue": [t.name for t in (TS_TISSUES if kind == "reference" else IMMUNE_TISSUES)],
                      "cell_type": ALL_LABELS, "cell_type_ontology_term_id": sorted({ids[x] for x in ALL_LABELS}),
                      "assay": TS_ASSAYS if kind == "reference" else IMMUNE_ASSAYS}
        frame = pd.DataFrame(index=index)
        for col in obs_parts[0].columns:
            values = union_categoricals([p[col] for p in obs_parts], ignore_order=True)
            cats = sorted(set(values.categories) | set(categories.get(col, [])))
            frame[col] = pd.Categorical(values, categories=cats)
        if kind == "immune":
            frame = frame.drop(columns=["tissue_in_publication", "compartment", "broad_cell_class", "method"])
            frame = frame.rename(columns={"free_annotation": "Manually_curated_celltype"})
        return frame

    n = len(genes)
    var = pd.DataFrame({"feature_name": pd.Categorical(genes["symbol"].to_numpy()[order]),
                        "feature_is_filtered": False,
                        "feature_reference": pd.Categorical(["NCBITaxon:9606"] * n),
                        "feature_biotype": pd.Categorical(["gene"] * n),
                        "feature_type": pd.Categorical(np.where(genes["kind"].to_numpy()[order] == "filler", "lncRNA",
                                                                "protein_coding"))},
                       index=pd.Index(genes["id"].to_numpy()[order]))
    title = "Tabula Sapiens v2 (stand-in)" if kind == "reference" else "Cross-tissue Immune Cell Atlas (stand-in)"
    title += ", Tabula Sapiens v2 labels" if ts_v2 else ""
    keys = ("X", "raw.X", "decontXcounts") if decontx else ("X", "raw.X")
    write_h5ad_streamed(path, obs, var, blocks(), keys=keys, compression="gzip",
                        uns={"title": title, "schema_version": "5.2.0",
                             "standin": {"kind": kind, "seed": seed, "n_cells": n_cells, "n_genes": n_genes,
                                         "labels": labels}})
    column = lambda col: {x for p in obs_parts for x in p[col].unique()}
    summary = {"path": str(path), "kind": kind, "n_cells": int(sum(len(p) for p in obs_parts)),
               "n_genes": int(len(genes)), "n_donors": len(column("donor_id")), "n_tissues": len(column("tissue")),
               "n_labels": len(column("cell_type")), "n_genes_in_vocabulary": n_sim}
    log.info("stand-in %s", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write one stand-in (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m fmextract.standin", description=__doc__.split("\n\n")[0],
                                epilog="example: python -m fmextract.standin reference ts.h5ad --cells 564253 "
                                       "--genes 20000 --no-decontx")
    p.add_argument("kind", choices=["reference", "immune"], help="reference: Tabula Sapiens v2; immune: the immune atlas")
    p.add_argument("output", help="the .h5ad to write (atomically)")
    p.add_argument("--cells", type=int, default=20_000, help="number of cells (default: %(default)s)")
    p.add_argument("--genes", type=int, default=600,
                   help="number of genes, >= 441: the simulator's 398 and 43 markers (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--filler-density", type=float, default=0.02,
                   help="fraction of filler genes non-zero per cell (default: %(default)s)")
    p.add_argument("--no-decontx", action="store_true", help="leave out the decontXcounts layer")
    p.add_argument("--labels", choices=LABEL_SETS, default="mixed",
                   help="reference: ts_v2 follows Tabula Sapiens v2's immune label frequencies and donors x tissues "
                        "(default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = write_standin(args.kind, args.output, n_cells=args.cells, n_genes=args.genes, seed=args.seed,
                                filler_density=args.filler_density, decontx=not args.no_decontx, labels=args.labels)
    except InputError as err:
        print(f"fmextract.standin: error: {err}")
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
