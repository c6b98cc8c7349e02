"""The compaction chain's statistics: losses of the paper's endpoints along the paper's chain, against the previous rung
and pooled drift, non-inferiority; BH families over the paper's endpoints only."""

import numpy as np
import pandas as pd
import pytest

from fmextract.compaction import chain_table, paper_chain
from fmextract.errors import InputError

ENDPOINTS = ["a", "b"]


def per_split(shift: dict[str, float], n=12, seed=0):
    """Values of each variant per split and endpoint: pooled + a constant shift + small noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 0.8, size=(n, len(ENDPOINTS)))
    rows = []
    for variant, d in shift.items():
        noise = 0.002 * rng.standard_normal(size=base.shape)
        for i in range(n):
            for j, e in enumerate(ENDPOINTS):
                rows.append({"split": f"s{i}", "variant": variant, "endpoint": e, "value": base[i, j] + d + noise[i, j]})
    return pd.DataFrame(rows)


def test_losses_against_previous_and_pooled_and_noninferiority():
    chain = ["pooled", "head", "rank", "sparse"]
    data = per_split({"pooled": 0.0, "head": 0.0, "rank": -0.005, "sparse": -0.1})
    t = chain_table(data, chain, margin=0.02, loss_endpoints=ENDPOINTS)
    per = t.drop_duplicates("variant").set_index("variant")
    assert per.loc["head", "losses_vs_pooled"] == 0 and per.loc["head", "noninferior_endpoints"] == 2
    # rank is slightly but consistently worse: a loss in the paper's measure, yet non-inferior at margin 0.02
    assert per.loc["rank", "losses_vs_pooled"] == 2 and per.loc["rank", "noninferior_endpoints"] == 2
    assert per.loc["sparse", "losses_vs_previous"] == 2 and per.loc["sparse", "noninferior_endpoints"] == 0
    assert per.loc["sparse", "previous"] == "rank" and per.loc["sparse", "n_loss_endpoints"] == 2
    assert np.isnan(per.loc["pooled", "losses_vs_pooled"]) and per["rung"].tolist() == [0, 1, 2, 3]
    sparse_a = t[(t["variant"] == "sparse") & (t["endpoint"] == "a")].iloc[0]
    assert sparse_a["median_diff_vs_pooled"] == pytest.approx(0.1, abs=0.01)


def test_noninferiority_is_one_sided():
    """A rung better than pooled drift is non-inferior; the two-sided test would call it a difference, not a loss."""
    t = chain_table(per_split({"pooled": 0.0, "better": 0.05}), ["pooled", "better"], margin=0.01, loss_endpoints=ENDPOINTS)
    row = t[t["variant"] == "better"].iloc[0]
    assert row["noninferior"] and not row["loss_vs_pooled"] and row["q_vs_pooled"] < 0.05


def test_only_loss_endpoints_are_counted_and_form_the_bh_family():
    t = chain_table(per_split({"pooled": 0.0, "worse": -0.1}), ["pooled", "worse"], margin=0.02, loss_endpoints=["a"])
    assert t.loc[t["variant"] == "worse", "losses_vs_pooled"].iloc[0] == 1
    off = t[(t["variant"] == "worse") & (t["endpoint"] == "b")].iloc[0]
    assert np.isfinite(off["p_vs_pooled"]) and np.isnan(off["q_vs_pooled"])  # outside the family: p kept, no q


def test_paper_chain_compares_each_rung_with_the_papers_previous_rung():
    """Chain pooled -> top1 -> rank64 -> rank32 -> rank16 -> sparse: the paper's sparse rung follows rank 32 (rank 16 is
    ours, beside it), so sparse's paper loss is counted against rank 32 while our chain compares it with rank 16."""
    chain = ["pooled_drift", "top1", "top1_rank64", "top1_rank32", "top1_rank16", "top1_sparse"]
    assert paper_chain(chain, "top1") == ["pooled_drift", "top1", "top1_rank64", "top1_rank32", "top1_sparse"]
    data = per_split({"pooled_drift": 0.0, "top1": 0.0, "top1_rank64": 0.0, "top1_rank32": 0.0, "top1_rank16": -0.1,
                      "top1_sparse": -0.1})
    t = chain_table(data, chain, margin=0.02, loss_endpoints=ENDPOINTS, paper=paper_chain(chain, "top1"))
    per = t.drop_duplicates("variant").set_index("variant")
    assert per.loc["top1_sparse", "paper_previous"] == "top1_rank32" and per.loc["top1_sparse", "previous"] == "top1_rank16"
    assert per.loc["top1_sparse", "losses_vs_paper_previous"] == 2 and per.loc["top1_sparse", "losses_vs_previous"] == 0
    assert pd.isna(per.loc["top1_rank16", "paper_previous"]) and np.isnan(per.loc["top1_rank16", "losses_vs_paper_previous"])
    assert per.loc["top1", "losses_vs_paper_previous"] == 0 and per.loc["top1", "paper_previous"] == "pooled_drift"
    with pytest.raises(ValueError, match="ordered part"):
        chain_table(data, chain, margin=0.02, loss_endpoints=ENDPOINTS, paper=["top1", "pooled_drift"])


def test_bad_inputs():
    data = per_split({"pooled": 0.0})
    with pytest.raises(InputError, match="no per-split values"):
        chain_table(data, ["pooled", "head"], margin=0.02, loss_endpoints=ENDPOINTS)
    with pytest.raises(InputError, match="margin"):
        chain_table(data, ["pooled"], margin=0.0, loss_endpoints=ENDPOINTS)
