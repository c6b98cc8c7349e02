"""control_shuffled: the 'no structure' control: a seeded standard-normal embedding that ignores the data.

The embedding contract cannot permute training labels (the shared readouts see the true ones), so the control
removes the other side: every cell, train and test, gets i.i.d. N(0, 1) coordinates of the usual width
(params n_comps, default 10). The readouts then learn nothing transferable and every endpoint sits at chance.
"""

import numpy as np


def embed(train, test, params):
    """Random Gaussian coordinates for train and test cells (seeded by params seed)."""
    rng = np.random.default_rng(params["seed"])
    width = params.get("n_comps", 10)
    z_train = rng.standard_normal((train.n_obs, width)).astype(np.float32)
    return z_train, rng.standard_normal((test.n_obs, width)).astype(np.float32)
