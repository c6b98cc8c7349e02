"""Attribution: comparators through the same gate functions as pooled drift, donor-clustered bootstrap CIs, verdicts."""

import numpy as np
import pandas as pd
import pytest

from fmextract import attribution, validation
from fmextract.adaptor import fit_adaptor
from fmextract.features import identity_map

STAGES = ["a", "b", "c", "d"]
RULER = pd.DataFrame([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]], index=STAGES, columns=STAGES, dtype=float)


def anchors(noise: float, seed: int = 0, n_genes: int = 8):
    """Anchors of 6 donors x 2 tissues x 4 stages on a line (stage order in genes 0-1) plus noise."""
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    for d in range(6):
        for t in ("t0", "t1"):
            for k, s in enumerate(STAGES):
                x = rng.normal(0.0, noise, n_genes) + 1.0
                x[0] += k
                x[1] += 3 - k
                rows.append(x)
                meta.append({"donor": f"D{d}", "tissue": t, "stage": s, "branch": "x" if k < 2 else "y", "depth": k})
    return np.asarray(rows, dtype=np.float32), pd.DataFrame(meta)


KW = dict(d_latent=2, alpha=0.1, beta=1 / np.pi, epochs=30, lr=0.05, batch_size=64, seed=0)


def test_comparator_runs_through_the_pooled_drift_functions():
    """A comparator whose features are raw expression goes through the very functions the pooled-drift panel does:
    given the same features and adaptor as the extracted set, every difference is exactly zero (no second code path
    could shift it), and the observed values are external_metrics' own."""
    P, meta = anchors(0.3)
    raw = identity_map([f"g{i}" for i in range(P.shape[1])])
    F = raw.transform(P)
    A = fit_adaptor(F, meta["stage"], RULER, **KW)
    observed = {name: validation.external_metrics(F, meta, RULER, adaptor=A, n_permutations=50, seed=0)
                for name in ("pooled_drift", "raw_expression")}
    frozen = validation.frozen_gate_values(F, meta, RULER, adaptor=A, seed=0)
    assert all(observed["raw_expression"][k] == v for k, v in frozen.items())
    reps = attribution.bootstrap_values({"pooled_drift": F, "raw_expression": F}, meta,
                                        lambda name, X, m: validation.frozen_gate_values(X, m, RULER, adaptor=A, seed=0),
                                        n_bootstrap=10, seed=0)
    t = attribution.attribution_rows(observed, reps, extracted="pooled_drift", comparators={"raw_expression": "raw"},
                                     gates={m: d for m, (_, d) in validation.GATES.items()}, panel="external",
                                     adaptor="anchor")
    assert set(t.columns) == set(attribution.COLUMNS) and len(t) >= 5
    assert (t["difference"] == 0).all() and set(t["verdict"]) == {attribution.UNRESOLVED}
    boot = t[t["gate"] != "blocked_permutation_p"]
    assert (boot["ci_low"] == 0).all() and (boot["ci_high"] == 0).all()
    assert t.loc[t["gate"] == "blocked_permutation_p", "ci_low"].isna().all()  # p is not bootstrapped


def test_a_better_comparator_is_ahead_and_a_worse_one_credits_attention():
    P, meta = anchors(0.2)
    noisy = P + np.random.default_rng(1).normal(0.0, 2.0, P.shape).astype(np.float32)  # structure drowned
    fits = {name: fit_adaptor(X, meta["stage"], RULER, **KW) for name, X in (("clean", P), ("noisy", noisy))}
    feats = {"clean": P, "noisy": noisy}
    score = lambda name, X, m: validation.frozen_gate_values(X, m, RULER, adaptor=fits[name], seed=0)
    observed = {name: score(name, X, meta) for name, X in feats.items()}
    reps = attribution.bootstrap_values(feats, meta, score, n_bootstrap=40, seed=0)
    gates = {"spearman_donor_holdout": ">="}
    credited = attribution.attribution_rows(observed, reps, extracted="clean", comparators={"noisy": "raw"},
                                            gates=gates, panel="external", adaptor="anchor")
    ahead = attribution.attribution_rows(observed, reps, extracted="noisy", comparators={"clean": "raw"},
                                         gates=gates, panel="external", adaptor="anchor")
    assert credited["verdict"].iloc[0] == attribution.CREDITED and credited["ci_low"].iloc[0] > 0
    assert ahead["verdict"].iloc[0] == attribution.AHEAD and ahead["ci_high"].iloc[0] < 0
    sentence = attribution.attention_sentence(pd.concat([credited.assign(comparator="raw_expression")]))
    assert "adds to raw expression" in sentence and "spearman_donor_holdout (anchor)" in sentence


def test_p_gate_is_oriented_lower_is_better():
    obs = {"x": {"blocked_permutation_p": 0.001}, "c": {"blocked_permutation_p": 0.2}}
    t = attribution.attribution_rows(obs, {}, extracted="x", comparators={"c": "c"},
                                     gates={"blocked_permutation_p": "<="}, panel="external", adaptor="cell")
    assert t["difference"].iloc[0] == pytest.approx(0.199) and t["verdict"].iloc[0] == attribution.UNRESOLVED


def test_donor_resample_draws_whole_donors_and_renames_copies():
    _, meta = anchors(0.1)
    rows, draw = attribution.donor_resample(meta, np.random.default_rng(3))
    assert len(rows) == len(meta) and draw["donor"].nunique() == 6  # 6 draws, each its own donor even if repeated
    for name, sub in draw.groupby("donor"):
        original = name.split("#")[0]
        assert (meta.iloc[rows[draw.index[draw["donor"] == name]]]["donor"] == original).all() and len(sub) == 8


def test_verdict_rule():
    assert attribution.verdict(0.01, 0.2) == attribution.CREDITED
    assert attribution.verdict(-0.2, -0.01) == attribution.AHEAD
    assert attribution.verdict(-0.1, 0.1) == attribution.UNRESOLVED
    assert attribution.verdict(np.nan, np.nan) == attribution.UNRESOLVED
