"""Reference donors chosen for coverage, the stage x role table, needed stages and strict non-overlap."""

import numpy as np
import pandas as pd
import pytest

from fmextract import donors
from fmextract.errors import InputError


def obs_of(spec: dict[str, dict[str, int]], tissue: str = "blood") -> pd.DataFrame:
    """Prepared-style obs from {donor: {stage: n_cells}} (stage None = a coarse label)."""
    rows = [(d, tissue, s, "b" if s is None else "x") for d, stages in spec.items() for s, n in stages.items()
            for _ in range(n)]
    obs = pd.DataFrame(rows, columns=["donor", "tissue", "stage", "branch"])
    obs.index = [f"c{i}" for i in range(len(obs))]
    return obs


#: two bone-marrow donors hold the progenitor stages; eight blood donors hold the mature ones
ATLAS = {**{f"BM{i}": {"hsc": 12, "gmp": 12, "mono": 12} for i in range(2)},
         **{f"PB{i}": {"mono": 12, "t": 12, "b": 12} for i in range(8)}}


def test_reserved_donors_cover_the_rare_progenitor_stages_without_taking_all_of_them():
    obs = obs_of(ATLAS)
    for seed in range(20):  # whatever the seeded draw, one bone-marrow donor is reserved and one is left to benchmark
        chosen = donors.choose_reference_donors(obs, n_reference=3, min_cells=10, needed=["hsc"], seed=seed)
        assert sum(d.startswith("BM") for d in chosen) == 1 and len(chosen) == 3
        covered = set().union(*(set(ATLAS[d]) for d in chosen))
        assert covered == {"hsc", "gmp", "mono", "t", "b"}
    assert donors.choose_reference_donors(obs, n_reference=3, min_cells=10, seed=4) == \
        donors.choose_reference_donors(obs.iloc[::-1], n_reference=3, min_cells=10, seed=4)  # order-free, seeded


def test_a_needed_stage_keeps_its_last_benchmark_donor():
    spec = {"A": {"hsc": 20, "t": 20}, "B": {"t": 20}, "C": {"t": 20}, "D": {"t": 20}, "E": {"t": 20}}
    obs = obs_of(spec)
    for seed in range(10):
        chosen = donors.choose_reference_donors(obs, n_reference=2, min_cells=5, needed=["hsc"], seed=seed)
        assert "A" not in chosen  # A would cover most, but it is the only donor with hsc cells
    chosen = donors.choose_reference_donors(obs, n_reference=2, min_cells=5, needed=[], seed=0)
    assert "A" in chosen  # without the constraint coverage wins


def test_coverage_ties_keep_the_plain_seeded_draw():
    obs = obs_of({d: {"t": 10, "b": 10} for d in "ABCDEFG"})
    rng = np.random.default_rng(3)
    draw = sorted(rng.choice(sorted("ABCDEFG"), size=3, replace=False).tolist())
    assert donors.choose_reference_donors(obs, n_reference=3, min_cells=5, seed=3) == draw


def test_reference_donors_leave_three():
    obs = obs_of({d: {"t": 5} for d in "abcd"})
    with pytest.raises(InputError, match=r"panel.n_reference_donors=2 leaves fewer than 3 of 4 donors"):
        donors.choose_reference_donors(obs, n_reference=2, min_cells=1, seed=0)


def test_stage_roles_table_and_needed_stage_error():
    spec = {"A": {"hsc": 20, "t": 20, None: 4}, "B": {"t": 20, None: 3}, "C": {"t": 3}, "D": {"t": 20}}
    obs = obs_of(spec)
    info = pd.DataFrame({"branch": ["x", "x", "x"], "depth": [0.0, 4.0, 5.0]}, index=["hsc", "t", "treg"])
    needed = donors.needed_stages({"cd4_cd8": {"positive": ["treg"], "negative": ["t"]}})
    roles = donors.stage_roles(obs, ["A"], info, min_cells=10, needed=needed).set_index(["stage", "branch"])
    assert list(roles.columns) == donors.ROLE_COLUMNS[2:]
    assert roles.loc[("hsc", "x")].to_dict() == {"depth": 0.0, "needed": False, "reference_donors": 1, "reference_cells": 20,
                                                 "reference_anchors": 1, "benchmark_donors": 0, "benchmark_cells": 0}
    assert roles.loc[("t", "x"), "benchmark_donors"] == 3 and roles.loc[("t", "x"), "benchmark_cells"] == 43
    assert roles.loc[("", "b"), "reference_cells"] == 4 and roles.loc[("", "b"), "benchmark_cells"] == 3  # coarse
    subtypes = {"cd4_cd8": {"positive": ["treg"], "negative": ["t"]}}
    with pytest.raises(InputError, match=r"p: endpoints.subtypes.cd4_cd8 has no positive stage among the benchmark "
                                         r"donors \(listed: treg\)"):
        donors.check_needed_stages(roles.reset_index(), subtypes, source="p")


def test_a_listed_stage_the_panel_lacks_is_a_warning(caplog):
    spec = {"A": {"hsc": 20, "t": 20}, "B": {"t": 20, "treg": 8}, "C": {"t": 3}, "D": {"t": 20}}
    info = pd.DataFrame({"branch": ["x"] * 4, "depth": [0.0, 4.0, 5.0, 5.0]}, index=["hsc", "t", "treg", "memory"])
    subtypes = {"cd4_cd8": {"positive": ["treg", "memory", "hsc"], "negative": ["t"]}}
    needed = donors.needed_stages(subtypes)
    roles = donors.stage_roles(obs_of(spec), ["A"], info, min_cells=10, needed=needed)
    with caplog.at_level("WARNING"):
        assert donors.check_needed_stages(roles, subtypes, source="p") == ["memory", "hsc"]
    assert "stage 'memory' (positive of endpoints.subtypes.cd4_cd8) has 0 benchmark donors (no donor" in caplog.text
    assert "stage 'hsc' (positive of endpoints.subtypes.cd4_cd8) has 0 benchmark donors (its only 1 donor(s)" in caplog.text


def test_strict_non_overlap_is_checked_and_logged(caplog):
    import logging

    with caplog.at_level(logging.INFO):
        found = donors.check_non_overlap(["a", "b"], {"benchmark cells": ["c", "d"], "immune cells": ["e"]}, source="p")
    assert found == {"benchmark cells": 0, "immune cells": 0}
    assert "0 of 2 reference-donor observation ids appear among the 2 benchmark cells" in caplog.text
    with pytest.raises(InputError, match=r"p: 1 observation id\(s\) of the reference donors also appear among the "
                                         r"immune cells \(e.g. 'b'\)"):
        donors.check_non_overlap(["a", "b"], {"immune cells": ["b", "z"]}, source="p")
