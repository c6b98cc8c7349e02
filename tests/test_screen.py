"""Head screen: leave-one-reference-donor-out, residualised Spearman; a head that carries the ruler wins, a head that
only lets the adaptor memorise its training anchors does not."""

import numpy as np
import pandas as pd
import pytest
import torch

from fmextract.errors import InputError
from fmextract.screen import SCREEN_COLUMNS, definitions_table, score_features, screen_heads, top_heads

torch.set_num_threads(1)  # tiny adaptors: threads only add contention
STAGES = list("abcde")
RULER = pd.DataFrame([[abs(i - j) for j in range(5)] for i in range(5)], index=STAGES, columns=STAGES)
KW = dict(d_latent=3, alpha=0.1, beta=1 / np.pi, epochs=30, lr=0.02, batch_size=64, seed=0)


def toy(n_donors=4, per_stage=3, G=12, seed=0):
    """Anchors of a path a-e over donors x tissues; genes 0 and 1 carry the position, the rest noise."""
    rng = np.random.default_rng(seed)
    rows = [{"donor": f"d{d}", "tissue": f"t{k % 2}", "stage": s} for d in range(n_donors) for s in STAGES
            for k in range(per_stage)]
    anchors = pd.DataFrame(rows)
    t = anchors["stage"].map(STAGES.index).to_numpy(dtype=float)
    profiles = rng.normal(scale=0.05, size=(len(anchors), G))
    profiles[:, 0] += t
    profiles[:, 1] += 4 - t
    return profiles, anchors


def test_informative_head_wins_with_the_new_columns():
    profiles, anchors = toy()
    rng = np.random.default_rng(0)
    G = profiles.shape[1]
    ops = rng.random((3, 2, G, G))
    ops[:, :, :2, :] = 0  # heads ignore the informative genes 0 and 1 ...
    ops[1, 1, :2, :2] = np.eye(2)  # ... except this one, which passes them through
    table = screen_heads(ops, profiles, anchors, RULER, adaptor_kw=KW)
    assert tuple(table.columns) == SCREEN_COLUMNS and len(table) == 6
    assert table.iloc[0]["name"] == "L1H1" and table.iloc[0]["rank"] == 1
    assert table.iloc[0]["residualised_spearman"] > 0.6 and table["trustworthiness"].between(0, 1).all()
    heads, weights = top_heads(table, 2)
    assert heads[0] == (1, 1) and np.isclose(sum(weights), 1)


def test_scores_are_out_of_sample_so_memorising_noise_scores_nothing():
    """Pure-noise features wide enough for the adaptor to fit the ruler in sample (rho ~0.8) score ~0 on held-out
    donors: the screen no longer ranks heads by how well the adaptor memorises its own anchors."""
    from fmextract.adaptor import fit_adaptor
    from fmextract.geometry import ruler_spearman

    _, anchors = toy(n_donors=5, per_stage=3)
    kw = {**KW, "epochs": 200}
    held_out, in_sample = [], []
    for seed in range(5):
        noise = np.random.default_rng(seed).normal(size=(len(anchors), 300))
        held_out.append(score_features(noise, anchors, RULER, adaptor_kw=kw)["residualised_spearman"])
        in_sample.append(ruler_spearman(fit_adaptor(noise, anchors["stage"], RULER, **kw).transform(noise),
                                        anchors["stage"], RULER))
    assert min(in_sample) > 0.6 and abs(np.mean(held_out)) < 0.15


def test_one_donor_cannot_be_screened():
    profiles, anchors = toy(n_donors=1)
    with pytest.raises(InputError, match="at least 2"):
        score_features(profiles, anchors, RULER, adaptor_kw=KW)


def test_definitions_table_reports_pooled_best_and_planted_rank():
    heads = pd.DataFrame({"layer": [0, 1], "head": [1, 0], "name": ["L0H1", "L1H0"], "rank": [2, 1],
                          "ruler_spearman": [0.1, 0.5], "residualised_spearman": [0.1, 0.4], "trustworthiness": [0.9, 0.95]})
    pooled = pd.DataFrame([{"ruler_spearman": 0.3, "residualised_spearman": 0.2, "trustworthiness": 0.99}])
    t = definitions_table({("trained", "qk_weights"): heads, ("planted", "qk_weights"): heads},
                          {("trained", "qk_weights"): pooled, ("planted", "qk_weights"): pooled},
                          configured="attention_prob", planted=(0, 1))
    assert list(t["best_head"]) == ["L1H0", "L1H0"] and not t["configured"].any()
    assert t["pooled_drift_residualised_spearman"].tolist() == [0.2, 0.2]
    assert pd.isna(t.loc[0, "planted_head_rank"]) and t.loc[1, "planted_head_rank"] == 2
