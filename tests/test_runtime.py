"""runtime_summary: one-time builds vs per-split cost and the campaign total, as the paper reports its runtime."""

from __future__ import annotations

import pandas as pd
import pytest

from fmextract.errors import InputError
from fmextract.runtime import runtime_summary, split_seconds


def test_paper_numbers_give_the_paper_ratio():
    """The paper's S23 figures (cache 99.5 s + 8.8 s/split vs 5,163.8 s + 159.2 s/split) -> 34.5x over 12 splits."""
    runtime = pd.DataFrame([(m, f"s{i}", s, s / 2) for m, s in (("extracted", 8.8), ("mlp_probe", 159.2), ("pca", 3.0))
                            for i in range(40)], columns=["method", "split", "seconds", "method_seconds"])
    one_time = {"extracted": {"adaptor": 90.0, "frozen_latent": 9.5}, "mlp_probe": {"embed_cells": 5163.8}}
    t = runtime_summary(runtime, one_time, reference="extracted", campaign_splits=12).set_index("method")
    assert t.loc["extracted", "campaign_seconds"] == pytest.approx(99.5 + 12 * 8.8)
    assert t.loc["mlp_probe", "campaign_seconds"] == pytest.approx(7074.2)
    assert t.loc["mlp_probe", "campaign_ratio"] == pytest.approx(34.5, abs=0.05)
    assert t.loc["mlp_probe", "per_split_ratio"] == pytest.approx(159.2 / 8.8)
    assert t.loc["pca", "one_time_seconds"] == 0 and t.loc["pca", "one_time_steps"] == "none"
    assert t.loc["extracted", "one_time_steps"] == "adaptor 90.0; frozen_latent 9.5"
    assert (t["n_splits"] == 40).all() and t.loc["mlp_probe", "per_split_method_seconds"] == pytest.approx(79.6)


def test_missing_reference_and_bad_input():
    runtime = pd.DataFrame({"method": ["pca"], "split": ["s0"], "seconds": [1.0], "method_seconds": [0.5]})
    t = runtime_summary(runtime, {}, reference="extracted", campaign_splits=12)
    assert t["campaign_ratio"].isna().all()
    with pytest.raises(InputError, match="lacks columns"):
        runtime_summary(runtime.drop(columns="seconds"), {}, reference="pca", campaign_splits=12)
    with pytest.raises(InputError, match="campaign_splits"):
        runtime_summary(runtime, {}, reference="pca", campaign_splits=0)


def test_the_training_mode_is_reported_per_method():
    runtime = pd.DataFrame({"method": ["celltypist", "celltypist", "pca"], "split": ["s0", "s1", "s0"],
                            "seconds": [60.0, 62.0, 1.0], "method_seconds": [55.0, 57.0, 0.5],
                            "mode": ["sgd", "sgd", None]})
    t = runtime_summary(runtime, {}, reference="pca", campaign_splits=12).set_index("method")
    assert t.loc["celltypist", "mode"] == "sgd" and t.loc["pca", "mode"] == ""


def test_split_seconds_share_an_all_in_one_jobs_start_up():
    """A one-split job keeps its whole wall; the splits of an all-in-one job add an equal share of the job's time
    outside them (start-up, imports) to their own, and sum to the job's wall."""
    jobs = ["a/split000.tsv", "a/split001.tsv", "b/all_splits.tsv", "b/all_splits.tsv", "b/all_splits.tsv"]
    wall = {"a/split000.tsv": 5.0, "a/split001.tsv": 7.0, "b/all_splits.tsv": 12.0}
    out = split_seconds([1.0, 2.0, 1.0, 2.0, 3.0], jobs, wall)
    assert out == pytest.approx([5.0, 7.0, 3.0, 4.0, 5.0])
    assert sum(out[2:]) == pytest.approx(12.0)
    assert split_seconds([4.0], ["x"], {"x": 3.0}) == [4.0]  # clock skew never makes a share negative
