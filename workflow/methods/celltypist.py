"""celltypist: a CellTypist logistic-regression model trained per split on the training donors (never downloaded).

`celltypist.train` gets the training cells' log1p(CP10k) panel expression (genes as var_names) with `stage` as
labels (cells with a coarse label, which have a branch but no stage, are left out). `check_expression=False` because
CellTypist's check wants CP10k summed over ALL genes, and X here is restricted to the panel. `feature_selection=False`
(the panel is already the HVG selection, and selection refits the model a second time).
Mode (params `use_SGD`, default false as in CellTypist): plain logistic regression, or with `use_SGD: true`
CellTypist's documented fast mode, SGD logistic regression, which "reduces the training burden dramatically", and
with `mini_batch: true` as well its mini-batch SGD (10 epochs of 100 batches of 1,000 cells; the paper config's
choice: plain logistic regression runs SAG above 50k cells, hours per 100k-cell split, full-batch SGD ~19 minutes,
mini-batch ~2 minutes; docs/cost.md). Every other training option is CellTypist's own default unless params set it
(`max_iter`: CellTypist picks 1000 below 50k cells, 500 below 500k, 200 above; `alpha`, `batch_size`, `epochs`);
`n_jobs` = the job's threads (config resources.threads). Mini-batch SGD draws its batches from NumPy's global
generator, which is seeded from the config first.
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

#: celltypist.train options a config may set (methods.celltypist.params); absent ones keep CellTypist's defaults
TRAIN_OPTIONS = ("max_iter", "alpha", "C", "solver", "mini_batch", "batch_number", "batch_size", "epochs",
                 "balance_cell_type")

from fmextract.baselines import branch_proba_from_stages, stage_branch_map, subtype_proba_from_stages


def mode(params) -> str:
    """The training mode (runtime.tsv, runtime_summary.tsv, parameters.tsv): `sgd`, `sgd_minibatch` or `lr`."""
    if not params.get("use_SGD", False):
        return "lr"
    return "sgd_minibatch" if params.get("mini_batch", False) else "sgd"


def classify(train, test, params):
    """Train CellTypist on train stages, annotate test cells, return stage/branch (and subtype) probabilities."""
    logging.getLogger("celltypist").setLevel(logging.WARNING)
    dense = lambda a: ad.AnnData(X=np.asarray(a.X.toarray() if sp.issparse(a.X) else a.X, dtype=np.float32),
                                 obs=pd.DataFrame(index=a.obs_names), var=pd.DataFrame(index=a.var_names))
    staged = train[train.obs["stage"].notna().to_numpy()]  # CellTypist learns stage labels: coarse cells sit out
    fit = dense(staged)
    np.random.seed(params["seed"])  # mini-batch SGD draws its batches from NumPy's global generator
    model = celltypist.train(
        fit, labels=staged.obs["stage"].astype(str).to_numpy(), check_expression=False,
        use_SGD=params.get("use_SGD", False), feature_selection=params.get("feature_selection", False),
        n_jobs=params["threads"], random_state=params["seed"], **{k: params[k] for k in TRAIN_OPTIONS if k in params},
    )
    result = celltypist.annotate(dense(test), model=model, majority_voting=False)
    proba = result.probability_matrix.loc[test.obs_names].astype(float)
    proba = proba.div(proba.sum(axis=1), axis=0)
    clf = model.classifier
    out = {"stage_proba": proba, "branch_proba": branch_proba_from_stages(proba, stage_branch_map(train.obs)),
           "n_parameters": {f"logistic_{mode(params)}": int(clf.coef_.size + clf.intercept_.size)}}
    out.update(subtype_proba_from_stages(proba, params.get("subtypes") or {}))
    return out
