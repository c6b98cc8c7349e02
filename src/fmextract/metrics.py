"""Benchmark endpoints: computed per test donor, then averaged over the split's test donors.

Predictions (``pred``) are a dict with any of:

- ``branch_proba`` / ``stage_proba``: DataFrame, test cells x classes (the predicted class is the arg-max column);
- ``<subtype>_proba``: positive-class probability per test cell (Series or array), one per subtype endpoint;
- ``pseudotime``: one value per test cell.

Rows are the test cells in ``obs_test`` order (pandas objects indexed by ``obs_test.index`` in another order are
aligned to it). Only the endpoints that ``pred`` supports are returned. Definitions:

- balanced accuracy: ``sklearn.metrics.balanced_accuracy_score`` (mean recall over the classes in that donor's
  truth; a truth class the readout never predicts counts as recall 0);
- macro-F1: ``sklearn.metrics.f1_score(average="macro")`` over the labels in that donor's truth ∪ predictions,
  ``zero_division=0`` (so predicting a class absent from the donor's truth costs F1);
- subtype endpoints use only cells whose true stage is in the endpoint's positive or negative list; a donor lacking
  either class is skipped for that endpoint; AUROC scores the positive-class probability
  (``sklearn.metrics.roc_auc_score``), balanced accuracy thresholds it at 0.5 (every subtype endpoint reports both);
- pseudotime: ``scipy.stats.spearmanr`` with the true ``depth`` per donor (signed), and the mean over donors of
  |ρ| (orientation-independent: each donor's pseudotime may point either way); a donor with fewer than 3 cells or
  a constant pseudotime/depth is skipped.

A donor skipped for an endpoint is left out of that endpoint's mean; if every donor is skipped the value is NaN.
Config `endpoints.paper` names the paper's eight (`check_paper_endpoints`): the losses out of 8 and the BH families
count exactly those.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from fmextract.errors import InputError
from fmextract.readouts import check_subtypes, subtype_target

#: endpoints of the branch and stage readouts, and of the pseudotime (signed and orientation-independent |rho|).
CLASS_ENDPOINTS = ("branch_balanced_accuracy", "branch_macro_f1", "stage_balanced_accuracy", "stage_macro_f1")
PSEUDOTIME_ENDPOINTS = ("pseudotime_depth_spearman", "pseudotime_depth_abs_spearman")
#: columns of the long metrics table.
METRICS_COLUMNS = ["split", "method", "endpoint", "value"]
MIN_CELLS_SPEARMAN = 3


def endpoint_names(subtypes: Mapping[str, Mapping]) -> list[str]:
    """Every endpoint a full prediction reports: branch and stage, AUROC and balanced accuracy per subtype, pseudotime."""
    return [*CLASS_ENDPOINTS, *(f"{name}_{m}" for name in subtypes for m in ("auroc", "balanced_accuracy")),
            *PSEUDOTIME_ENDPOINTS]


def check_paper_endpoints(paper: Sequence[str], subtypes: Mapping[str, Mapping]) -> list[str]:
    """`endpoints.paper` as a list, each one an endpoint of this run (one line naming the unknown one otherwise)."""
    known = endpoint_names(subtypes)
    unknown = [e for e in paper if e not in known]
    if unknown:
        raise InputError(f"config endpoints.paper: '{unknown[0]}' is not an endpoint of this run; use names of "
                         f"{', '.join(known)}")
    return list(paper)


def _aligned(value, obs_test: pd.DataFrame, key: str):
    """A prediction as a numpy array (2-D for DataFrames) in obs_test row order."""
    n = len(obs_test)
    if isinstance(value, (pd.DataFrame, pd.Series)):
        idx = value.index
        if len(idx) == n and not (idx.equals(obs_test.index) or idx.equals(pd.RangeIndex(n))):
            if idx.is_unique and set(idx) == set(obs_test.index):
                value = value.loc[obs_test.index]
            else:
                raise InputError(f"endpoint_metrics: pred['{key}'] is indexed by other cells than obs_test; "
                                 "index it by the test cells (or leave a default RangeIndex in test-cell order)")
    arr = np.asarray(value, dtype=float)
    if arr.shape[0] != n or (isinstance(value, pd.DataFrame) and arr.ndim != 2) or \
            (not isinstance(value, pd.DataFrame) and arr.ndim != 1):
        raise InputError(f"endpoint_metrics: pred['{key}'] has shape {arr.shape}; expected {n} test cells "
                         f"({'cells x classes' if isinstance(value, pd.DataFrame) else 'one value per cell'})")
    return arr


def _classification(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, macro-F1 over truth ∪ predicted labels) of one donor."""
    labels = sorted(set(truth) | set(predicted))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        bacc = balanced_accuracy_score(truth, predicted)
    f1 = f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    return float(bacc), float(f1)


