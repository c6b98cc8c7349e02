"""Communication ruler: a bounded symmetric distance; signalling partners come out close; clear errors."""

import numpy as np
import pandas as pd
import pytest

from fmextract.communication import communication_ruler, load_pairs, usable_pairs
from fmextract.errors import InputError

PAIRS = pd.DataFrame({"ligand": ["L1", "L2", "L3"], "receptor": ["R1", "R2", "R3"], "pathway": "p", "source": "test"})
GENES = ["L1", "R1", "L2", "R2", "L3", "R3", "X"]


def constructed(seed: int = 0, per_stage: int = 3) -> tuple[np.ndarray, pd.DataFrame]:
    """Anchors of five stages: sender (L1) -> receiver (R1), talker (L2) -> listener (R2), loner (only X); noisy."""
    on = {"sender": ["L1"], "receiver": ["R1"], "talker": ["L2"], "listener": ["R2"], "loner": ["X"]}
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    for stage, genes in on.items():
        for _ in range(per_stage):
            x = rng.uniform(0.0, 0.05, size=len(GENES))
            x[[GENES.index(g) for g in genes]] += 2.0
            rows.append(x)
            meta.append(stage)
    return np.array(rows), pd.DataFrame({"stage": meta})


def test_ruler_is_a_bounded_symmetric_distance():
    rng = np.random.default_rng(1)
    profiles = rng.gamma(1.0, size=(40, len(GENES)))
    meta = pd.DataFrame({"stage": rng.choice(list("abcdefg"), size=40)})
    R = communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3)
    assert list(R.index) == list(R.columns) == sorted(meta["stage"].unique())
    D = R.to_numpy()
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert D.min() >= 0.0 and D.max() <= 1.0


def test_signalling_partners_are_closer_than_unrelated_stages():
    profiles, meta = constructed()
    R = communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3)
    for a, b in (("sender", "receiver"), ("talker", "listener")):
        for other in ("talker", "listener", "loner"):
            if other not in (a, b):
                assert R.loc[a, b] < R.loc[a, other] and R.loc[a, b] < R.loc[b, other]


def test_too_few_pairs_is_an_input_error():
    profiles, meta = constructed()
    keep = [GENES.index(g) for g in ("L1", "R1", "L2", "X")]  # only the L1-R1 pair is complete
    with pytest.raises(InputError, match=r"pairs\.tsv: only 1 ligand-receptor pair.*larger gene panel"):
        communication_ruler(profiles[:, keep], meta, ["L1", "R1", "L2", "X"], PAIRS, min_pairs=2, source="pairs.tsv")


def test_deterministic_and_independent_of_anchor_order():
    profiles, meta = constructed(seed=3)
    first = communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3)
    pd.testing.assert_frame_equal(first, communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3))
    order = np.random.default_rng(0).permutation(len(meta))
    shuffled = communication_ruler(profiles[order], meta.iloc[order].reset_index(drop=True), GENES, PAIRS, min_pairs=3)
    pd.testing.assert_frame_equal(first, shuffled, atol=1e-12)


def test_shipped_pairs_cover_the_simulator_genes(root):
    pairs = load_pairs(root / "resources" / "ligand_receptor_pairs.tsv")
    assert 60 <= len(pairs) <= 120
    universe = (root / "resources" / "background_genes.txt").read_text().split()
    universe += pd.read_csv(root / "resources" / "marker_programs.tsv", sep="\t", comment="#")["gene"].tolist()
    assert len(usable_pairs(pairs, universe)) >= 5  # the demo's default min_pairs
