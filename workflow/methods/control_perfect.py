"""control_perfect: the 'perfect' control, read from the test cells' truth (for scale only, never a real method).

Its config entry must set `sees_truth: true`, so the runner passes the test cells' full obs as params["truth"].
Returns one-hot stage and branch probabilities, depth as pseudotime, and, when params["subtypes"] is given,
the subtype positive class as 0/1.
"""

import numpy as np
import pandas as pd

from fmextract.errors import InputError


def classify(train, test, params):
    """One-hot truth: every endpoint scores its best possible value."""
    truth = params.get("truth")
    if truth is None:
        raise InputError("method control_perfect: params has no 'truth'; set `sees_truth: true` in its config entry")
    if not test.obs_names.isin(truth.index).all():
        raise InputError("method control_perfect: params['truth'] lacks some test cells; pass the test cells' full obs")
    truth = truth.loc[test.obs_names]
    # one-hot of the truth; a cell without it (a coarse label has no stage) gets a zero row and is not scored
    onehot = lambda col: pd.get_dummies(truth[col].astype(str).where(truth[col].notna())).astype(float)
    depth = truth["depth"].to_numpy(dtype=float)
    out = {"stage_proba": onehot("stage"), "branch_proba": onehot("branch"),
           "pseudotime": np.where(np.isfinite(depth), depth, 0.0)}  # cells without depth are not scored
    for name, spec in (params.get("subtypes") or {}).items():
        out[f"{name}_proba"] = np.isin(truth["stage"].astype(str), list(spec["positive"])).astype(float)
    return out
