"""Donor-holdout splits: no train/test overlap, both roles, distinct balanced test sets, determinism; the cell cap."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmextract.errors import InputError
from fmextract.splits import cap_training_cells, make_splits


def held_out(table: pd.DataFrame) -> list[frozenset]:
    """The test-donor set of each split, in split order."""
    test = table[table["role"] == "test"]
    return [frozenset(g["donor"]) for _, g in test.groupby("split", sort=True)]


@settings(max_examples=40, deadline=None, derandomize=True)  # same examples every run
@given(n_donors=st.integers(3, 12), k=st.integers(1, 4), n_splits=st.integers(1, 30), seed=st.integers(0, 2**31))
def test_split_properties(n_donors, k, n_splits, seed):
    k = min(k, n_donors - 1)
    donors = [f"D{i:02d}" for i in range(n_donors)]
    table = make_splits(donors, n_splits=n_splits, n_test_donors=k, seed=seed)
    assert list(table.columns) == ["split", "donor", "role", "block"]
    assert table["split"].nunique() == n_splits and table["split"].iloc[0] == "split000"
    for _, g in table.groupby("split"):
        assert set(g["role"]) == {"train", "test"}
        train, test = set(g.loc[g["role"] == "train", "donor"]), set(g.loc[g["role"] == "test", "donor"])
        assert not train & test and train | test == set(donors) and len(test) == k
        assert len(g) == n_donors  # each donor once per split
    sets = held_out(table)
    n_comb = math.comb(n_donors, k)
    # distinct while possible: each pass over the combinations uses every one once
    assert len(set(sets[:n_comb])) == min(n_splits, n_comb)
    # donors held out about equally often
    use = Counter(d for s in sets for d in s)
    counts = [use.get(d, 0) for d in donors]
    assert max(counts) - min(counts) <= k + 1
    # determinism, and independence from input order / duplicates
    again = make_splits(list(reversed(donors)) + donors[:1], n_splits=n_splits, n_test_donors=k, seed=seed)
    pd.testing.assert_frame_equal(table, again)


def test_seed_changes_the_splits():
    donors = [f"D{i}" for i in range(10)]
    a = make_splits(donors, n_splits=8, n_test_donors=2, seed=0)
    b = make_splits(donors, n_splits=8, n_test_donors=2, seed=1)
    assert held_out(a) != held_out(b)


def test_paper_design_blocks():
    donors = [f"D{i:02d}" for i in range(15)]
    table = make_splits(donors, design="paper", n_test_donors=3, seed=7)
    per_split = table.groupby("split")["block"].first()
    assert per_split.value_counts().to_dict() == {"all_method": 40, "core_a": 24, "core_b": 24}
    assert per_split.iloc[:40].eq("all_method").all() and per_split.iloc[40:64].eq("core_a").all()
    assert len(set(held_out(table))) == 88  # 455 combinations: all distinct
    same = make_splits(donors, blocks=[{"name": "all_method", "n_splits": 40}, {"name": "core_a", "n_splits": 24},
                                       {"name": "core_b", "n_splits": 24}], n_test_donors=3, seed=7)
    pd.testing.assert_frame_equal(table, same)


def test_large_donor_pool_sampled_distinct():
    donors = [f"D{i:03d}" for i in range(60)]  # C(60, 6) ~ 5e7: sampled, not enumerated
    table = make_splits(donors, n_splits=50, n_test_donors=6, seed=3)
    sets = held_out(table)
    assert len(set(sets)) == 50
    counts = Counter(d for s in sets for d in s)
    assert max(counts.values()) - min(counts.get(d, 0) for d in donors) <= 2


@pytest.mark.parametrize(
    "donors, kwargs, match",
    [
        (["a", "b"], {"n_splits": 2, "n_test_donors": 1}, "at least 3"),
        (["a", "b", "b", "a"], {"n_splits": 2, "n_test_donors": 1}, "at least 3"),
        (["a", "b", "c"], {"n_splits": 2, "n_test_donors": 3}, r"splits.n_test_donors=3 .* at most 2"),
        (["a", "b", "c"], {"n_splits": 2, "n_test_donors": 0}, "splits.n_test_donors"),
        (["a", "b", "c"], {"n_splits": 0, "n_test_donors": 1}, "splits.n_splits"),
        (["a", "b", "c"], {"n_test_donors": 1}, "exactly one of"),
        (["a", "b", "c"], {"n_splits": 2, "design": "paper", "n_test_donors": 1}, "exactly one of"),
        (["a", "b", "c"], {"design": "nature", "n_test_donors": 1}, "design 'nature' is unknown"),
        (["a", "b", "c"], {"n_splits": 1001, "n_test_donors": 1}, "at most 1000"),
    ],
)
def test_bad_inputs(donors, kwargs, match):
    with pytest.raises(InputError, match=match):
        make_splits(donors, seed=0, **kwargs)


def obs_of(sizes: dict[str, int]) -> pd.DataFrame:
    donors = np.concatenate([[d] * n for d, n in sizes.items()])
    return pd.DataFrame({"donor": donors}, index=[f"c{i}" for i in range(len(donors))])


def test_cap_is_stratified_and_seeded():
    obs = obs_of({"A": 600, "B": 300, "C": 100, "T": 500})
    idx = cap_training_cells(obs, ["A", "B", "C"], 100, seed=0)
    assert len(idx) == 100 and idx.is_unique and set(idx) <= set(obs.index)
    assert obs.loc[idx, "donor"].value_counts().to_dict() == {"A": 60, "B": 30, "C": 10}
    assert list(idx) == [c for c in obs.index if c in set(idx)]  # original order
    assert idx.equals(cap_training_cells(obs, ["A", "B", "C"], 100, seed=0))
    assert not idx.equals(cap_training_cells(obs, ["A", "B", "C"], 100, seed=1))


def test_cap_largest_remainder_and_no_cap():
    obs = obs_of({"A": 10, "B": 10, "C": 10, "T": 5})
    idx = cap_training_cells(obs, ["A", "B", "C"], 10, seed=0)
    assert len(idx) == 10 and sorted(obs.loc[idx, "donor"].value_counts().tolist()) == [3, 3, 4]
    everything = cap_training_cells(obs, ["A", "B"], 1000, seed=0)
    assert list(everything) == list(obs.index[obs["donor"].isin(["A", "B"])])


def test_cap_errors():
    obs = obs_of({"A": 5, "B": 5})
    with pytest.raises(InputError, match="training donor"):
        cap_training_cells(obs, ["A", "Z"], 3, seed=0)
    with pytest.raises(InputError, match="max_train_cells"):
        cap_training_cells(obs, ["A"], 0, seed=0)
    with pytest.raises(InputError, match="no column 'donor'"):
        cap_training_cells(obs.rename(columns={"donor": "d"}), ["A"], 3, seed=0)


def test_split_scale_keeps_the_paper_design_small():
    from fmextract.splits import split_plan

    assert split_plan(design="paper") == [("all_method", 40), ("core_a", 24), ("core_b", 24)]
    assert split_plan(design="paper", scale=0.05) == [("all_method", 2), ("core_a", 1), ("core_b", 1)]
    assert split_plan(n_splits=12, scale=0.5) == [("all_method", 6)]
    with pytest.raises(InputError, match=r"splits.scale is 0"):
        split_plan(design="paper", scale=0)


def test_job_splits_names_each_output_by_its_split():
    from fmextract.splits import job_splits

    assert job_splits("results/methods/pca/split007.tsv") == [("split007", "results/methods/pca/split007.tsv")]
    assert [s for s, _ in job_splits(["r/m/split000.json", "r/m/split001.json"])] == ["split000", "split001"]
