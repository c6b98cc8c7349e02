"""Head screen: a head that carries the ruler ranks above heads that carry noise."""

import numpy as np
import pandas as pd

from fmextract.screen import screen_heads, top_heads

STAGES = list("abcde")
RULER = pd.DataFrame([[abs(i - j) for j in range(5)] for i in range(5)], index=STAGES, columns=STAGES)


def test_informative_head_wins():
    rng = np.random.default_rng(0)
    G, n = 12, 60
    stages = np.repeat(STAGES, n // 5)
    t = np.array([STAGES.index(s) for s in stages], dtype=float)
    profiles = rng.normal(scale=0.05, size=(n, G))
    profiles[:, 0] += t
    profiles[:, 1] += 4 - t
    ops = rng.random((3, 2, G, G))
    ops[:, :, :2, :] = 0  # heads ignore the informative genes 0 and 1 ...
    ops[1, 1, :2, :2] = np.eye(2)  # ... except this one, which passes them through
    anchors = pd.DataFrame({"stage": stages, "donor": np.tile(["x", "y"], n // 2)})
    kw = dict(d_latent=3, alpha=0.1, beta=1 / np.pi, epochs=30, lr=0.02, batch_size=64, seed=0)
    table = screen_heads(ops, profiles, anchors, RULER, adaptor_kw=kw)
    assert len(table) == 6 and table.iloc[0]["name"] == "L1H1"
    heads, weights = top_heads(table, 2)
    assert heads[0] == (1, 1) and np.isclose(sum(weights), 1)
