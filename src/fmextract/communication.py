"""Intercellular-communication ruler: the stage-to-stage distance of the supplementary second manifold.

The paper gives no formula; this project's definition, from a ligand-receptor table (`resources/ligand_receptor_pairs.tsv`:
liana's `consensus` resource, tools/ligand_receptor_pairs.py) and anchor profiles (log1p CP10k), is:

1. Stage expression: per stage, the mean over its anchors of every ligand and receptor gene, divided by that gene's
   maximum over stages (0 for a gene never expressed), so each gene lies in [0, 1] and no single gene dominates.
   A complex (liana's notation: subunits joined by `_`, e.g. ITGAL_ITGB2) is expressed as much as its least
   expressed subunit (the minimum, liana's default complex policy).
2. Directed score of stage a sending to stage b: C[a, b] = sum over usable pairs p of L[a, p] * R[b, p]
   (pairs with every subunit of the ligand and of the receptor among the given genes; others are left out).
3. Profile of stage a: its undirected interaction vector W[a] = (outgoing C[a, :] + incoming C[:, a]) / 2, scaled so
   the strongest interaction between two different stages is 1, with the stage itself at weight 1 (its closed
   neighbourhood, as in SCAN structural similarity); autocrine scores are not used.
4. Distance = 1 - cosine(W[a], W[b]). W is non-negative, so the distance lies in [0, 1]; it is symmetric with a zero
   diagonal. Stages that signal to each other, or to the same partners, come out close; stages with no shared
   communication are at distance 1.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from fmextract.errors import InputError
from fmextract.stages import _read_tsv

PAIR_COLUMNS = ("ligand", "receptor")
#: joins the subunits of a complex in the ligand and receptor columns (liana's notation)
COMPLEX_SEPARATOR = "_"


def subunits(name: str) -> list[str]:
    """The genes of a ligand or receptor: one for a protein, each subunit for a complex (`ITGAL_ITGB2`)."""
    return name.split(COMPLEX_SEPARATOR)


def load_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate the ligand-receptor table (columns ligand, receptor; complexes as A_B); duplicates dropped."""
    table = _read_tsv(path, PAIR_COLUMNS, "ligand-receptor table")
    if table.empty:
        raise InputError(f"{path}: no ligand/receptor rows; add at least one pair")
    return table.drop_duplicates(["ligand", "receptor"]).reset_index(drop=True)


def usable_pairs(pairs: pd.DataFrame, genes: Sequence[str]) -> pd.DataFrame:
    """The pairs with every ligand and receptor subunit in `genes`, as gene-level rows.

    Columns ligand and receptor hold genes, `interaction` names the pair (`LIGAND|RECEPTOR` in the table's
    notation). A pair of two proteins is one row; a pair with a complex is one row per subunit of its larger side
    (the smaller side's subunits repeat), so the union of the two columns is every gene the pairs need. Count pairs
    with `interaction.nunique()`.
    """
    present = set(genes)
    rows = []
    for ligand, receptor in pairs[["ligand", "receptor"]].drop_duplicates().itertuples(index=False):
        lig, rec = subunits(ligand), subunits(receptor)
        if all(g in present for g in lig + rec):
            n = max(len(lig), len(rec))
            interaction = f"{ligand}|{receptor}"
            rows += [(lig[min(i, len(lig) - 1)], rec[min(i, len(rec) - 1)], interaction) for i in range(n)]
    return pd.DataFrame(rows, columns=["ligand", "receptor", "interaction"])


def communication_ruler(
    profiles: np.ndarray,
    meta: pd.DataFrame,
    genes: Sequence[str],
    pairs: pd.DataFrame,
    *,
    stage_key: str = "stage",
    min_pairs: int = 5,
    source: str = "the ligand-receptor table",
) -> pd.DataFrame:
    """Stage x stage communication distance in [0, 1], as defined in the module docstring.

    `profiles`: anchors (rows of `meta`) x `genes`; index = columns = the sorted stages of `meta[stage_key]`.
    Fewer than `min_pairs` usable pairs is an InputError naming `source` (the pairs file).
    """
    from sklearn.metrics.pairwise import cosine_similarity

    genes = list(genes)
    profiles = np.asarray(profiles, dtype=np.float64)
    if profiles.shape != (len(meta), len(genes)):
        raise InputError(f"profiles have shape {profiles.shape}, expected (anchors, genes) = {(len(meta), len(genes))}")
    used = usable_pairs(pairs, genes)
    n_pairs = used["interaction"].nunique()
    if n_pairs < min_pairs:
        raise InputError(
            f"{source}: only {n_pairs} ligand-receptor pair(s) have all their genes among the {len(genes)} genes "
            f"given (need {min_pairs}); use a larger gene panel or a pairs file with more pairs of these genes"
        )
    means = pd.DataFrame(profiles, columns=genes).groupby(meta[stage_key].astype(str).to_numpy()).mean().sort_index()
    top = means.max(axis=0)
    scaled = means.div(top.where(top > 0, 1.0), axis=1)
    groups = [g for _, g in used.groupby("interaction", sort=False)]
    L = np.column_stack([scaled[sorted(set(g["ligand"]))].to_numpy().min(axis=1) for g in groups])
    R = np.column_stack([scaled[sorted(set(g["receptor"]))].to_numpy().min(axis=1) for g in groups])
    C = L @ R.T
    W = (C + C.T) / 2
    np.fill_diagonal(W, 0.0)
    if W.max() <= 0:
        raise InputError(
            f"{source}: no stage expresses a ligand whose receptor another stage expresses ({n_pairs} pairs used); "
            "use a pairs file with pairs expressed in these cells"
        )
    W /= W.max()
    np.fill_diagonal(W, 1.0)
    D = np.clip(1.0 - cosine_similarity(W), 0.0, 1.0)
    D = (D + D.T) / 2
    np.fill_diagonal(D, 0.0)
    return pd.DataFrame(D, index=means.index, columns=means.index)
