"""Reference donors: which donors the fitted-once parts use, what that leaves the benchmark, and strict non-overlap.

The reference donors fit the HVG panel, the operators' context, the adaptors (and the demo model); they are training
donors of every split and never test donors. In a real atlas the bone-marrow and progenitor stages come from few
donors, so a random draw can take all of them (the benchmark loses the stages) or none (the adaptor never sees
them). `choose_reference_donors` therefore picks for coverage: the reference donors together cover as many stages
with anchors as it can, while every stage the endpoints need keeps at least one benchmark donor.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fmextract.errors import InputError

log = logging.getLogger(__name__)

#: Columns of the stage x role table (results/tables/stage_roles.tsv).
ROLE_COLUMNS = ["stage", "branch", "depth", "needed", "reference_donors", "reference_cells", "reference_anchors",
                "benchmark_donors", "benchmark_cells"]


def anchor_stages(obs: pd.DataFrame, *, min_cells: int) -> dict[str, set[str]]:
    """Per donor, the stages it gives at least one anchor (a donor x tissue x stage group of >= `min_cells` cells)."""
    staged = obs[obs["stage"].notna()]
    sizes = staged.groupby(["donor", "tissue", "stage"], observed=True).size()
    sizes = sizes[sizes >= min_cells].reset_index()
    out = {str(d): set() for d in obs["donor"].astype(str).unique()}
    for donor, stage in zip(sizes["donor"].astype(str), sizes["stage"].astype(str)):
        out[donor].add(stage)
    return out


def needed_stages(subtypes: Mapping[str, Mapping]) -> dict[str, str]:
    """The stages the subtype endpoints are scored on ({stage: endpoint}); each needs a benchmark donor."""
    return {str(s): name for name, spec in subtypes.items() for side in ("positive", "negative") for s in spec[side]}


def _benchmark_keeps(reserved: set[str], holders: Mapping[str, set[str]]) -> bool:
    """True when every needed stage held by some donor still has a donor outside `reserved`."""
    return all(not donors or donors - reserved for donors in holders.values())


def choose_reference_donors(
    obs: pd.DataFrame, *, n_reference: int, min_cells: int, needed: Sequence[str] = (), seed: int
) -> list[str]:
    """Donors reserved for the fitted-once parts, chosen for stage coverage; seeded, sorted.

    `obs` has the prepared columns donor, tissue, stage. A seeded draw ranks the donors (its first `n_reference` are
    the plain random draw); a greedy pass then adds, `n_reference` times, the donor covering the most stages not yet
    covered with anchors (ties: the better rank), never taking the last donor of a `needed` stage. The plain draw is
    kept when it covers as many stages as the greedy pick and keeps every needed stage: among equally covering
    choices a random one favours no donor (e.g. the largest).
    """
    donors = sorted(obs["donor"].astype(str).unique())
    if not 1 <= n_reference <= len(donors) - 3:
        raise InputError(
            f"panel.n_reference_donors={n_reference} leaves fewer than 3 of {len(donors)} donors for the benchmark splits; "
            "lower it or add donors"
        )
    rng = np.random.default_rng(seed)
    draw = [str(d) for d in rng.choice(donors, size=n_reference, replace=False)]
    rank = draw + [str(d) for d in rng.permutation(sorted(set(donors) - set(draw)))]
    cover = anchor_stages(obs, min_cells=min_cells)
    staged = obs[obs["stage"].notna()]
    holders = {s: set(staged.loc[staged["stage"].astype(str) == s, "donor"].astype(str)) for s in needed}
    covered = lambda chosen: set().union(*(cover[d] for d in chosen))
    chosen: list[str] = []
    for _ in range(n_reference):
        options = [d for d in rank if d not in chosen and _benchmark_keeps(set(chosen) | {d}, holders)]
        if not options:
            lost = [s for s, ds in holders.items() if ds and not ds - set(chosen)]
            raise InputError(
                f"panel.n_reference_donors={n_reference}: only {len(chosen)} donors can be reserved without leaving a "
                f"needed stage without benchmark donors (e.g. {lost[:3] or sorted(holders)[:3]}); lower "
                "panel.n_reference_donors"
            )
        gain = [len(cover[d] - covered(chosen)) for d in options]
        chosen.append(options[int(np.argmax(gain))])  # argmax: first maximum = best rank
    if _benchmark_keeps(set(draw), holders) and len(covered(draw)) >= len(covered(chosen)):
        chosen = draw
    log.info("reference donors cover %d of %d stages with anchors (>= %d cells); the plain seeded draw covers %d",
             len(covered(chosen)), len(set().union(*cover.values())), min_cells, len(covered(draw)))
    return sorted(chosen)


def stage_roles(
    obs: pd.DataFrame, reference: Sequence[str], stage_info: pd.DataFrame, *, min_cells: int,
    needed: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Stage x role table: per stage, donors, cells and anchors among the reference donors, donors and cells among
    the benchmark donors, and whether an endpoint needs it. Stages with no cell at all are listed with zeros; cells
    with a coarse label (branch, no stage) get one row per branch with an empty stage."""
    needed = needed or {}
    ref = obs["donor"].astype(str).isin(set(map(str, reference))).to_numpy()
    staged = obs["stage"].notna().to_numpy()
    rows = []
    for stage, info in stage_info.iterrows():
        cells = staged & (obs["stage"].astype(str) == stage).to_numpy()
        anchors_ = obs[cells & ref].groupby(["donor", "tissue"], observed=True).size()
        rows.append({"stage": stage, "branch": info["branch"], "depth": info["depth"], "needed": stage in needed,
                     "reference_donors": obs.loc[cells & ref, "donor"].nunique(),
                     "reference_cells": int((cells & ref).sum()), "reference_anchors": int((anchors_ >= min_cells).sum()),
                     "benchmark_donors": obs.loc[cells & ~ref, "donor"].nunique(),
                     "benchmark_cells": int((cells & ~ref).sum())})
    for branch in sorted(obs.loc[~staged, "branch"].astype(str).unique()):
        cells = ~staged & (obs["branch"].astype(str) == branch).to_numpy()
        rows.append({"stage": "", "branch": branch, "depth": np.nan, "needed": False,
                     "reference_donors": obs.loc[cells & ref, "donor"].nunique(),
                     "reference_cells": int((cells & ref).sum()), "reference_anchors": 0,
                     "benchmark_donors": obs.loc[cells & ~ref, "donor"].nunique(),
                     "benchmark_cells": int((cells & ~ref).sum())})
    return pd.DataFrame(rows, columns=ROLE_COLUMNS)


