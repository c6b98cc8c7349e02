"""The mlp_probe readout: learns planted structure, is seeded, counts its parameters, follows the readout format."""

import numpy as np
import pandas as pd
import pytest

from fmextract.errors import InputError
from fmextract.probe import fit_mlp_probe

SUBTYPES = {"ab": {"positive": ["a"], "negative": ["b"]}}


def _data(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    stage = rng.choice(["a", "b", "c"], size=n)
    centres = {"a": 0.0, "b": 3.0, "c": 6.0}
    Z = rng.normal(size=(n, d)).astype(np.float32)
    Z[:, 0] += np.array([centres[s] for s in stage])
    obs = pd.DataFrame({"stage": stage, "branch": np.where(stage == "c", "y", "x"),
                        "depth": [centres[s] / 3 for s in stage]}, index=[f"c{i}" for i in range(n)])
    return Z, obs


def test_probe_learns_planted_classes_and_depth():
    Z, obs = _data(d=3)
    probe = fit_mlp_probe(Z[:200], obs.iloc[:200], subtypes=SUBTYPES, seed=0, hidden=(16, 8), epochs=60, lr=1e-2)
    pred = probe.predict(Z[200:], index=obs.index[200:])
    truth = obs.iloc[200:]
    assert (pred["stage_proba"].idxmax(axis=1).to_numpy() == truth["stage"].to_numpy()).mean() > 0.8
    assert np.allclose(pred["branch_proba"].sum(axis=1), 1)
    assert np.corrcoef(pred["pseudotime"], truth["depth"])[0, 1] > 0.8
    ab = truth["stage"].isin(["a", "b"]).to_numpy()
    assert pred["ab_proba"].shape == (100,)
    assert ((pred["ab_proba"][ab] > 0.5) == (truth["stage"][ab] == "a").to_numpy()).mean() > 0.85


def test_probe_is_seeded_and_counts_parameters():
    Z, obs = _data()
    fit = lambda seed: fit_mlp_probe(Z, obs, subtypes=SUBTYPES, seed=seed, hidden=(16, 8), epochs=3)
    a, b, c = fit(1), fit(1), fit(2)
    pa, pb, pc = (p.predict(Z, index=obs.index)["pseudotime"] for p in (a, b, c))
    assert np.array_equal(pa, pb) and not np.allclose(pa, pc)
    n_out = 2 + 3 + 1 + 1  # branches + stages + subtypes + depth
    assert a.n_parameters() == 12 * 16 + 16 + 16 * 8 + 8 + 8 * n_out + n_out


def test_paper_size_probe_has_about_172k_parameters():
    Z = np.zeros((4, 512), np.float32)
    obs = pd.DataFrame({"stage": [f"s{i}" for i in range(4)], "branch": ["x", "x", "y", "y"], "depth": [0, 1, 2, 3]})
    probe = fit_mlp_probe(Z, obs, subtypes={}, seed=0, epochs=1)
    # 512 -> 256 -> 128 -> outputs: 164,224 + 129 per output; ~60 outputs (37 stages, 7 branches, subtypes) ~ 172k
    assert probe.n_parameters() == 131_328 + 32_896 + 129 * (2 + 4 + 1)


def test_bad_embeddings_are_input_errors():
    Z, obs = _data(n=20)
    with pytest.raises(InputError, match="Z_train"):
        fit_mlp_probe(Z[:10], obs, subtypes={}, seed=0)
    with pytest.raises(InputError, match="hidden"):
        fit_mlp_probe(Z, obs, subtypes={}, seed=0, hidden=())


def test_coarse_cells_train_the_branch_head_only():
    """Cells with a coarse label (branch, no stage, no depth) never become a 'nan' stage class."""
    Z, obs = _data(d=3)
    obs = obs.astype({"stage": object})
    obs.loc[obs.index[:40], ["stage", "depth"]] = np.nan
    probe = fit_mlp_probe(Z, obs, subtypes=SUBTYPES, seed=0, hidden=(16, 8), epochs=5)
    assert probe.stages == ["a", "b", "c"] and set(probe.branches) == {"x", "y"}
    pred = probe.predict(Z[:5], index=obs.index[:5])
    assert np.isfinite(pred["pseudotime"]).all() and list(pred["stage_proba"].columns) == ["a", "b", "c"]


def test_one_hidden_layer_is_the_raw_mlp_shape():
    """raw_mlp (the paper's S22): genes -> 64 -> outputs, one hidden layer."""
    Z, obs = _data()
    probe = fit_mlp_probe(Z, obs, subtypes=SUBTYPES, seed=0, hidden=(64,), epochs=2)
    n_out = 2 + 3 + 1 + 1
    assert probe.n_parameters() == 12 * 64 + 64 + 64 * n_out + n_out
    assert probe.predict(Z[:5], index=obs.index[:5])["stage_proba"].shape == (5, 3)
