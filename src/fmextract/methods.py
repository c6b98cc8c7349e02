"""The method contract: load a method file, give it a split's train/test AnnData, validate and score its output.

A method is a Python file defining one function, by kind:

- ``embedding``:  ``embed(train, test, params) -> (Z_train, Z_test)``; the shared readouts turn Z into every endpoint.
  A third element ``{component: count}`` reports parameters the method fitted in this split (e.g. scVI's network).
- ``classifier``: ``classify(train, test, params) -> dict`` with any of ``branch_proba``/``stage_proba`` (DataFrame,
  test cells x classes), ``<subtype>_proba`` (positive-class probability per test cell) and ``pseudotime``; an
  optional ``n_parameters`` entry ({component: count}) reports the method's own trainable parameters.
- ``pseudotime``: ``pseudotime(train, test, params) -> array (n_test,)``.

Any kind may also define ``fitted_once(params) -> {component: count}``: parameters fitted once, before and outside
the splits (the extracted method's adaptor), read from its declared inputs. `parameter_rows` lays all of them out
for ``parameters.tsv``: role ``adaptor`` (fitted once), ``embedding`` (the method's own per-split network) or
``readout`` (per split: the shared readouts, or a classifier's own model). A method with more than one way to train
may define ``mode(params) -> str`` (CellTypist: ``sgd`` or ``lr``); runtime.tsv and runtime_summary.tsv record it.

``train`` and ``test`` hold the panel genes: raw counts in ``layers["counts"]``, log1p(CP10k) in ``X``. Labels
(``stage``, ``branch``, ``depth``...) are in ``train.obs`` only; ``test.obs`` has just ``donor`` and ``tissue``.

A method that reads only per-cell caches built once for the whole panel (its declared ``inputs``, e.g. frozen
latents or frozen scGPT embeddings; `fmextract.cache.read_rows` by obs name) sets ``READS_EXPRESSION = False`` in
its file: its ``train``/``test`` then carry obs and var but no X or layers, and its split job reads no expression.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fmextract.errors import InputError

if TYPE_CHECKING:  # anndata, the metrics and the readouts are imported where used: the Snakefile imports this module
    import anndata as ad  # for method_family alone, on every parse (each job of a cluster run parses it again)

log = logging.getLogger(__name__)

KIND_FUNCTION = {"embedding": "embed", "classifier": "classify", "pseudotime": "pseudotime"}
#: obs columns a method may see for test cells.
VISIBLE_TEST_OBS = ("donor", "tissue")


def load_method(path: str | Path, kind: str) -> ModuleType:
    """Import a method file and check it defines the function its kind requires."""
    path = Path(path)
    if kind not in KIND_FUNCTION:
        raise InputError(f"method {path.stem}: kind '{kind}' is unknown; use one of {', '.join(KIND_FUNCTION)}")
    spec = importlib.util.spec_from_file_location(f"fmextract_method_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, KIND_FUNCTION[kind], None)):
        raise InputError(f"{path}: a method of kind '{kind}' must define {KIND_FUNCTION[kind]}(train, test, params)")
    return module


def reads_expression(module: ModuleType) -> bool:
    """Whether a method file needs its cells' expression (False: it declares READS_EXPRESSION = False)."""
    return bool(getattr(module, "READS_EXPRESSION", True))


def split_views(
    adata: ad.AnnData, split_table: pd.DataFrame, split: str, *, max_train_cells: int, seed: int,
    expression: bool = True,
) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """The split's training cells (capped, stratified by donor), test cells with labels hidden, and the test truth.

    `adata` is in memory or backed (`chunks.open_backed`: X and layers on disk); from a backed panel only the split's
    rows are read, chunk by chunk, in one pass per matrix. With `expression=False` nothing but obs and var is
    materialised (methods that read per-cell caches only).
    """
    from fmextract.splits import cap_training_cells

    rows = split_table[split_table["split"] == split]
    if rows.empty:
        raise InputError(f"split '{split}' not found in the split table; rerun the splits rule")
    train_donors = rows.loc[rows["role"] == "train", "donor"].astype(str).tolist()
    test_donors = rows.loc[rows["role"] == "test", "donor"].astype(str).tolist()
    train_mask = adata.obs_names.isin(cap_training_cells(adata.obs, train_donors, max_train_cells, seed))
    test_mask = adata.obs["donor"].astype(str).isin(test_donors).to_numpy()
    if not test_mask.any() or not train_mask.any():
        role, found = ("test", test_donors) if not test_mask.any() else ("training", train_donors)
        raise InputError(f"split '{split}': 0 {role} cells (its {role} donors {found[:5]} have no cells in the benchmark "
                         "panel); rerun the splits rule on this panel (results/splits/splits.tsv is stale)")
    train, test = _cells(adata, train_mask, test_mask, expression=expression)
    truth = test.obs.copy()
    test.obs = test.obs[list(VISIBLE_TEST_OBS)].copy()
    return train, test, truth


