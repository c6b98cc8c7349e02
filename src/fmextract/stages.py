"""The curated hematopoiesis resources: stage table, stage graph (the ruler), marker programs, label mapping."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path

from fmextract.errors import InputError

#: The seven branches a stage table may use (docs/method.md, "Data contract").
BRANCHES = (
    "stem_progenitor",
    "erythroid_megakaryocyte",
    "granulocytic",
    "monocyte_macrophage_dc",
    "b_plasma",
    "t_nk",
    "other_immune",
)
#: The branches of a non-hematopoietic lineage table (the mismatched-compartment control's own ruler): its lineages
#: and `root`, the cell-less node joining them. A stage table uses one set or the other, never a mix.
COMPARTMENT_BRANCHES = ("root", "epithelial", "endothelial", "stromal")

STAGE_COLUMNS = ("label", "stage", "branch", "depth")
#: Optional column of the stage table: the label's Cell Ontology term id (CELLxGENE `cell_type_ontology_term_id`).
ONTOLOGY_COLUMN = "ontology_id"
#: Optional column of the stage table: for a LINEAGE stage (a label naming a lineage without a finer state, e.g.
#: "B cell"), the space-separated fine stages it stands for; empty for a fine stage (docs/labels.md).
POOLS_COLUMN = "pools"
#: data.lineage_labels: lineage labels are stages of their own ("stage") or keep only their branch ("branch").
LINEAGE_MODES = ("stage", "branch")
_ONTOLOGY_ID = re.compile(r"^CL:\d{7}$")


def normalise_label(label: str) -> str:
    """Case-folded label with runs of whitespace collapsed; the fallback key of `map_labels`."""
    return re.sub(r"\s+", " ", str(label)).strip().casefold()


def _read_tsv(path: str | os.PathLike, columns: tuple[str, ...], what: str, *, optional: tuple[str, ...] = (),
              may_be_empty: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a tab-separated resource as strings, checking it exists and has `columns` (`optional` ones kept if there)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: {what} file not found; point the config at an existing tab-separated file")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: column '{missing[0]}' missing (has: {', '.join(map(str, table.columns))}); "
            f"the {what} needs a tab-separated header '{chr(9).join(columns)}'"
        )
    table = table[[*columns, *(c for c in optional if c in table.columns)]].apply(lambda col: col.str.strip())
    for col in columns:
        if col in may_be_empty:
            continue
        empty = table.index[table[col] == ""]
        if len(empty):
            raise InputError(f"{path}: empty '{col}' in data row {empty[0] + 1}; fill it in or delete the row")
    return table


def load_label_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate every label row of the stage table, coarse labels included.

    Columns label, stage, branch, depth (float) and ontology_id (empty string where the label has none). A COARSE
    label (e.g. "dendritic cell", "granulocyte") has a branch but an empty stage and depth: its cells keep their
    branch, while stage endpoints, anchors and stage-trained parts skip them. A LINEAGE stage ("B cell" -> b_cell)
    lists in `pools` the fine stages it stands for (`lineage_pools`). `load_stage_table` keeps the staged rows.
    """
    table = _read_tsv(path, STAGE_COLUMNS, "stage table", optional=(ONTOLOGY_COLUMN, POOLS_COLUMN),
                      may_be_empty=("stage", "depth"))
    for col in (ONTOLOGY_COLUMN, POOLS_COLUMN):
        if col not in table.columns:
            table[col] = ""
    dup = table["label"][table["label"].duplicated()]
    if len(dup):
        raise InputError(f"{path}: label '{dup.iloc[0]}' appears more than once; keep one row per label")
    half = table.index[(table["stage"] == "") != (table["depth"] == "")]
    if len(half):
        raise InputError(f"{path}: label '{table['label'].iloc[half[0]]}' has a stage or a depth but not both; give a "
                         "fine label both, or leave both empty for a coarse label (branch only)")
    allowed = COMPARTMENT_BRANCHES if table["branch"].isin(COMPARTMENT_BRANCHES).all() else BRANCHES
    bad = table.loc[~table["branch"].isin(allowed), ["label", "branch"]]
    if len(bad):
        raise InputError(
            f"{path}: label '{bad['label'].iloc[0]}' has unknown branch '{bad['branch'].iloc[0]}'; "
            f"use one of {', '.join(BRANCHES)} (or, for a non-hematopoietic lineage table, {', '.join(COMPARTMENT_BRANCHES)})"
        )
    ids = table[ONTOLOGY_COLUMN]
    bad_id = ids[(ids != "") & ~ids.str.match(_ONTOLOGY_ID)]
    if len(bad_id):
        raise InputError(f"{path}: ontology_id '{bad_id.iloc[0]}' is not a Cell Ontology id like CL:0000084; fix it or "
                         "leave it empty")
    dup_id = ids[(ids != "") & ids.duplicated()]
    if len(dup_id):
        raise InputError(f"{path}: ontology_id '{dup_id.iloc[0]}' is given to more than one label; keep it on one row")
    staged = table["stage"] != ""
    depth = pd.to_numeric(table["depth"].where(staged), errors="coerce")
    if (depth[staged].isna() | (depth < 0)).any():
        i = int(np.flatnonzero((staged & depth.isna()).to_numpy() | (depth < 0).to_numpy())[0])
        raise InputError(
            f"{path}: label '{table['label'].iloc[i]}' has depth '{table['depth'].iloc[i]}'; depth must be a number >= 0"
        )
    table["depth"] = depth.astype(float)
    table["stage"] = table["stage"].where(staged)
    table[POOLS_COLUMN] = table[POOLS_COLUMN].str.split().str.join(" ")
    per_stage = table[staged].groupby("stage", sort=False)[["branch", "depth", POOLS_COLUMN]].nunique()
    clash = per_stage.index[(per_stage > 1).any(axis=1)]
    if len(clash):
        raise InputError(f"{path}: stage '{clash[0]}' has rows with different branch, depth or pools; give every row of "
                         "a stage the same values")
    _check_pools(table, path)
    key = table.assign(key=table["label"].map(normalise_label), target=table["stage"].fillna("coarse:" + table["branch"]))
    norm = key.groupby("key")["target"].nunique()
    if (norm > 1).any():
        raise InputError(
            f"{path}: labels differing only in case/spacing ('{norm.index[norm > 1][0]}') map to different stages; "
            "rename or merge them"
        )
    return table.reset_index(drop=True)


