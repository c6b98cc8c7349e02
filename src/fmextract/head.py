"""The standalone algorithm: one file bundling the gene panel, feature map, adaptor and readouts, applied to new cells.

`build_head` fits the pipeline's shared readouts (`readouts.fit_readouts`, as `methods.evaluate` does) on the latent
of training cells; `Head.save` writes everything into ONE .npz (no pickle: the feature map and adaptor files are
embedded byte for byte, every fitted sklearn estimator is stored as its arrays plus its parameters as JSON);
`Head.apply` maps raw counts of any panel to the latent and the readouts' predictions, in cell batches: after
log1p(CP10k) the whole map is one matrix product (`latent.fold`, taken over the input's own gene order). A head
records the model kind it was extracted from and what its genes are keyed by (symbols or Ensembl ids), and refuses
input whose genes are keyed the other way.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any, Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from fmextract.adaptor import Adaptor
from fmextract.chunks import map_rows
from fmextract.counts import check_counts, counts_source, log_cp10k
from fmextract.errors import InputError
from fmextract.features import BATCH_ROWS, FeatureMap
from fmextract.io import atomic_path
from fmextract.latent import FoldedLatent, fold
from fmextract.models import DEFAULT_KIND, gene_key_type
from fmextract.readouts import Readouts, _Constant, fit_readouts

log = logging.getLogger(__name__)

FORMAT = "fmextract-head"
FORMAT_VERSION = 1
#: CP10k: counts per cell scaled to this total before log1p, as the pipeline's prepare step does.
TARGET_SUM = 1e4
#: obsm key of the latent written by `Head.apply`; obs columns are prefixed with `PREFIX`.
LATENT_KEY = "X_fmextract"
PREFIX = "fmextract_"
#: what a head written before heads recorded their model was extracted from (scGPT was the only model then)
UNRECORDED_MODEL = {"kind": DEFAULT_KIND, "gene_keys": "symbol", "recorded": False}
KEY_NAMES = {"symbol": "gene symbols", "ensembl": "Ensembl gene ids"}

#: Fitted attributes that fully define each readout estimator's predictions (stored as arrays).
_FITTED: dict[str, tuple[type, tuple[str, ...]]] = {
    "StandardScaler": (StandardScaler, ("mean_", "scale_", "var_", "n_samples_seen_", "n_features_in_")),
    "LogisticRegression": (LogisticRegression, ("classes_", "coef_", "intercept_", "n_features_in_")),
    "LinearRegression": (LinearRegression, ("coef_", "intercept_", "n_features_in_")),
    "Ridge": (Ridge, ("coef_", "intercept_", "n_features_in_")),
    "_Constant": (_Constant, ("classes_",)),
}


def _file_bytes(save: Any, name: str) -> np.ndarray:
    """Bytes of the file an object's `save(path)` writes, as a uint8 array."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        save(path)
        return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)


