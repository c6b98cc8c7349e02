"""The curated hematopoiesis resources: stage table, stage graph (the ruler), marker programs, label mapping."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path

from fmextract.errors import InputError

#: The seven branches a stage table may use (METHOD.md, "Data contract").
BRANCHES = (
    "stem_progenitor",
    "erythroid_megakaryocyte",
    "granulocytic",
    "monocyte_macrophage_dc",
    "b_plasma",
    "t_nk",
    "other_immune",
)

STAGE_COLUMNS = ("label", "stage", "branch", "depth")


def normalise_label(label: str) -> str:
    """Case-folded label with runs of whitespace collapsed; the fallback key of `map_labels`."""
    return re.sub(r"\s+", " ", str(label)).strip().casefold()


def _read_tsv(path: str | os.PathLike, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """Read a tab-separated resource as strings, checking it exists and has `columns`."""
    if not os.path.exists(path):
        raise InputError(f"{path}: {what} file not found; point the config at an existing tab-separated file")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: column '{missing[0]}' missing (has: {', '.join(map(str, table.columns))}); "
            f"the {what} needs a tab-separated header '{chr(9).join(columns)}'"
        )
    table = table[list(columns)].apply(lambda col: col.str.strip())
    for col in columns:
        empty = table.index[table[col] == ""]
        if len(empty):
            raise InputError(f"{path}: empty '{col}' in data row {empty[0] + 1}; fill it in or delete the row")
    return table


def load_stage_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate the label -> stage/branch/depth table; returns columns label, stage, branch, depth (float)."""
    table = _read_tsv(path, STAGE_COLUMNS, "stage table")
    dup = table["label"][table["label"].duplicated()]
    if len(dup):
        raise InputError(f"{path}: label '{dup.iloc[0]}' appears more than once; keep one row per label")
    bad = table.loc[~table["branch"].isin(BRANCHES), ["label", "branch"]]
    if len(bad):
        raise InputError(
            f"{path}: label '{bad['label'].iloc[0]}' has unknown branch '{bad['branch'].iloc[0]}'; "
            f"use one of {', '.join(BRANCHES)}"
        )
    depth = pd.to_numeric(table["depth"], errors="coerce")
    if depth.isna().any() or (depth < 0).any():
        i = int(np.flatnonzero(depth.isna().to_numpy() | (depth < 0).to_numpy())[0])
        raise InputError(
            f"{path}: label '{table['label'].iloc[i]}' has depth '{table['depth'].iloc[i]}'; depth must be a number >= 0"
        )
    table["depth"] = depth.astype(float)
    per_stage = table.groupby("stage", sort=False)[["branch", "depth"]].nunique()
    clash = per_stage.index[(per_stage > 1).any(axis=1)]
    if len(clash):
        raise InputError(
            f"{path}: stage '{clash[0]}' has rows with different branch or depth; give every row of a stage the same values"
        )
    norm = table.assign(key=table["label"].map(normalise_label)).groupby("key")["stage"].nunique()
    if (norm > 1).any():
        raise InputError(
            f"{path}: labels differing only in case/spacing ('{norm.index[norm > 1][0]}') map to different stages; "
            "rename or merge them"
        )
    return table.reset_index(drop=True)


def stage_info(table: pd.DataFrame) -> pd.DataFrame:
    """One row per stage (in table order) with its branch and depth."""
    return table.drop_duplicates("stage").set_index("stage")[["branch", "depth"]]


def load_stage_graph(path: str | os.PathLike, stages: list[str]) -> list[tuple[str, str]]:
    """Read the undirected stage graph; every endpoint must be a known stage and all `stages` one connected graph."""
    table = _read_tsv(path, ("source", "target"), "stage graph")
    known = set(stages)
    for col in ("source", "target"):
        unknown = table.loc[~table[col].isin(known), col]
        if len(unknown):
            raise InputError(
                f"{path}: {col} '{unknown.iloc[0]}' is not a stage of the stage table; fix the name or add the stage"
            )
    loops = table.index[table["source"] == table["target"]]
    if len(loops):
        raise InputError(f"{path}: edge '{table['source'].iloc[loops[0]]}-{table['source'].iloc[loops[0]]}' is a self-loop; delete it")
    edges: list[tuple[str, str]] = []
    seen: set[frozenset] = set()
    for a, b in zip(table["source"], table["target"]):
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            edges.append((a, b))
    order = list(dict.fromkeys(stages))
    n_comp, comp = connected_components(_adjacency(order, edges), directed=False)
    if n_comp > 1:
        root = comp[0]
        stray = [s for s, c in zip(order, comp) if c != root]
        raise InputError(
            f"{path}: the stage graph is not connected ({n_comp} components; e.g. '{stray[0]}' cannot reach '{order[0]}'); "
            "add an edge linking it"
        )
    return edges


def _adjacency(nodes: list[str], edges: list[tuple[str, str]]) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency matrix of `edges` over `nodes`."""
    index = {s: i for i, s in enumerate(nodes)}
    rows = [index[a] for a, b in edges] + [index[b] for a, b in edges]
    cols = [index[b] for a, b in edges] + [index[a] for a, b in edges]
    n = len(nodes)
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    adj.data[:] = 1.0
    return adj


def ruler_distances(stages: list[str], edges: list[tuple[str, str]]) -> np.ndarray:
    """All-pairs hop counts between `stages` on the full stage graph (inf where disconnected)."""
    stages = list(stages)
    nodes = list(dict.fromkeys([*stages, *(s for e in edges for s in e)]))
    dist = shortest_path(_adjacency(nodes, list(edges)), method="D", directed=False, unweighted=True)
    return dist[: len(stages), : len(stages)].astype(float)


def load_marker_programs(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read the long-format program/gene table into {program: [genes]} (file order, duplicates dropped)."""
    table = _read_tsv(path, ("program", "gene"), "marker programs")
    if table.empty:
        raise InputError(f"{path}: no program/gene rows; add at least one marker program")
    table = table.drop_duplicates()
    return {p: g["gene"].tolist() for p, g in table.groupby("program", sort=False)}


def map_labels(labels: pd.Series, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage, branch and depth per cell (NaN if unmapped) and a count table of unmapped labels (label, n_cells).

    Exact label matches win; otherwise labels are matched case-insensitively with spacing collapsed.
    """
    labels = pd.Series(labels).astype(str)
    exact = table.set_index("label")["stage"]
    loose = table.assign(key=table["label"].map(normalise_label)).drop_duplicates("key").set_index("key")["stage"]
    stage = labels.map(exact)
    todo = stage.isna()
    if todo.any():
        stage[todo] = labels[todo].map(normalise_label).map(loose)
    info = stage_info(table)
    out = pd.DataFrame(
        {
            "stage": stage.to_numpy(dtype=object),
            "branch": stage.map(info["branch"]).to_numpy(dtype=object),
            "depth": stage.map(info["depth"]).to_numpy(dtype=float),
        },
        index=labels.index,
    )
    miss = labels[out["stage"].isna().to_numpy()]
    unmapped = miss.value_counts().rename_axis("label").reset_index(name="n_cells")
    unmapped = unmapped.sort_values(["n_cells", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return out, unmapped
