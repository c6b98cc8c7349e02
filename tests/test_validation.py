"""Manifold measures: ruler Spearman (with the cross-group restriction) and trustworthiness."""

import numpy as np
import pandas as pd

from fmextract.validation import angular_distances, ruler_spearman, trustworthiness

STAGES = list("abcd")
RULER = pd.DataFrame([[abs(i - j) for j in range(4)] for i in range(4)], index=STAGES, columns=STAGES)


def arc(stages, noise=0.0, seed=0):
    """Points on a quarter circle ordered like the path a-b-c-d."""
    rng = np.random.default_rng(seed)
    theta = np.array([STAGES.index(s) for s in stages]) * 0.4 + noise * rng.normal(size=len(stages))
    return np.c_[np.cos(theta), np.sin(theta)]


def test_angular_distances():
    np.testing.assert_allclose(angular_distances(np.array([[1, 0], [0, 2], [-1, 0]])), [np.pi / 2, np.pi, np.pi / 2])


def test_ruler_spearman_perfect_and_shuffled():
    stages = np.repeat(STAGES, 5)
    assert ruler_spearman(arc(stages), stages, RULER) > 0.95
    shuffled = np.random.default_rng(0).permutation(stages)
    assert abs(ruler_spearman(arc(shuffled), stages, RULER)) < 0.3


def test_groups_exclude_within_group_pairs():
    stages = np.array(["a", "a", "d", "d"])
    donors = np.array(["x", "y", "x", "y"])
    Z = arc(stages)
    # only cross-donor pairs: (a,a), (a,d), (a,d), (d,d) -> still perfectly ordered
    assert ruler_spearman(Z, stages, RULER, groups=donors) > 0.9
    assert np.isnan(ruler_spearman(Z[:2], stages[:2], RULER, groups=donors[:2]))


def test_trustworthiness_of_identity_is_one():
    X = np.random.default_rng(0).normal(size=(30, 5))
    assert trustworthiness(X, X) == 1.0
    assert trustworthiness(X, np.random.default_rng(1).normal(size=(30, 2))) < 0.9