def _estimator_arrays(slot: str, est: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON spec, arrays) of one fitted readout estimator; `_estimator` rebuilds it."""
    kind = type(est).__name__
    if kind not in _FITTED:
        raise TypeError(f"readout {slot}: cannot store a {kind}")
    spec = {"type": kind, "params": est.get_params() if hasattr(est, "get_params") else {}}
    arrays = {}
    for attr in _FITTED[kind][1]:
        value = np.asarray(getattr(est, attr))
        arrays[f"readouts/{slot}/{attr}"] = value.astype(str) if value.dtype == object else value  # labels: no pickle
    return spec, arrays


def _estimator(slot: str, spec: Mapping, z: Mapping[str, np.ndarray]) -> Any:
    """The estimator stored by `_estimator_arrays`, with its fitted attributes set (0-d arrays as scalars)."""
    cls, attrs = _FITTED[spec["type"]]
    values = {a: z[f"readouts/{slot}/{a}"] for a in attrs}
    values = {a: (v.item() if v.ndim == 0 else v) for a, v in values.items()}
    if cls is _Constant:
        return _Constant(classes_=values["classes_"])
    est = cls(**spec["params"])
    for attr, value in values.items():
        setattr(est, attr, value)
    return est


@dataclass
class Head:
    """The exported algorithm: feature map (panel genes + operator), adaptor and fitted readouts, plus metadata."""

    fmap: FeatureMap
    adaptor: Adaptor
    readouts: Readouts
    meta: dict

    @cached_property
    def folded(self) -> FoldedLatent:
        """Feature map, adaptor centring/scaling and projection folded into one G x d matrix + offset (`latent.fold`)."""
        return fold(self.fmap, self.adaptor)

    @property
    def genes(self) -> list[str]:
        """Panel genes as the model keys them (symbols or Ensembl ids), in feature-map order."""
        return self.fmap.genes

    @property
    def model(self) -> dict:
        """{kind, gene_keys}: the model kind the head was extracted from and what its genes are keyed by."""
        return self.meta.get("model", UNRECORDED_MODEL)

    @property
    def subtypes(self) -> dict[str, dict[str, list[str]]]:
        """Subtype endpoint definitions the readouts were fitted with ({name: {positive, negative}})."""
        return self.meta["subtypes"]

    def save(self, path: str | os.PathLike) -> None:
        """Write the head as ONE .npz (loadable with allow_pickle=False), atomically."""
        arrays = {"feature_map": _file_bytes(self.fmap.save, "feature_map.npz"),
                  "adaptor": _file_bytes(self.adaptor.save, "adaptor.npz")}
        r = self.readouts
        models = {"scaler": r.scaler, **{f"classifier.{k}": v for k, v in r.classifiers.items()},
                  **{f"subtype.{k}": v for k, v in r.subtypes.items() if v is not None}, "depth": r.depth}
        specs = {}
        for slot, est in models.items():
            specs[slot], arr = _estimator_arrays(slot, est)
            arrays.update(arr)
        meta = {**self.meta, "format": FORMAT, "format_version": FORMAT_VERSION, "readouts": specs,
                "classifiers": list(r.classifiers), "skipped": r.skipped}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Head":
        """Read a head written by `save`; a missing or foreign file raises a one-line InputError."""
        fix = "pass the .npz written by Head.save (the pipeline's results/head/fmextract_head.npz)"
        if not Path(path).is_file():
            raise InputError(f"{path}: head file not found; {fix}")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile):
            raise InputError(f"{path}: not a readable .npz file; {fix}") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: holds a single array, not an fmextract head; {fix}")
        with z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            if meta.get("format") != FORMAT:
                raise InputError(f"{path}: not an fmextract head (no '{FORMAT}' metadata); {fix}")
            if meta["format_version"] > FORMAT_VERSION:
                raise InputError(f"{path}: head format {meta['format_version']} is newer than this fmextract "
                                 f"({version('fmextract')}) reads ({FORMAT_VERSION}); upgrade fmextract")
            fmap = FeatureMap.load(io.BytesIO(z["feature_map"].tobytes()))
            adaptor = Adaptor.load(io.BytesIO(z["adaptor"].tobytes()))
            specs = meta.pop("readouts")
            est = {slot: _estimator(slot, spec, z) for slot, spec in specs.items()}
        readouts = Readouts(
            scaler=est["scaler"],
            classifiers={k: est[f"classifier.{k}"] for k in meta.pop("classifiers")},
            subtypes={name: est.get(f"subtype.{name}") for name in meta["subtypes"]},
            depth=est["depth"],
            skipped=meta.pop("skipped"),
        )
        for key in ("format", "format_version"):
            meta.pop(key)
        return cls(fmap=fmap, adaptor=adaptor, readouts=readouts, meta=meta)

    def apply(
        self,
        adata: ad.AnnData,
        *,
        counts_layer: str | None = None,
        gene_symbol_column: str | None = None,
        min_coverage: float = 0.5,
        batch_size: int = BATCH_ROWS,
        source: str = "input",
        inplace: bool = False,
    ) -> ad.AnnData:
        """Latent and readout predictions for every cell of `adata`.

        Expected input: RAW integer counts (UMIs; integer-valued floats are fine) over all measured genes, cells x
        genes, found by `counts.counts_source`: `counts_layer` (a layer or "raw.X"), else layers["counts"], else X
        if integer-valued, else raw.X (a CELLxGENE file as it ships: normalised X, counts in raw.X). The head
        normalises them itself exactly as the pipeline does: log1p(CP10k) with the library size over all
        (symbol-deduplicated) genes, then the panel genes. Do not pass log-normalised or panel-only data. Genes are
        matched by the head's gene keys (`model["gene_keys"]`): symbols in var_names, `var[gene_symbol_column]`, or
        CELLxGENE's `feature_name` when var_names are Ensembl ids; Ensembl ids in var_names or
        `var[gene_symbol_column]`. Input keyed the other way raises InputError; absent panel genes count as zero, and
        fewer than `min_coverage` of them present raises InputError. Cells are processed `batch_size` at a time.

        Writes (on a copy unless `inplace`): obsm["X_fmextract"] (latent), obsm["fmextract_branch_proba"] and
        ["fmextract_stage_proba"] (class probabilities), obs `fmextract_branch` / `fmextract_stage` (most likely
        class) with `_probability`, `fmextract_<subtype>` (probability of the subtype's positive stages, e.g.
        CD4 for cd4_cd8; NaN if that readout could not be fitted), `fmextract_pseudotime` (predicted depth,
        0 = HSC/MPP) and uns["fmextract"] (coverage, missing genes, counts source).
        """
        if not 0.0 <= min_coverage <= 1.0:
            raise InputError(f"{source}: min_coverage={min_coverage} must lie in [0, 1]")
        if batch_size < 1:
            raise InputError(f"{source}: batch_size={batch_size} must be a positive number of cells")
        if adata.n_obs == 0:
            raise InputError(f"{source}: the file has no cells; pass a panel with at least one cell")
        counts, where = counts_source(adata, counts_layer, source=source, key="--counts-layer")
        if self.model["gene_keys"] == "symbol":
            gene_symbol_column = symbol_column(adata.var, gene_symbol_column, source=source)
        self._check_gene_keys(adata.var, gene_symbol_column, source)
        dedup, select, missing = _panel_selection(adata.var, self.genes, gene_symbol_column, source)
        n_genes = len(self.genes)
        coverage = 1.0 - len(missing) / n_genes
        named = f"var['{gene_symbol_column}']" if gene_symbol_column else "var_names"
        if coverage < min_coverage:
            raise InputError(
                f"{source}: {n_genes - len(missing)} of {n_genes} panel genes ({coverage:.1%}) found in {named}, below "
                f"min_coverage={min_coverage}; set the gene symbol column (--gene-symbol-column, e.g. feature_name "
                "for CELLxGENE) or lower --min-coverage")
        log.info("%s: %d of %d panel genes found in %s (coverage %.1f%%)", source, n_genes - len(missing), n_genes,
                 named, 100 * coverage)
        if adata.n_vars <= n_genes:
            log.warning("%s: only %d genes measured; CP10k library sizes need all measured genes, not just the panel",
                        source, adata.n_vars)

        # Per batch, only the panel columns are normalised: the pipeline's log1p(CP10k) (`counts.log_cp10k`, scanpy)
        # runs on [panel columns | one column with the rest of each cell's counts], so every library size is the cell's total
        # over all (deduplicated) genes, exactly as on the full matrix; the rest column is then dropped and the whole
        # algorithm is one product with the folded G x d matrix. Absent panel genes are empty columns.
        folded = self.folded
        kept = np.flatnonzero(dedup) if dedup is not None else np.arange(adata.n_vars)
        sel = select.tocoo()
        to_panel = sp.csr_matrix((sel.data, (kept[sel.row], sel.col)), shape=(adata.n_vars, n_genes))
        library = None if dedup is None else dedup.astype(np.float32)

        def latent(block: np.ndarray | sp.csr_matrix) -> np.ndarray:
            block = sp.csr_matrix(block, dtype=np.float32)
            check_counts(block.data, where=where, source=source, key="--counts-layer")
            totals = np.asarray(block.sum(axis=1) if library is None else block @ library, dtype=np.float64).ravel()
            panel = sp.csr_matrix(block @ to_panel)
            rest = (totals - np.asarray(panel.sum(axis=1), dtype=np.float64).ravel()).astype(np.float32)
            normalised = log_cp10k(sp.hstack([panel, sp.csr_matrix(rest[:, None])], format="csr"), target_sum=TARGET_SUM)
            z = sp.csr_matrix(normalised)[:, :n_genes] @ folded.matrix
            return np.asarray(z, dtype=np.float32) + folded.offset

        Z = map_rows(latent, counts, batch_size=batch_size)
        pred = self.readouts.predict(Z, index=adata.obs_names)
        out = adata if inplace else adata.copy()
        out.obsm[LATENT_KEY] = Z
        for key in self.readouts.classifiers:
            proba = pred[f"{key}_proba"]
            out.obsm[f"{PREFIX}{key}_proba"] = proba
            out.obs[f"{PREFIX}{key}"] = pd.Categorical(proba.idxmax(axis=1).to_numpy(), categories=list(proba.columns))
            out.obs[f"{PREFIX}{key}_probability"] = proba.max(axis=1).to_numpy()
        for name in self.readouts.subtypes:
            out.obs[f"{PREFIX}{name}"] = pred[f"{name}_proba"].to_numpy()
        out.obs[f"{PREFIX}pseudotime"] = np.asarray(pred["pseudotime"], dtype=float)
        out.uns["fmextract"] = {"coverage": coverage, "n_panel_genes": n_genes, "n_genes_found": n_genes - len(missing),
                                "missing_genes": np.array(missing, dtype=str), "counts": where,
                                "fmextract_version": version("fmextract")}
        return out

    def _check_gene_keys(self, var: pd.DataFrame, gene_column: str | None, source: str) -> None:
        """One-line InputError when the input's genes are keyed otherwise than the head's (symbols vs Ensembl ids)."""
        if gene_column is not None and gene_column not in var.columns:
            return  # _panel_selection names the missing column
        names = pd.Index(var[gene_column] if gene_column else var.index)[:1000].astype(str)
        found, wanted = gene_key_type(names), self.model["gene_keys"]
        if found != wanted:
            named = f"var['{gene_column}']" if gene_column else "var_names"
            raise InputError(
                f"{source}: this head was extracted from a {self.model['kind']} model whose genes are "
                f"{KEY_NAMES[wanted]}, but {named} holds {KEY_NAMES[found]} (e.g. {names[0]}); pass --gene-symbol-column "
                f"naming the var column of {KEY_NAMES[wanted]}, or use a head from a model keyed by {KEY_NAMES[found]}")


def symbol_column(var: pd.DataFrame, gene_symbol_column: str | None, *, source: str) -> str | None:
    """The var column holding gene symbols: the one given, else CELLxGENE's `feature_name` when var_names are Ensembl
    ids (ENSG...), else None (var_names are the symbols)."""
    if gene_symbol_column is not None or "feature_name" not in var.columns:
        return gene_symbol_column
    names = pd.Index(var.index[:1000]).astype(str)
    if len(names) and names.str.match(r"^ENS[A-Z]*G\d{6,}").mean() > 0.5:
        log.info("%s: var_names are Ensembl ids; gene symbols read from var['feature_name'] (CELLxGENE layout)", source)
        return "feature_name"
    return None


def _panel_selection(
    var: pd.DataFrame, genes: list[str], gene_symbol_column: str | None, source: str
) -> tuple[np.ndarray | None, sp.csr_matrix, list[str]]:
    """(deduplication column mask or None, kept genes x panel 0/1 selection matrix, missing panel genes).

    Duplicated symbols are kept once (first occurrence) before the library size is taken, as in the prepare step.
    """
    if gene_symbol_column is not None and gene_symbol_column not in var.columns:
        raise InputError(f"{source}: var column '{gene_symbol_column}' not found (var has: "
                         f"{', '.join(map(str, var.columns[:12])) or 'no columns'}); pass the column with gene "
                         "symbols to --gene-symbol-column, or leave it out to use var_names")
    symbols = pd.Index(np.asarray(var[gene_symbol_column] if gene_symbol_column else var.index, dtype=str))
    first = ~symbols.duplicated()
    if not first.all():
        log.warning("%s: %d duplicated gene symbols kept once (first occurrence)", source, int((~first).sum()))
    index = symbols[first].get_indexer(genes)
    present = index >= 0
    select = sp.csr_matrix((np.ones(present.sum(), dtype=np.float32), (index[present], np.flatnonzero(present))),
                           shape=(int(first.sum()), len(genes)))
    return (None if first.all() else first), select, [g for g, ok in zip(genes, present) if not ok]


def build_head(
    fmap: FeatureMap,
    adaptor: Adaptor,
    train_adata: ad.AnnData,
    *,
    subtypes: Mapping[str, Mapping],
    seed: int,
    model_kind: str = DEFAULT_KIND,
    batch_size: int = BATCH_ROWS,
    source: str = "training panel",
) -> Head:
    """Fit the shared readouts on the latent of the training cells and bundle them with the frozen map and adaptor.

    `train_adata` is in the pipeline's prepared form (e.g. results/data/benchmark.h5ad): X = log1p(CP10k) computed
    over all measured genes, var_names holding every panel gene, obs with stage, branch and depth. The readouts are
    `readouts.fit_readouts` with the pipeline's defaults, so a head applied to test cells predicts exactly what
    `methods.evaluate` scores for the `extracted` method fitted on the same training cells. `model_kind` (config
    model.kind) is recorded with what the panel genes are keyed by, so `apply` can refuse input keyed otherwise.
    """
    if adaptor.W.shape[1] != fmap.n_features:
        raise InputError(f"{source}: the adaptor expects {adaptor.W.shape[1]} features but the feature map gives "
                         f"{fmap.n_features}; pass the adaptor trained on this feature map")
    absent = [g for g in fmap.genes if g not in set(train_adata.var_names)]
    if absent:
        raise InputError(f"{source}: {len(absent)} panel genes absent from var_names (e.g. {absent[:3]}); pass the "
                         "prepared panel the feature map was built on")
    Z = fold(fmap, adaptor).transform(train_adata[:, fmap.genes].X, batch_size=batch_size)
    readouts = fit_readouts(Z, train_adata.obs, subtypes=subtypes, seed=seed)
    obs = train_adata.obs
    meta = {
        "fmextract_version": version("fmextract"),
        "input": {"expects": "raw counts over all measured genes", "normalisation": "log1p(CP10k)",
                  "target_sum": TARGET_SUM},
        "subtypes": {str(k): {"positive": [str(s) for s in v["positive"]], "negative": [str(s) for s in v["negative"]]}
                     for k, v in subtypes.items()},
        "seed": int(seed),
        "model": {"kind": str(model_kind), "gene_keys": gene_key_type(fmap.genes)},
        "feature_map": {"kind": fmap.kind, "n_genes": len(fmap.genes), "n_features": fmap.n_features},
        "latent_dim": int(adaptor.W.shape[0]),
        "training": {"n_cells": int(train_adata.n_obs),
                     "donors": sorted(obs["donor"].astype(str).unique().tolist()) if "donor" in obs else []},
        "n_parameters": {"adaptor": adaptor.n_parameters, **readouts.n_parameters()},
    }
    return Head(fmap=fmap, adaptor=adaptor, readouts=readouts, meta=meta)
