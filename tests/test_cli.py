"""The `fmextract` command line: apply writes the latent and predictions; bad input exits 2 with one line; --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmextract import data
from fmextract.adaptor import Adaptor
from fmextract.cli import main
from fmextract.features import FeatureMap
from fmextract.head import LATENT_KEY, Head, build_head
from fmextract.simulate import simulate_panel
from fmextract.stages import load_marker_programs, load_stage_graph, stage_info

SUBTYPES = {
    "cd4_cd8": {"positive": ["naive_cd4_t", "memory_cd4_t", "treg"], "negative": ["naive_cd8_t", "effector_cd8_t"]},
    "mono_macro": {"positive": ["macrophage"], "negative": ["classical_monocyte", "nonclassical_monocyte"]},
}
COLUMNS = ["fmextract_branch", "fmextract_stage", "fmextract_cd4_cd8", "fmextract_mono_macro", "fmextract_pseudotime"]


@pytest.fixture(scope="module")
def files(root, stage_table, tmp_path_factory) -> dict[str, Path]:
    """A head built on simulated training donors and a simulated raw-count input file of other donors."""
    res = root / "resources"
    edges = load_stage_graph(res / "stage_graph.tsv", list(stage_info(stage_table).index))
    raw = simulate_panel(stage_table, edges, load_marker_programs(res / "marker_programs.tsv"),
                         (res / "background_genes.txt").read_text().split(), donors=[f"D{i}" for i in range(4)],
                         tissues=["bone_marrow", "blood", "spleen"], stages=None, cells_per_donor=120, n_genes=None,
                         seed=7)
    train = raw[raw.obs["donor_id"].isin(["D0", "D1", "D2"]).to_numpy()].copy()
    prepared, _ = data.harmonise(train, stage_table, source="train", donor_key="donor_id", cell_type_key="cell_type",
                                 tissue_key="tissue", counts_layer="counts", gene_symbol_column=None)
    data.log_normalise(prepared)
    rng = np.random.default_rng(2)
    genes = list(rng.choice(prepared.var_names, size=50, replace=False))
    fmap = FeatureMap(genes=genes, kind="dense", matrix=rng.normal(size=(50, 30)).astype(np.float32))
    adaptor = Adaptor(W=rng.normal(size=(10, 30)).astype(np.float32), b=np.zeros(30, dtype=np.float32), scale=1.0)
    out = tmp_path_factory.mktemp("cli")
    build_head(fmap, adaptor, prepared[:, genes].copy(), subtypes=SUBTYPES, seed=0).save(out / "head.npz")
    cells = raw[(raw.obs["donor_id"] == "D3").to_numpy()].copy()
    cells.write_h5ad(out / "cells.h5ad")
    # the same cells as CELLxGENE ships them: Ensembl ids in var_names, symbols in feature_name, X normalised
    # (float32), the counts only in raw.X (float32 holding integers)
    var = pd.DataFrame({"feature_name": cells.var_names.to_numpy()}, index=[f"ENSG{i:011d}" for i in range(cells.n_vars)])
    counts = sp.csr_matrix(cells.layers["counts"], dtype=np.float32)
    cellxgene = ad.AnnData(X=sp.csr_matrix(data.log_cp10k(counts), dtype=np.float32), obs=cells.obs.copy(), var=var)
    cellxgene.raw = ad.AnnData(X=counts, var=var)
    cellxgene.write_h5ad(out / "cellxgene.h5ad")
    # normalised X and no raw.X: nothing holds counts
    normalised = ad.AnnData(X=cellxgene.X.copy(), obs=cells.obs.copy(), var=var)
    normalised.write_h5ad(out / "normalised.h5ad")
    ids_only = ad.AnnData(X=counts, obs=cells.obs.copy(), var=pd.DataFrame(index=var.index))  # no symbols at all
    ids_only.write_h5ad(out / "ids_only.h5ad")
    # gene symbols, none of them the head's panel genes
    other = ad.AnnData(X=counts, obs=cells.obs.copy(), var=pd.DataFrame(index=[f"OTHER{i}" for i in range(cells.n_vars)]))
    other.write_h5ad(out / "other_symbols.h5ad")
    return {"dir": out, "head": out / "head.npz", "cells": out / "cells.h5ad", "cellxgene": out / "cellxgene.h5ad",
            "normalised": out / "normalised.h5ad", "ids_only": out / "ids_only.h5ad",
            "other_symbols": out / "other_symbols.h5ad"}


def test_apply_writes_latent_and_predictions(files, capsys):
    out = files["dir"] / "applied.h5ad"
    assert main(["apply", str(files["head"]), str(files["cells"]), str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "50 of 50 panel genes found (coverage 100.0%)" in stdout and "cells/s" in stdout
    result = ad.read_h5ad(out)
    cells = ad.read_h5ad(files["cells"])
    assert result.obsm[LATENT_KEY].shape == (cells.n_obs, 10) and set(COLUMNS) <= set(result.obs.columns)
    assert result.obs["fmextract_pseudotime"].notna().all() and result.uns["fmextract"]["coverage"] == 1.0
    np.testing.assert_array_equal(result.obsm[LATENT_KEY], Head.load(files["head"]).apply(cells).obsm[LATENT_KEY])
    assert (result.layers["counts"] != cells.layers["counts"]).nnz == 0  # the input is carried over unchanged


def test_apply_on_a_cellxgene_file_as_it_ships_equals_counts_in_x(files, capsys):
    """Counts only in raw.X, Ensembl var_names: found without options, and the output equals counts in X."""
    reference = Head.load(files["head"]).apply(ad.read_h5ad(files["cells"]))  # counts in layers/X, symbols as var_names
    for options in ([], ["--counts-layer", "raw.X", "--gene-symbol-column", "feature_name", "--batch-size", "17"]):
        out = files["dir"] / f"cellxgene_applied{len(options)}.h5ad"
        assert main(["apply", str(files["head"]), str(files["cellxgene"]), str(out), "--min-coverage", "0.9",
                     *options]) == 0
        assert "counts from raw.X" in capsys.readouterr().out
        result = ad.read_h5ad(out)
        np.testing.assert_allclose(result.obsm[LATENT_KEY], reference.obsm[LATENT_KEY], rtol=1e-5,
                                   atol=1e-5 * np.abs(reference.obsm[LATENT_KEY]).max())
        for column in COLUMNS[:2]:
            assert (result.obs[column].astype(str) == reference.obs[column].astype(str)).all()
        assert result.uns["fmextract"]["counts"] == "raw.X" and result.uns["fmextract"]["coverage"] == 1.0


@pytest.mark.parametrize("case", ["missing_input", "missing_head", "low_coverage", "other_gene_keys", "no_raw",
                                  "not_counts"])
def test_bad_input_exits_2_with_one_line(case, files, capsys):
    out = files["dir"] / f"{case}.h5ad"
    head, cells = str(files["head"]), str(files["cells"])
    argv, expected = {
        "missing_input": (["apply", head, str(files["dir"] / "absent.h5ad"), str(out)], "absent.h5ad: input file not found"),
        "missing_head": (["apply", str(files["dir"] / "nohead.npz"), cells, str(out)], "nohead.npz: head file not found"),
        "low_coverage": (["apply", head, str(files["other_symbols"]), str(out)],
                         "0 of 50 panel genes (0.0%) found in var_names"),
        # a symbol-keyed (scGPT) head on a file keyed by Ensembl ids only
        "other_gene_keys": (["apply", head, str(files["ids_only"]), str(out)],
                            "whose genes are gene symbols, but var_names holds Ensembl gene ids (e.g. ENSG00000000000)"),
        "no_raw": (["apply", head, str(files["normalised"]), str(out), "--counts-layer", "raw.X"],
                   "--counts-layer=raw.X but the file has no raw.X"),
        # normalised.h5ad has no counts layer and no raw.X, so its (non-count) X is used
        "not_counts": (["apply", head, str(files["normalised"]), str(out), "--gene-symbol-column", "feature_name"],
                       "X holds non-integer or negative values"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmextract: error: ") and expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not list(files["dir"].glob(f".{case}*"))  # no output, no leftover temporary file


@pytest.mark.parametrize("case", ["text_file", "truncated"])
def test_unreadable_input_exits_2_with_one_line(case, files, capsys):
    bad = files["dir"] / f"{case}.h5ad"
    if case == "text_file":
        bad.write_text("cell,gene,count\nc1,CD3E,4\n")
    else:
        bad.write_bytes(files["cells"].read_bytes()[:4000])
    assert main(["apply", str(files["head"]), str(bad), str(files["dir"] / f"{case}_out.h5ad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{case}.h5ad: cannot be read as .h5ad" in err and "point INPUT at an AnnData .h5ad file" in err


@pytest.mark.parametrize("case", ["under_a_file", "missing_folder", "read_only_folder", "a_folder"])
def test_output_path_is_checked_before_computing(case, files, capsys, monkeypatch):
    import os

    folder = files["dir"] / case
    folder.mkdir()
    out, expected = {
        "under_a_file": (files["cells"] / "out.h5ad", "cells.h5ad is a file, not a folder"),
        "missing_folder": (folder / "absent" / "out.h5ad", "does not exist (it is not created for you)"),
        "read_only_folder": (folder / "out.h5ad", "cannot write in folder"),
        "a_folder": (folder, "OUTPUT is a folder"),
    }[case]
    if case == "read_only_folder":
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):  # root writes in any folder: use a read-only file system instead
            out = Path("/sys/fmextract_out.h5ad")
            try:
                os.close(os.open(out, os.O_CREAT | os.O_WRONLY))
                os.remove(out)
                pytest.skip("no read-only place for this user")
            except OSError:
                pass
    monkeypatch.setattr(Head, "apply", lambda *a, **k: pytest.fail("computed before checking OUTPUT"))
    try:
        assert main(["apply", str(files["head"]), str(files["cells"]), str(out)]) == 2
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert not (folder / "absent").exists()


def test_applying_in_place_keeps_the_file_mode(files, capsys):
    import os
    import shutil
    import stat

    target = files["dir"] / "in_place.h5ad"
    shutil.copy(files["cells"], target)
    target.chmod(0o600)
    assert main(["apply", str(files["head"]), str(target), str(target)]) == 0
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and LATENT_KEY in ad.read_h5ad(target).obsm


def test_info_describes_the_head(files, capsys):
    assert main(["info", str(files["head"])]) == 0
    stdout = capsys.readouterr().out
    assert "panel: 50 genes; feature map: dense, 30 features; latent: 10 dims" in stdout
    assert "model: scgpt; genes keyed by symbol" in stdout
    assert "readout cd4_cd8: P(naive_cd4_t/memory_cd4_t/treg)" in stdout and "adaptor 300" in stdout  # W only (10 x 30)


def test_console_entry_help_and_error_exit_code(files):
    cmd = [sys.executable, "-m", "fmextract.cli"]
    proc = subprocess.run([*cmd, "apply", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--gene-symbol-column" in proc.stdout and "RAW integer counts" in proc.stdout
    proc = subprocess.run([*cmd, "apply", str(files["head"]), "absent.h5ad", "out.h5ad"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "absent.h5ad" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_shows_an_example_for_every_command(capsys):
    import pytest

    for argv in ([], ["apply"], ["info"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and f"fmextract {argv[0] if argv else 'apply'} " in out, argv
