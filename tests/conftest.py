"""Shared fixtures: small, deterministic panels and paths."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def stage_table() -> pd.DataFrame:
    """The curated stage table shipped in resources/."""
    from fmextract.stages import load_stage_table

    return load_stage_table(ROOT / "resources" / "hematopoiesis_stages.tsv")


def toy_counts_panel(n_donors: int = 4, cells: int = 30, genes: int = 40, seed: int = 0) -> ad.AnnData:
    """A raw-count panel with user-style column names (donor_id, cell_type, tissue)."""
    rng = np.random.default_rng(seed)
    labels = ["hematopoietic stem cell", "classical monocyte", "macrophage", "naive B cell"]
    n = n_donors * cells
    obs = pd.DataFrame(
        {
            "donor_id": np.repeat([f"D{i}" for i in range(n_donors)], cells),
            "cell_type": rng.choice(labels, size=n),
            "tissue": rng.choice(["blood", "bone_marrow"], size=n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    X = sp.csr_matrix(rng.poisson(2.0, size=(n, genes)).astype(np.float32))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(genes)]))
    adata.layers["counts"] = X.copy()
    return adata


@pytest.fixture
def counts_panel() -> ad.AnnData:
    """A fresh toy raw-count panel."""
    return toy_counts_panel()