def _cells(adata: ad.AnnData, *masks: np.ndarray, expression: bool) -> list[ad.AnnData]:
    """In-memory AnnData of the cells of each row mask; matrices on disk are read once for all masks together."""
    import anndata as ad

    from fmextract.chunks import is_on_disk, read_rows

    var = adata.var.copy()
    if not expression:
        return [ad.AnnData(obs=adata.obs[m].copy(), var=var) for m in masks]
    matrices = {"X": adata.X, **dict(adata.layers)}
    if not any(is_on_disk(m) for m in matrices.values()):
        return [adata[m].copy() for m in masks]
    union = np.logical_or.reduce(masks)
    read = {key: read_rows(m, union) for key, m in matrices.items() if m is not None}
    out = []
    for m in masks:
        within = m[union]
        X = read["X"][within] if "X" in read else None
        out.append(ad.AnnData(X=X, obs=adata.obs[m].copy(), var=var,
                              layers={k: v[within] for k, v in read.items() if k != "X"}))
    return out


def check_output(kind: str, out, train: ad.AnnData, test: ad.AnnData, method: str) -> dict:
    """The one validator every method output passes: types, shapes, finite values, test-cell order."""

    def fail(msg: str) -> None:
        raise InputError(f"method {method}: {msg}")

    def finite(x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if not np.isfinite(x).all():
            fail(f"{what} has non-finite values")
        return x

    def counts(n_parameters) -> dict[str, int]:
        if not isinstance(n_parameters, dict) or not all(isinstance(v, (int, np.integer)) for v in n_parameters.values()):
            fail("n_parameters must be a dict of component name -> trainable parameter count")
        return {str(k): int(v) for k, v in n_parameters.items()}

    if kind == "embedding":
        if not (isinstance(out, tuple) and len(out) in (2, 3)):
            fail("embed() must return (Z_train, Z_test) or (Z_train, Z_test, n_parameters)")
        z_train, z_test = (finite(z, name) for z, name in zip(out, ("Z_train", "Z_test")))
        for z, a, name in ((z_train, train, "Z_train"), (z_test, test, "Z_test")):
            if z.ndim != 2 or z.shape[0] != a.n_obs:
                fail(f"{name} has shape {z.shape}, expected ({a.n_obs}, d)")
        if z_train.shape[1] != z_test.shape[1]:
            fail(f"Z_train and Z_test differ in width ({z_train.shape[1]} vs {z_test.shape[1]})")
        return {"Z_train": z_train, "Z_test": z_test, "n_parameters": counts(out[2] if len(out) == 3 else {})}
    if kind == "pseudotime":
        out = {"pseudotime": out}
    if not isinstance(out, dict) or not out:
        fail("classify() must return a non-empty dict of predictions")
    out = dict(out)
    checked = {"n_parameters": counts(out.pop("n_parameters", {}))}
    for key, value in out.items():
        if isinstance(value, pd.DataFrame):
            if not value.index.equals(test.obs_names):
                fail(f"{key} rows must be the test cells in test.obs_names order")
            finite(value.to_numpy(), key)
            checked[key] = value
        else:
            v = finite(value, key)
            if v.shape != (test.n_obs,):
                fail(f"{key} has shape {v.shape}, expected ({test.n_obs},)")
            checked[key] = v
    return checked


def evaluate(
    kind: str, checked: dict, train: ad.AnnData, truth: pd.DataFrame, *, subtypes: dict, seed: int
) -> tuple[dict[str, float], dict[str, int]]:
    """Endpoints of one method on one split and its readout parameters; embeddings go through the shared readouts
    (fit on train donors)."""
    from fmextract.metrics import endpoint_metrics
    from fmextract.readouts import fit_readouts

    n_params: dict[str, int] = {}
    if kind == "embedding":
        readouts = fit_readouts(checked["Z_train"], train.obs, subtypes=subtypes, seed=seed)
        pred = readouts.predict(checked["Z_test"])
        n_params = readouts.n_parameters()
    else:
        pred = dict(checked)
        n_params = pred.pop("n_parameters", {})
    return endpoint_metrics(truth, pred, subtypes=subtypes, donor_key="donor"), n_params


def parameter_rows(kind: str, checked: dict, readout_parameters: dict[str, int],
                   fitted_once: dict[str, int]) -> list[dict]:
    """Rows (component, role, fitted, n_parameters) of one method on one split (module docstring: roles)."""
    rows = [{"component": c, "role": "adaptor", "fitted": "once", "n_parameters": int(n)} for c, n in fitted_once.items()]
    if kind == "embedding":
        rows += [{"component": c, "role": "embedding", "fitted": "per_split", "n_parameters": int(n)}
                 for c, n in checked.get("n_parameters", {}).items()]
    rows += [{"component": c, "role": "readout", "fitted": "per_split", "n_parameters": int(n)}
             for c, n in readout_parameters.items()]
    return rows


#: BH families of stats.tsv: the paper's (the reference vs the baselines), controls, variants of the reference.
FAMILIES = {"baseline": "paper", "control": "controls", "variant": "extracted_variants"}


def method_family(name: str, spec: dict) -> str:
    """The BH family of a method (config `family`, else by name: control_* controls, extracted_* variants)."""
    role = spec.get("family") or ("control" if name.startswith("control_") else
                                  "variant" if name.startswith("extracted_") else "baseline")
    return FAMILIES[role]


def pseudotime_supervision(spec: dict) -> str:
    """Whether a method's pseudotime is a readout trained on labels (supervised) or made without them (unsupervised)."""
    return spec.get("pseudotime") or ("unsupervised" if spec["kind"] == "pseudotime" else "supervised")
