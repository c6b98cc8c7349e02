"""raw_mlp: a direct-learnability control (the paper's S22): a small MLP trained per split on raw panel expression.

log1p(CP10k) of the panel genes (1,200 at paper scale) -> `hidden` (default one layer of 64, ReLU) -> every endpoint
at once (`fmextract.probe`, the multi-task MLP of mlp_probe, here without a foundation model in front). If the
extracted head does not beat it, the attention adds nothing a small supervised network cannot learn from the genes.
"""

import numpy as np

from fmextract.probe import fit_mlp_probe


def classify(train, test, params):
    """Fit the MLP on the training donors' expression and labels; predict every endpoint for the test cells."""
    dense = lambda a: np.asarray(a.X.todense() if hasattr(a.X, "todense") else a.X, dtype=np.float32)
    probe = fit_mlp_probe(dense(train), train.obs, subtypes=params["subtypes"], seed=params["seed"],
                          hidden=params.get("hidden", (64,)), epochs=params.get("epochs", 30),
                          lr=params.get("lr", 1e-3), batch_size=params.get("batch_size", 256))
    return {**probe.predict(dense(test), index=test.obs_names), "n_parameters": {"mlp": probe.n_parameters()}}
