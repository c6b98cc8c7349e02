"""Stage 3: small task readouts (probes) on an embedding, fitted on a split's training cells only.

Every embedding method gets the same readouts: a StandardScaler fitted on the training cells, multinomial logistic
regression for branch and stage, one binary logistic regression per subtype endpoint (fitted on the training cells
whose stage is in that endpoint's positive or negative list) and a linear regression of depth, used as pseudotime.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from fmextract.errors import InputError

log = logging.getLogger(__name__)

#: obs columns the readouts are trained on.
LABEL_COLUMNS = ("branch", "stage", "depth")


def check_subtypes(subtypes: Mapping[str, Mapping], *, source: str = "endpoints.subtypes") -> dict[str, tuple[set, set]]:
    """Validate subtype endpoint definitions -> {name: (positive stages, negative stages)}."""
    out = {}
    for name, spec in subtypes.items():
        if not isinstance(spec, Mapping) or not {"positive", "negative"} <= set(spec):
            raise InputError(f"{source}.{name}: needs lists 'positive' and 'negative' of stage names")
        pos, neg = {str(s) for s in spec["positive"]}, {str(s) for s in spec["negative"]}
        if not pos or not neg:
            raise InputError(f"{source}.{name}: 'positive' and 'negative' must each list at least one stage")
        if pos & neg:
            raise InputError(f"{source}.{name}: stage(s) {sorted(pos & neg)} are in both lists; keep each in one list")
        out[str(name)] = (pos, neg)
    return out


def subtype_target(stages: pd.Series, positive: set, negative: set) -> tuple[np.ndarray, np.ndarray]:
    """(mask of cells in either list, 1 for positive / 0 for negative on the masked cells)."""
    s = stages.astype(str).to_numpy()
    mask = np.isin(s, sorted(positive | negative))
    return mask, np.isin(s[mask], sorted(positive)).astype(int)


@dataclass
class _Constant:
    """Stand-in classifier when training has a single class: probability 1 for it."""

    classes_: np.ndarray

    def predict_proba(self, Z: np.ndarray) -> np.ndarray:
        return np.ones((Z.shape[0], 1))


@dataclass
class Readouts:
    """Fitted readouts of one split; `predict` turns test embeddings into the prediction dict of `metrics`."""

    scaler: StandardScaler
    classifiers: dict[str, LogisticRegression | _Constant]  # "branch", "stage"
    subtypes: dict[str, LogisticRegression | None]  # None: one class in training -> endpoint NaN
    depth: LinearRegression | Ridge
    skipped: dict[str, str] = field(default_factory=dict)  # readout -> reason

    def predict(self, Z_test: np.ndarray, *, index: pd.Index | None = None) -> dict:
        """Predictions for test cells (rows in Z_test order): class probabilities, subtype scores, pseudotime."""
        Z = _check_matrix(Z_test, "Z_test")
        if Z.shape[1] != self.scaler.n_features_in_:
            raise InputError(f"Readouts.predict: Z_test has {Z.shape[1]} columns, the readouts were fit on "
                             f"{self.scaler.n_features_in_}; embed train and test with the same model")
        idx = pd.RangeIndex(Z.shape[0]) if index is None else pd.Index(index)
        S = self.scaler.transform(Z)
        pred: dict = {}
        for key, clf in self.classifiers.items():
            pred[f"{key}_proba"] = pd.DataFrame(clf.predict_proba(S), index=idx, columns=[str(c) for c in clf.classes_])
        for name, clf in self.subtypes.items():
            score = np.full(Z.shape[0], np.nan) if clf is None else clf.predict_proba(S)[:, 1]
            pred[f"{name}_proba"] = pd.Series(score, index=idx, name=name)
        pred["pseudotime"] = self.depth.predict(S)
        return pred

    def n_parameters(self) -> dict[str, int]:
        """Trainable parameters (coef + intercept) per fitted readout; skipped and constant readouts are left out.

        The scaler's mean and scale are fitted statistics, not trainable parameters, and are not counted.
        """
        out = {}
        models = {**self.classifiers, **self.subtypes, "depth": self.depth}
        for name, model in models.items():
            if model is None or isinstance(model, _Constant):
                continue
            out[name] = int(np.size(model.coef_) + np.size(model.intercept_))
        return out


def _check_matrix(Z: np.ndarray, name: str) -> np.ndarray:
    """Z as a finite 2-D float array."""
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2 or Z.shape[0] == 0 or Z.shape[1] == 0:
        raise InputError(f"readouts: {name} has shape {Z.shape}; expected a non-empty cells x dims matrix")
    if not np.isfinite(Z).all():
        raise InputError(f"readouts: {name} has non-finite values; fix the embedding method")
    return Z


def _fit_classifier(S: np.ndarray, y: np.ndarray, *, seed: int, max_iter: int, C: float, class_weight):
    """Multinomial (or binary) logistic regression; a constant predictor when y has one class."""
    classes = np.unique(y)
    if len(classes) == 1:
        return _Constant(classes_=classes)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed, class_weight=class_weight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(S, y)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn(w.message, w.category, stacklevel=2)  # pass every other warning on
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("logistic readout (%d classes, %d cells) stopped at max_iter=%d before converging", len(classes),
                    len(y), max_iter)
    return clf


def fit_readouts(
    Z_train: np.ndarray,
    obs_train: pd.DataFrame,
    *,
    subtypes: Mapping[str, Mapping],
    seed: int,
    max_iter: int = 1000,
    C: float = 1.0,
    class_weight: str | None = None,
    depth_alpha: float = 0.0,
) -> Readouts:
    """Fit the shared readouts on training embeddings and their obs (branch, stage, depth columns).

    Logistic regressions are L2 (inverse strength ``C``), lbfgs, multinomial for more than two classes.
    ``depth_alpha`` > 0 uses Ridge instead of ordinary least squares for depth. Cells with a missing label are left
    out of that readout only.
    """
    Z = _check_matrix(Z_train, "Z_train")
    if len(obs_train) != Z.shape[0]:
        raise InputError(f"fit_readouts: Z_train has {Z.shape[0]} rows but obs_train has {len(obs_train)}; "
                         "pass the obs of the embedded training cells")
    missing = [c for c in LABEL_COLUMNS if c not in obs_train.columns]
    if missing:
        raise InputError(f"fit_readouts: obs_train lacks column(s) {missing}; run the prepare step (stage table)")
    defs = check_subtypes(subtypes)
    scaler = StandardScaler().fit(Z)
    S = scaler.transform(Z)
    kw = {"seed": seed, "max_iter": max_iter, "C": C, "class_weight": class_weight}
    classifiers = {}
    for key in ("branch", "stage"):
        labels = obs_train[key]
        ok = labels.notna().to_numpy()
        if not ok.any():
            raise InputError(f"fit_readouts: obs_train['{key}'] is empty; every training cell needs a {key}")
        classifiers[key] = _fit_classifier(S[ok], labels[ok].astype(str).to_numpy(), **kw)
    fitted, skipped = {}, {}
    for name, (pos, neg) in defs.items():
        mask, y = subtype_target(obs_train["stage"], pos, neg)
        if len(np.unique(y)) < 2:
            fitted[name] = None
            skipped[name] = f"{int(y.sum())} positive / {int((1 - y).sum())} negative training cells"
            continue
        fitted[name] = _fit_classifier(S[mask], y, **kw)
    depth = pd.to_numeric(obs_train["depth"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(depth)
    if ok.sum() < 2:
        raise InputError("fit_readouts: obs_train['depth'] has fewer than 2 finite values; check the stage table's depth")
    regressor = Ridge(alpha=depth_alpha) if depth_alpha > 0 else LinearRegression()
    regressor.fit(S[ok], depth[ok])
    return Readouts(scaler=scaler, classifiers=classifiers, subtypes=fitted, depth=regressor, skipped=skipped)
