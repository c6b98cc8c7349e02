"""celltypist: a CellTypist logistic-regression model trained per split on the training donors (never downloaded).

`celltypist.train` gets the training cells' log1p(CP10k) panel expression (genes as var_names) with `stage` as
labels (cells with a coarse label, which have a branch but no stage, are left out). `check_expression=False` because CellTypist's check wants CP10k summed over ALL genes, and X here is
restricted to the panel. Speed: `feature_selection=False` (the panel is already the HVG selection, and selection
refits the model a second time); plain logistic regression (`use_SGD=False`, CellTypist's default)
with `max_iter` 200 (params; CellTypist's own default for > 500k cells) and `n_jobs` = params threads.
Prediction: `celltypist.annotate(..., majority_voting=False)`; CellTypist's probabilities are per-class sigmoids
(one-vs-rest), so rows are renormalised to sum to 1. Branch probabilities are the stage probabilities summed
per branch with the training cells' stage->branch map; subtype probabilities likewise when params has subtypes.
"""

import logging

import anndata as ad
import celltypist
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmextract.baselines import branch_proba_from_stages, stage_branch_map, subtype_proba_from_stages


def classify(train, test, params):
    """Train CellTypist on train stages, annotate test cells, return stage/branch (and subtype) probabilities."""
    logging.getLogger("celltypist").setLevel(logging.WARNING)
    dense = lambda a: ad.AnnData(X=np.asarray(a.X.toarray() if sp.issparse(a.X) else a.X, dtype=np.float32),
                                 obs=pd.DataFrame(index=a.obs_names), var=pd.DataFrame(index=a.var_names))
    staged = train[train.obs["stage"].notna().to_numpy()]  # CellTypist learns stage labels: coarse cells sit out
    fit = dense(staged)
    model = celltypist.train(
        fit, labels=staged.obs["stage"].astype(str).to_numpy(), check_expression=False,
        use_SGD=params.get("use_SGD", False), feature_selection=params.get("feature_selection", False),
        max_iter=params.get("max_iter", 200), n_jobs=params["threads"], random_state=params["seed"],
    )
    result = celltypist.annotate(dense(test), model=model, majority_voting=False)
    proba = result.probability_matrix.loc[test.obs_names].astype(float)
    proba = proba.div(proba.sum(axis=1), axis=0)
    clf = model.classifier
    out = {"stage_proba": proba, "branch_proba": branch_proba_from_stages(proba, stage_branch_map(train.obs)),
           "n_parameters": {"logistic": int(clf.coef_.size + clf.intercept_.size)}}
    out.update(subtype_proba_from_stages(proba, params.get("subtypes") or {}))
    return out
