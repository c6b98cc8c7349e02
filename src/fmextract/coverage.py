"""Label coverage: for every label of a panel, its cells, its stage and branch, and which parts of the pipeline use it.

One row per (label, ontology id) of the panel (cells of the kept assays), unmapped labels included, plus one row per
stage an endpoint lists that the panel lacks. The parts (docs/labels.md):

- ``branch_endpoints`` / ``stage_endpoints``: the label's cells carry a branch / a stage, so the branch / stage
  readouts train and score on them (benchmark panel only);
- one column per subtype endpoint: ``positive`` / ``negative`` when the label's stage is in that list (benchmark
  panel only); an absent listed stage has ``n_cells`` 0 and ``mapping`` ``absent``;
- ``anchor_cells``: its cells inside a donor x tissue x stage group of >= ``anchors.min_cells`` cells (operator
  screen, anchor-trained adaptor, manifold validation);
- ``cell_adaptor_cells``: its cells in the cell-trained adaptor's stage-balanced sample of the reference donors (the
  same draw as rule adaptor: `adaptor.balanced_sample`, same seed and cell order).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fmextract.adaptor import balanced_sample

#: columns before the per-subtype columns, and after them.
HEAD_COLUMNS = ["label", "ontology_id", "n_cells", "stage", "branch", "mapping", "branch_endpoints", "stage_endpoints"]
TAIL_COLUMNS = ["anchor_cells", "cell_adaptor_cells"]


def _mapping(stage, branch, lineage: set[str]) -> str:
    """How a label maps: a fine stage, a lineage stage, its branch only, or not at all."""
    if isinstance(stage, str) and stage:
        return "lineage stage" if stage in lineage else "stage"
    return "branch only" if isinstance(branch, str) and branch else "unmapped"


def label_coverage(
    obs: pd.DataFrame,
    unmapped: pd.DataFrame,
    subtypes: Mapping[str, Mapping],
    stage_info: pd.DataFrame,
    *,
    lineage: Sequence[str],
    min_cells: int,
    benchmark: bool,
    reference_donors: Sequence[str] = (),
    cell_per_stage: int = 0,
    seed: int = 0,
    ontology_key: str | None = None,
) -> pd.DataFrame:
    """The coverage table of one prepared panel (`obs`: its prepared obs; `unmapped`: its unmapped-label counts).

    `benchmark`: the panel is the benchmark (reference) panel, whose cells the endpoints and the cell-trained adaptor
    use (its `reference_donors`, `cell_per_stage` and `seed` as rule adaptor); other panels are used through anchors.
    """
    obs = obs.copy()
    obs["ontology_id"] = obs[ontology_key].astype(str) if ontology_key and ontology_key in obs else ""
    staged = obs["stage"].notna().to_numpy()
    group = obs[["donor", "tissue", "stage"]].astype(str).agg("|".join, axis=1).where(staged)
    sizes = group.value_counts()
    in_anchor = group.map(sizes).fillna(0).to_numpy() >= min_cells
    drawn = np.zeros(len(obs), dtype=bool)
    if benchmark and cell_per_stage > 0:
        ref = np.flatnonzero(obs["donor"].astype(str).isin(set(map(str, reference_donors))).to_numpy() & staged)
        drawn[ref[balanced_sample(obs["stage"].iloc[ref], per_label=cell_per_stage, seed=seed)]] = True
    obs = obs.assign(anchor=in_anchor, drawn=drawn)
    keys = ["cell_type", "ontology_id"]
    per = obs.groupby(keys, observed=True, sort=False).agg(
        n_cells=("stage", "size"), stage=("stage", "first"), branch=("branch", "first"),
        anchor_cells=("anchor", "sum"), cell_adaptor_cells=("drawn", "sum")).reset_index()
    per = per.rename(columns={"cell_type": "label"})
    lost = unmapped.assign(stage=None, branch=None, anchor_cells=0, cell_adaptor_cells=0)
    sides = {name: {str(s): side for side in ("negative", "positive") for s in spec[side]}
             for name, spec in subtypes.items()}
    present = set(obs["stage"].dropna().astype(str))
    absent = sorted({s for side in sides.values() for s in side} - present) if benchmark else []
    absent = pd.DataFrame({"label": "", "ontology_id": "", "n_cells": 0, "stage": absent,
                           "branch": [stage_info["branch"].get(s) for s in absent], "anchor_cells": 0,
                           "cell_adaptor_cells": 0})
    parts = [p[per.columns].astype(object) for p in (per, lost, absent) if len(p)]
    table = pd.concat(parts, ignore_index=True)
    table["n_cells"] = table["n_cells"].astype(int)
    lineage = set(lineage)
    table["mapping"] = [_mapping(s, b, lineage) for s, b in zip(table["stage"], table["branch"])]
    table.loc[table["n_cells"] == 0, "mapping"] = "absent"
    table["branch_endpoints"] = benchmark & table["branch"].notna() & (table["n_cells"] > 0)
    table["stage_endpoints"] = benchmark & table["stage"].notna() & (table["n_cells"] > 0)
    for name, side in sides.items():
        table[name] = table["stage"].map(side).fillna("") if benchmark else ""
    table[TAIL_COLUMNS] = table[TAIL_COLUMNS].astype(int)
    table = table.sort_values(["n_cells", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return table[[*HEAD_COLUMNS, *sides, *TAIL_COLUMNS]]

