"""Grouped donor-holdout splits and the stratified training-cell cap.

A split holds out ``n_test_donors`` donors as its test set; every other donor given is a training donor. Test-donor
sets are distinct while the combinations last (then a new pass over them starts), and are chosen so that donors are
held out about equally often. The paper's campaign is three blocks: 40 all-method splits and two blocks of 24
core-only splits (``design="paper"``).
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fmextract.errors import InputError

#: the paper's 88 splits: 40 run by every method, then 2 x 24 run by the core methods only.
PAPER_BLOCKS: tuple[dict, ...] = (
    {"name": "all_method", "n_splits": 40},
    {"name": "core_a", "n_splits": 24},
    {"name": "core_b", "n_splits": 24},
)
#: split names are split000..split999 (the workflow's wildcard constraint is split\d{3}).
MAX_SPLITS = 1000
#: enumerate every test-donor combination up to this many; sample candidates beyond.
_MAX_ENUMERATED = 200_000
_N_CANDIDATES = 64


def _resolve_blocks(n_splits: int | None, blocks: Sequence[Mapping] | None, design: str | None) -> list[tuple[str, int]]:
    """The (block name, n_splits) list from exactly one of n_splits, blocks, design."""
    given = [name for name, v in (("n_splits", n_splits), ("blocks", blocks), ("design", design)) if v is not None]
    if len(given) != 1:
        raise InputError(f"make_splits: give exactly one of splits.n_splits, blocks, design (got {given or 'none'})")
    if design is not None:
        if design != "paper":
            raise InputError(f"make_splits: design '{design}' is unknown; use design='paper' or set splits.n_splits")
        blocks = PAPER_BLOCKS
    if n_splits is not None:
        blocks = [{"name": "all_method", "n_splits": n_splits}]
    out = []
    for i, block in enumerate(blocks):
        if not isinstance(block, Mapping) or "name" not in block or "n_splits" not in block:
            raise InputError(f"make_splits: blocks[{i}] must be a mapping with keys 'name' and 'n_splits'")
        k = block["n_splits"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"make_splits: splits.n_splits of block '{block['name']}' is {k!r}; set a positive integer")
        out.append((str(block["name"]), int(k)))
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise InputError(f"make_splits: block names {names} repeat; give each block its own name")
    total = sum(k for _, k in out)
    if total > MAX_SPLITS:
        raise InputError(f"make_splits: {total} splits requested; set splits.n_splits to at most {MAX_SPLITS}")
    return out


def split_plan(n_splits: int | None = None, design: str | None = None, *, scale: float = 1.0) -> list[tuple[str, int]]:
    """The (block name, n_splits) plan of a config's `splits` section; the first block is run by every method.

    `scale` (config splits.scale) shrinks or grows every block alike, at least one split each: 0.05 turns the paper's
    40 + 24 + 24 into 2 + 1 + 1, keeping the design's structure (a quick run of the paper config).
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise InputError(f"splits.scale is {scale!r}; set a positive number (1 = the design as given)")
    plan = [(name, max(1, int(round(k * scale)))) for name, k in _resolve_blocks(n_splits, None, design)]
    total = sum(k for _, k in plan)
    if total > MAX_SPLITS:
        raise InputError(f"make_splits: {total} splits requested (splits.scale={scale}); at most {MAX_SPLITS}")
    return plan