def _check_pools(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """A lineage stage pools fine stages of its own branch; a coarse row pools nothing."""
    bad = table.index[(table[POOLS_COLUMN] != "") & table["stage"].isna()]
    if len(bad):
        raise InputError(f"{path}: coarse label '{table['label'].iloc[bad[0]]}' has pools; only a lineage stage pools fine "
                         "stages: give it a stage and depth, or empty its pools")
    info = table[table["stage"].notna()].drop_duplicates("stage").set_index("stage")
    fine = set(info.index[info[POOLS_COLUMN] == ""])
    for stage, row in info[info[POOLS_COLUMN] != ""].iterrows():
        for member in row[POOLS_COLUMN].split():
            if member not in fine or info.loc[member, "branch"] != row["branch"]:
                raise InputError(f"{path}: lineage stage '{stage}' pools '{member}', which is not a fine stage of branch "
                                 f"'{row['branch']}'; list fine stages of its own branch in its pools column")


def lineage_pools(table: pd.DataFrame) -> dict[str, list[str]]:
    """{lineage stage: the fine stages it stands for}, in table order (empty for a table without lineage stages)."""
    info = table[table["stage"].notna()].drop_duplicates("stage")
    pools = info[POOLS_COLUMN] if POOLS_COLUMN in info else pd.Series("", index=info.index)
    return {s: p.split() for s, p in zip(info["stage"], pools) if p}


def fine_stages(table: pd.DataFrame) -> list[str]:
    """The fine stages of the table (lineage stages left out), in table order."""
    lineage = lineage_pools(table)
    return [s for s in stage_info(table).index if s not in lineage]


def lineage_as(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The label table for `data.lineage_labels`: "stage" as is; "branch" turns lineage rows coarse (branch only)."""
    if mode not in LINEAGE_MODES:
        raise InputError(f"data.lineage_labels is '{mode}'; use one of {', '.join(LINEAGE_MODES)}")
    if mode == "stage":
        return table
    out = table.copy()
    lineage = out["stage"].isin(list(lineage_pools(table)))
    out.loc[lineage, ["stage", "depth"]] = np.nan
    out.loc[lineage, POOLS_COLUMN] = ""
    return out


def load_stage_table(path: str | os.PathLike) -> pd.DataFrame:
    """The staged rows of the stage table (label -> stage, branch, depth); coarse labels left out (`load_label_table`)."""
    table = load_label_table(path)
    return table[table["stage"].notna()].reset_index(drop=True)


def stage_info(table: pd.DataFrame) -> pd.DataFrame:
    """One row per stage (in table order) with its branch and depth; coarse labels (no stage) are not stages."""
    return table[table["stage"].notna()].drop_duplicates("stage").set_index("stage")[["branch", "depth"]]


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


def map_labels(
    labels: pd.Series, table: pd.DataFrame, *, ontology_ids: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage, branch and depth per cell and a count table of unmapped labels (label, ontology_id, n_cells).

    A cell maps by its Cell Ontology id (`ontology_ids`, e.g. obs['cell_type_ontology_term_id']) when the table has
    that id, else by its label: exact match first, then case-insensitive with spacing collapsed. A coarse label gives
    a branch with stage and depth NaN; an unmapped cell has all three NaN.
    """
    labels = pd.Series(labels).astype(str)
    rows = table.reset_index(drop=True)
    row = labels.map(pd.Series(rows.index, index=rows["label"]))
    todo = row.isna()
    if todo.any():
        loose = rows.assign(key=rows["label"].map(normalise_label)).drop_duplicates("key")
        row[todo] = labels[todo].map(normalise_label).map(pd.Series(loose.index, index=loose["key"]))
    ids = None
    if ontology_ids is not None:
        ids = pd.Series(ontology_ids, index=labels.index).astype(str).str.strip()
        known = rows[ONTOLOGY_COLUMN] != "" if ONTOLOGY_COLUMN in rows else pd.Series(False, index=rows.index)
        by_id = ids.map(pd.Series(rows.index[known], index=rows.loc[known, ONTOLOGY_COLUMN]))
        row = by_id.where(by_id.notna(), row)
    ok = row.notna().to_numpy()
    hit = row[ok].astype(int).to_numpy()
    out = pd.DataFrame({"stage": pd.Series(np.nan, index=labels.index, dtype=object),
                        "branch": pd.Series(np.nan, index=labels.index, dtype=object),
                        "depth": np.full(len(labels), np.nan)}, index=labels.index)
    for col in ("stage", "branch", "depth"):
        out.loc[ok, col] = rows[col].to_numpy()[hit]
    miss = ~ok
    unmapped = pd.DataFrame({"label": labels[miss].to_numpy(),
                             "ontology_id": ids[miss].to_numpy() if ids is not None else ""})
    unmapped = unmapped.value_counts().rename("n_cells").reset_index()
    unmapped = unmapped.sort_values(["n_cells", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return out[["stage", "branch", "depth"]], unmapped[["label", "ontology_id", "n_cells"]]
