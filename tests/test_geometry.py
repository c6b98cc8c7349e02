"""Shared geometry: pair indicators, residualised Spearman, holdout scoring with refits or a frozen adaptor."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from fmextract.geometry import group_folds, holdout_scores, residualised_spearman, ruler_pairs, same_group_pairs

STAGES = list("abcd")
RULER = pd.DataFrame([[abs(i - j) for j in range(4)] for i in range(4)], index=STAGES, columns=STAGES)


def test_same_group_pairs_in_condensed_order():
    meta = pd.DataFrame({"donor": ["x", "x", "y"], "tissue": ["t", "u", "t"]})
    np.testing.assert_array_equal(same_group_pairs(meta), [[1, 0], [0, 1], [0, 0]])  # pairs (0,1), (0,2), (1,2)
    np.testing.assert_array_equal(ruler_pairs(["a", "c", "d"], RULER), [2, 3, 1])


def test_residualising_removes_a_donor_effect_that_inflates_raw_spearman():
    """Latent distances that only know 'same donor = close' correlate with a ruler on which same-donor anchors are
    close too; regressing the same-donor indicator out of both leaves nothing."""
    rng = np.random.default_rng(0)
    n = 2000
    same_donor = rng.random(n) < 0.3
    target = np.where(same_donor, 1.0, 3.0) + rng.integers(0, 2, n)  # the ruler too is shorter within donors
    latent = np.where(same_donor, 0.2, 1.0) + rng.normal(scale=0.05, size=n)  # the latent knows only the donor
    assert spearmanr(latent, target)[0] > 0.5
    assert abs(residualised_spearman(latent, target, same_donor[:, None])) < 0.1
    signal = target + rng.normal(scale=0.3, size=n)  # a latent that knows the ruler keeps its score
    assert residualised_spearman(signal, target, same_donor[:, None]) > 0.5


def test_holdout_scores_frozen_adaptor_refits_nothing():
    class Frozen:
        calls = 0

        def transform(self, F):
            Frozen.calls += 1
            return F

    stages = np.repeat(STAGES, 6)
    theta = np.array([STAGES.index(s) for s in stages]) * 0.4
    F = np.c_[np.cos(theta), np.sin(theta)]
    meta = pd.DataFrame({"stage": stages, "donor": np.tile(["x", "y", "z"], 8), "tissue": "t"})
    scores = holdout_scores(F, meta, RULER, group_folds(meta["donor"]), adaptor=Frozen())
    assert Frozen.calls == 1 and scores["spearman"] > 0.9 and scores["residualised_spearman"] > 0.9
    with pytest.raises(ValueError, match="not both"):
        holdout_scores(F, meta, RULER, group_folds(meta["donor"]), adaptor=Frozen(), adaptor_kw={})