def per_donor_metrics(
    obs_test: pd.DataFrame,
    pred: Mapping,
    *,
    subtypes: Mapping[str, Mapping],
    donor_key: str = "donor",
) -> pd.DataFrame:
    """Endpoints per test donor: DataFrame donors x supported endpoints (NaN where a donor is skipped)."""
    if donor_key not in obs_test.columns:
        raise InputError(f"endpoint_metrics: obs_test has no column '{donor_key}'; pass the test cells' truth obs")
    defs = check_subtypes(subtypes)
    known = {"branch_proba", "stage_proba", "pseudotime"} | {f"{name}_proba" for name in defs}
    unknown = sorted(set(pred) - known)
    if unknown:
        raise InputError(f"endpoint_metrics: pred has unknown key(s) {unknown}; use {sorted(known)}")

    def need(column: str, key: str) -> pd.Series:
        if column not in obs_test.columns:
            raise InputError(f"endpoint_metrics: pred['{key}'] needs obs_test['{column}'] (the test cells' truth)")
        return obs_test[column]

    donors = obs_test[donor_key].astype(str).to_numpy()
    columns: dict[str, np.ndarray] = {}
    order = pd.unique(donors)
    groups = [np.flatnonzero(donors == d) for d in order]

    for key in ("branch", "stage"):
        if f"{key}_proba" not in pred:
            continue
        proba_df = pred[f"{key}_proba"]
        if not isinstance(proba_df, pd.DataFrame):
            raise InputError(f"endpoint_metrics: pred['{key}_proba'] must be a DataFrame (test cells x classes)")
        proba = _aligned(proba_df, obs_test, f"{key}_proba")
        predicted = np.asarray([str(c) for c in proba_df.columns], dtype=object)[np.argmax(proba, axis=1)]
        truth = need(key, f"{key}_proba")
        has = truth.notna().to_numpy()
        truth = truth.astype(str).to_numpy()
        bacc, f1 = np.full(len(order), np.nan), np.full(len(order), np.nan)
        for i, g in enumerate(groups):
            g = g[has[g]]
            if g.size:
                bacc[i], f1[i] = _classification(truth[g], predicted[g])
        columns[f"{key}_balanced_accuracy"], columns[f"{key}_macro_f1"] = bacc, f1

    for name, (pos, neg) in defs.items():
        if f"{name}_proba" not in pred:
            continue
        score = _aligned(pred[f"{name}_proba"], obs_test, f"{name}_proba")
        mask, y_all = subtype_target(need("stage", f"{name}_proba"), pos, neg)
        y = np.full(len(obs_test), -1)
        y[mask] = y_all
        auc, bacc = np.full(len(order), np.nan), np.full(len(order), np.nan)
        for i, g in enumerate(groups):
            g = g[y[g] >= 0]
            yt, s = y[g], score[g]
            if len(np.unique(yt)) < 2 or not np.isfinite(s).all():
                continue  # donor lacks a class, or the readout was skipped (NaN scores)
            auc[i] = roc_auc_score(yt, s)
            bacc[i] = balanced_accuracy_score(yt, (s >= 0.5).astype(int))
        columns[f"{name}_auroc"], columns[f"{name}_balanced_accuracy"] = auc, bacc

    if "pseudotime" in pred:
        t = _aligned(pred["pseudotime"], obs_test, "pseudotime")
        depth = pd.to_numeric(need("depth", "pseudotime"), errors="coerce").to_numpy(dtype=float)
        rho = np.full(len(order), np.nan)
        for i, g in enumerate(groups):
            g = g[np.isfinite(depth[g]) & np.isfinite(t[g])]
            if g.size < MIN_CELLS_SPEARMAN or np.ptp(depth[g]) == 0 or np.ptp(t[g]) == 0:
                continue
            rho[i] = spearmanr(t[g], depth[g]).statistic
        columns["pseudotime_depth_spearman"], columns["pseudotime_depth_abs_spearman"] = rho, np.abs(rho)

    return pd.DataFrame(columns, index=pd.Index(order, name=donor_key))


def endpoint_metrics(
    obs_test: pd.DataFrame,
    pred: Mapping,
    *,
    subtypes: Mapping[str, Mapping],
    donor_key: str = "donor",
) -> dict[str, float]:
    """Each supported endpoint averaged over test donors (donors skipped for an endpoint left out; all skipped: NaN)."""
    table = per_donor_metrics(obs_test, pred, subtypes=subtypes, donor_key=donor_key)
    out = {}
    for endpoint in table.columns:
        v = table[endpoint].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        out[endpoint] = float(v.mean()) if v.size else float("nan")
    return out


def metrics_table(rows: Iterable[Mapping], *, dropna: bool = True) -> pd.DataFrame:
    """Long table (split, method, endpoint, value) from row dicts; NaN values dropped by default (missing pairs)."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return pd.DataFrame(columns=METRICS_COLUMNS)
    missing = [c for c in METRICS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"metrics_table: rows lack key(s) {missing}; each row needs {METRICS_COLUMNS}")
    table["value"] = pd.to_numeric(table["value"], errors="coerce").astype(float)
    if dropna:
        table = table[np.isfinite(table["value"].to_numpy())]
    extra = [c for c in table.columns if c not in METRICS_COLUMNS]
    return table[METRICS_COLUMNS + extra].reset_index(drop=True)