def check_needed_stages(roles: pd.DataFrame, subtypes: Mapping[str, Mapping], *, source: str) -> list[str]:
    """Each subtype endpoint needs a positive and a negative stage with benchmark donors: one clear line otherwise.

    A listed stage without benchmark donors (an atlas without a memory-CD4 label) is a logged warning, not a stop:
    the endpoint is scored on the stages present, and the label-coverage table lists the missing stage. Returns the
    missing stages.
    """
    donors_of = roles[roles["stage"].astype(str) != ""].set_index("stage")["benchmark_donors"]
    missing = []
    for name, spec in subtypes.items():
        present = {}
        for side in ("positive", "negative"):
            stages = [str(s) for s in spec[side]]
            present[side] = [s for s in stages if donors_of.get(s, 0) > 0]
            for s in stages:
                if s not in present[side]:
                    missing.append(s)
                    row = roles[roles["stage"] == s]
                    cause = ("no donor of the panel has a cell of it" if row.empty or row["reference_donors"].iloc[0] == 0
                             else f"its only {row['reference_donors'].iloc[0]} donor(s) are reference donors")
                    log.warning("%s: stage '%s' (%s of endpoints.subtypes.%s) has 0 benchmark donors (%s); the endpoint "
                                "is scored without it (label_coverage table)", source, s, side, name, cause)
        empty = [side for side in ("positive", "negative") if not present[side]]
        if empty:
            raise InputError(
                f"{source}: endpoints.subtypes.{name} has no {empty[0]} stage among the benchmark donors (listed: "
                f"{', '.join(map(str, spec[empty[0]]))}); lower panel.n_reference_donors, check the panel's labels "
                "(stage table), or list a stage the panel has"
            )
    return missing


def check_non_overlap(reference_ids: Sequence[str], others: Mapping[str, Sequence[str]], *, source: str) -> dict[str, int]:
    """The paper's strict non-overlap rule: no observation id of the reference donors among benchmark or validation
    cells. Logs the count per set; any shared id is an error naming the set and an example."""
    ref = pd.Index(list(map(str, reference_ids)))
    found = {}
    for name, ids in others.items():
        shared = ref.intersection(pd.Index(list(map(str, ids))))
        found[name] = len(shared)
        log.info("strict non-overlap: %d of %d reference-donor observation ids appear among the %d %s", len(shared),
                 len(ref), len(ids), name)
        if len(shared):
            raise InputError(
                f"{source}: {len(shared)} observation id(s) of the reference donors also appear among the {name} "
                f"(e.g. '{shared[0]}'); the reference and evaluation cells must not overlap: remove the shared cells "
                "from one panel (or give them distinct ids if they are different cells)"
            )
    return found
