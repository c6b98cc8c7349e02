"""Attribution (attribution.tsv): is a passing manifold owed to attention, or would raw panel expression pass too?

The extracted features (pooled drift) and each comparator (raw expression, its PCA) run through the same feature-map,
adaptor and gate functions; here, per panel, adaptor and gate, the difference extracted − comparator, oriented so that
a positive difference favours attention for every gate (for the permutation p, lower is better: comparator − extracted),
with a donor-clustered bootstrap 95 % CI: donors are drawn with replacement, every feature set is scored on the same
draw (paired), and a donor drawn twice enters as two donors, so donor holdout keeps its meaning.

Verdict: "credited to attention" where the CI excludes zero in attention's favour, "comparator ahead" where it
excludes zero the other way, "not resolved" otherwise (also where no CI exists: the permutation p is not bootstrapped,
each draw would need its own permutations).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd

#: columns of attribution.tsv
COLUMNS = ["panel", "adaptor", "gate", "comparator", "extracted", "comparator_value", "difference", "ci_low", "ci_high",
           "verdict"]
CREDITED, AHEAD, UNRESOLVED = "credited to attention", "comparator ahead", "not resolved"


def donor_resample(meta: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame]:
    """One donor-clustered bootstrap draw: rows of donors drawn with replacement, and their meta with each copy of a
    donor renamed (`donor#k`) so that copies count as distinct donors."""
    donors = np.asarray(sorted(meta["donor"].astype(str).unique()))
    rows_of = meta.groupby(meta["donor"].astype(str)).indices
    picks = rng.choice(donors, size=len(donors), replace=True)
    rows, names = [], []
    for k, d in enumerate(picks):
        rows.append(rows_of[d])
        names += [f"{d}#{k}"] * len(rows_of[d])
    rows = np.concatenate(rows)
    return rows, meta.iloc[rows].reset_index(drop=True).assign(donor=names)


def bootstrap_values(
    features: Mapping[str, np.ndarray], meta: pd.DataFrame, score: Callable[[str, np.ndarray, pd.DataFrame], dict],
    *, n_bootstrap: int, seed: int,
) -> dict[str, list[dict[str, float]]]:
    """Per feature set, its gate values on each of `n_bootstrap` donor draws (the same draws for every set).

    `score(name, F, meta)` returns the gate values of feature rows F (the set `name`) with their meta.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, float]]] = {name: [] for name in features}
    for _ in range(n_bootstrap):
        rows, draw = donor_resample(meta, rng)
        for name, F in features.items():
            out[name].append(score(name, np.asarray(F)[rows], draw))
    return out


def verdict(low: float, high: float) -> str:
    """The attribution verdict of a CI of the oriented difference (positive favours attention)."""
    if np.isfinite(low) and low > 0:
        return CREDITED
    if np.isfinite(high) and high < 0:
        return AHEAD
    return UNRESOLVED


def attribution_rows(
    observed: Mapping[str, Mapping[str, float]], replicates: Mapping[str, list[Mapping[str, float]]], *,
    extracted: str, comparators: Mapping[str, str], gates: Mapping[str, str], panel: str, adaptor: str,
    level: float = 0.95,
) -> pd.DataFrame:
    """Rows of attribution.tsv for one panel and adaptor.

    `observed[name]` holds each feature set's gate values on the panel, `replicates[name]` its values on the bootstrap
    draws; `comparators` maps feature-set names to the comparator names written; `gates` maps each metric (the gated ones and
    the reported residualised Spearman) to its direction (">=" or "<="), which orients the difference.
    """
    rows = []
    tail = (1 - level) / 2
    for metric, direction in gates.items():
        if metric not in observed[extracted]:
            continue
        sign = 1.0 if direction == ">=" else -1.0
        for name, label in comparators.items():
            ext, comp = float(observed[extracted][metric]), float(observed[name].get(metric, np.nan))
            diffs = np.array([sign * (a.get(metric, np.nan) - b.get(metric, np.nan))
                              for a, b in zip(replicates.get(extracted, []), replicates.get(name, []))], dtype=float)
            diffs = diffs[np.isfinite(diffs)]
            low, high = np.quantile(diffs, [tail, 1 - tail]) if diffs.size >= 2 else (np.nan, np.nan)
            rows.append({"panel": panel, "adaptor": adaptor, "gate": metric, "comparator": label, "extracted": ext,
                         "comparator_value": comp, "difference": sign * (ext - comp) + 0.0, "ci_low": float(low),
                         "ci_high": float(high), "verdict": verdict(float(low), float(high))})
    return pd.DataFrame(rows, columns=COLUMNS)


def attention_sentence(table: pd.DataFrame, *, panel: str = "external", comparator: str = "raw_expression") -> str:
    """One sentence: does attention add to raw expression on `panel` (every gate of every adaptor counted)?"""
    sub = table[(table["panel"] == panel) & (table["comparator"] == comparator)]
    what = comparator.replace("_", " ")
    if sub.empty:
        return f"Attribution: no {panel}-panel comparison with {what} in this run."
    credited, ahead = sub[sub["verdict"] == CREDITED], sub[sub["verdict"] == AHEAD]
    n = len(sub)
    name = lambda rows: ", ".join(f"{g} ({a})" for g, a in zip(rows["gate"], rows["adaptor"]))
    if len(credited) and not len(ahead):
        head = f"attention adds to {what} on the {panel} panel on {len(credited)} of {n} comparisons"
    elif len(ahead) and not len(credited):
        head = (f"attention does not add to {what} on the {panel} panel: {what} is ahead on {len(ahead)} of {n} "
                "comparisons")
    elif len(credited):
        head = (f"attention's contribution on the {panel} panel is mixed: credited on {len(credited)}, {what} ahead "
                f"on {len(ahead)} of {n} comparisons")
    else:
        head = f"attention is not shown to add to {what} on the {panel} panel: no difference is resolved ({n} comparisons)"
    details = "; ".join(part for part in (f"credited: {name(credited)}" if len(credited) else "",
                                         f"{what} ahead: {name(ahead)}" if len(ahead) else "") if part)
    return (f"Attribution: {head} (donor-clustered bootstrap 95 % CI of extracted − comparator"
            f"{'; ' + details if details else ''}).")