def _test_sets(n_donors: int, k: int, n_total: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """`n_total` test-donor index sets of size k: distinct until exhausted, donor use kept balanced, seeded."""
    usage = np.zeros(n_donors)
    chosen: list[tuple[int, ...]] = []
    n_comb = math.comb(n_donors, k)
    if n_comb <= _MAX_ENUMERATED:
        from itertools import combinations

        combos = np.array(list(combinations(range(n_donors), k)), dtype=np.int64)
        combos = combos[rng.permutation(len(combos))]  # random order = seeded tie-break
        used = np.zeros(len(combos), dtype=bool)
        for _ in range(n_total):
            if used.all():
                used[:] = False  # every combination taken: start a new pass
            score = np.where(used, np.inf, usage[combos].sum(axis=1))
            j = int(np.argmin(score))
            used[j] = True
            usage[combos[j]] += 1
            chosen.append(tuple(int(i) for i in combos[j]))
        return chosen
    seen: set[tuple[int, ...]] = set()  # n_comb > _MAX_ENUMERATED >> MAX_SPLITS: never exhausted
    for _ in range(n_total):
        best, best_score = None, np.inf
        while best is None:
            for _ in range(_N_CANDIDATES):
                cand = tuple(sorted(int(i) for i in rng.choice(n_donors, size=k, replace=False)))
                score = usage[list(cand)].sum()
                if cand not in seen and score < best_score:
                    best, best_score = cand, score
        seen.add(best)
        usage[list(best)] += 1
        chosen.append(best)
    return chosen


def make_splits(
    donors: Sequence[str],
    *,
    n_test_donors: int,
    seed: int,
    n_splits: int | None = None,
    blocks: Sequence[Mapping] | None = None,
    design: str | None = None,
) -> pd.DataFrame:
    """Donor-holdout split table (split, donor, role, block): long format, one row per split x donor.

    Give exactly one of ``n_splits`` (one block named ``all_method``), ``blocks`` (list of ``{name, n_splits}``)
    or ``design="paper"`` (40 + 24 + 24). Donors are sorted first, so the table depends only on the donor set and
    ``seed``. Splits are numbered ``split000``... across blocks in block order.
    """
    names = sorted({str(d) for d in donors})
    if len(names) < 3:
        raise InputError(
            f"make_splits: only {len(names)} distinct donor(s) ({names}); donor-holdout splits need at least 3 — "
            "add donors to the panel or lower panel.n_reference_donors"
        )
    if isinstance(n_test_donors, bool) or not isinstance(n_test_donors, (int, np.integer)) or n_test_donors < 1:
        raise InputError(f"make_splits: splits.n_test_donors is {n_test_donors!r}; set a positive integer")
    if n_test_donors >= len(names):
        raise InputError(
            f"make_splits: splits.n_test_donors={n_test_donors} leaves no training donor among {len(names)} donors; "
            f"set splits.n_test_donors to at most {len(names) - 1}"
        )
    plan = _resolve_blocks(n_splits, blocks, design)
    rng = np.random.default_rng(seed)
    sets = _test_sets(len(names), int(n_test_donors), sum(k for _, k in plan), rng)
    block_of = [name for name, k in plan for _ in range(k)]
    rows = []
    for i, (test, block) in enumerate(zip(sets, block_of)):
        test_set = set(test)
        for j, donor in enumerate(names):
            rows.append((f"split{i:03d}", donor, "test" if j in test_set else "train", block))
    table = pd.DataFrame(rows, columns=["split", "donor", "role", "block"])
    return table.sort_values(["split", "role", "donor"], kind="stable", ignore_index=True)


def cap_training_cells(
    obs: pd.DataFrame, train_donors: Sequence[str], cap: int, seed: int, *, donor_key: str = "donor"
) -> pd.Index:
    """Obs names of the training donors' cells, subsampled to at most `cap` with each donor's share kept (stratified).

    Per-donor quotas are proportional to donor size (largest remainder); cells are drawn without replacement within
    each donor. The result is in the original obs order. With no more cells than `cap`, every training cell is kept.
    """
    if donor_key not in obs.columns:
        raise InputError(f"cap_training_cells: obs has no column '{donor_key}'; run the prepare step to add it")
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise InputError(f"cap_training_cells: splits.max_train_cells is {cap!r}; set a positive integer")
    donors = obs[donor_key].astype(str).to_numpy()
    wanted = {str(d) for d in train_donors}
    missing = sorted(wanted - set(donors))
    if missing:
        raise InputError(f"cap_training_cells: training donor(s) {missing} have no cells in obs['{donor_key}']; "
                         "rerun the splits rule on this panel")
    positions = np.flatnonzero(np.isin(donors, sorted(wanted)))
    if positions.size <= cap:
        return obs.index[positions]
    groups = {d: positions[donors[positions] == d] for d in sorted(wanted)}
    sizes = np.array([len(g) for g in groups.values()], dtype=float)
    exact = sizes * cap / sizes.sum()
    quota = np.floor(exact).astype(int)
    remainder = cap - quota.sum()
    order = np.lexsort((np.arange(len(exact)), -(exact - quota)))  # largest fractional part first, then donor order
    quota[order[:remainder]] += 1
    rng = np.random.default_rng(seed)
    keep = [rng.choice(g, size=q, replace=False) for g, q in zip(groups.values(), quota) if q > 0]
    return obs.index[np.sort(np.concatenate(keep))]


def job_splits(outputs: str | Sequence[str]) -> list[tuple[str, str]]:
    """(split, path) of a per-split rule's output(s): one for a job per split, every split of an all-in-one job
    (config splits.jobs); the split is the file's stem (results/<...>/split007.tsv)."""
    paths = [outputs] if isinstance(outputs, str) else [str(p) for p in outputs]
    return [(PurePath(p).stem, p) for p in paths]
