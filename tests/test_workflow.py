"""The real Snakefile on the tiny config, in a temporary copy of the workflow: tables, columns, value ranges.

Also: `snakemake --lint` is clean, and adding a method by the README's two-step recipe works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = {
    "branch_balanced_accuracy", "branch_macro_f1", "stage_balanced_accuracy", "stage_macro_f1", "cd4_cd8_auroc",
    "cd4_cd8_balanced_accuracy", "mono_macro_auroc", "pseudotime_depth_spearman", "pseudotime_depth_abs_spearman",
}
TOY_METHOD = '''"""toy: the first two log1p panel genes (a deliberately weak baseline)."""

import numpy as np


def embed(train, test, params):
    """Two genes as a 2-D embedding."""
    first_two = lambda a: np.asarray(a.X[:, :2].todense(), dtype=np.float32)
    return first_two(train), first_two(test)
'''


CRASHY_METHOD = '''"""crashy: raw expression, except that it raises on split001 (robustness test)."""

import numpy as np


def embed(train, test, params):
    if params["split"] == "split001":
        raise RuntimeError("planted failure")
    dense = lambda a: np.asarray(a.X.todense(), dtype=np.float32)
    return dense(train), dense(test)
'''


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` with the tiny config; fail the test with its output on error."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/tiny.yaml", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return proc


def copy_workflow(dest: Path) -> Path:
    """A self-contained copy of the workflow (what a user clones), with the tiny config in config/."""
    for name in ("Snakefile", "workflow", "config", "resources", "profiles", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    shutil.copy(ROOT / "tests" / "config" / "tiny.yaml", dest / "config" / "tiny.yaml")
    return dest


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The tiny workflow, run once for the module, with a toy method added by the README recipe."""
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    # README "Add a baseline in two steps": 1. the method file, 2. one config entry
    (work / "workflow" / "methods" / "toy.py").write_text(TOY_METHOD)
    cfg_path = work / "config" / "tiny.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["methods"]["toy"] = {"kind": "embedding"}
    (work / "workflow" / "methods" / "crashy.py").write_text(CRASHY_METHOD)
    cfg["methods"]["crashy"] = {"kind": "embedding"}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(work)
    return work


def methods(run: Path) -> list[str]:
    """Methods of the (toy-extended) tiny config."""
    return list(yaml.safe_load((run / "config" / "tiny.yaml").read_text())["methods"])


def table(run: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run / "results" / "tables" / name, sep="\t")


def test_metrics_table(run):
    m = table(run, "metrics.tsv")
    assert list(m.columns[:4]) == ["split", "method", "endpoint", "value"]
    assert set(m["endpoint"]) <= ENDPOINTS and {"stage_balanced_accuracy", "pseudotime_depth_abs_spearman"} <= set(m["endpoint"])
    assert set(m["method"]) == set(methods(run)) and "toy" in set(m["method"])
    assert set(m.loc[m["method"] == "crashy", "split"]) == {"split000", "split002"}
    assert m["split"].nunique() == 3
    bounded = m[~m["endpoint"].str.endswith("_spearman") | m["endpoint"].str.contains("abs")]
    assert bounded["value"].between(0, 1).all()
    assert m["value"].between(-1, 1).all()


def test_stats_table(run):
    s = table(run, "stats.tsv")
    for col in ("endpoint", "method", "reference", "n", "median_diff", "statistic", "p_value", "q_value"):
        assert col in s.columns
    assert set(s["method"]) == set(methods(run)) - {"extracted"} and (s["reference"] == "extracted").all()
    assert np.isfinite(s[["p_value", "q_value"]].to_numpy()).all()
    assert (s["q_value"] >= s["p_value"] - 1e-12).all() and s["q_value"].le(1).all()
    donor = table(run, "stats_donor_level.tsv")
    assert {"n_donors", "ci_low", "ci_high", "lodo_p_value", "q_value"} <= set(donor.columns)
    assert set(donor["method"]) == set(s["method"]) and (donor["ci_low"] <= donor["ci_high"]).all()


def test_summary_runtime_parameters(run):
    summary = table(run, "summary.tsv")
    assert {"method", "endpoint", "mean", "sd"} <= set(summary.columns)
    runtime = table(run, "runtime.tsv")
    assert {"method", "split", "seconds", "max_rss_mb"} <= set(runtime.columns) and len(runtime) == len(methods(run)) * 3
    params = table(run, "parameters.tsv")
    assert (params["n_parameters"] > 0).all() and "extracted" in set(params["method"])
    cost = table(run, "runtime_summary.tsv").set_index("method")  # one-time cache builds vs per-split cost
    assert set(cost.index) == set(methods(run)) and (cost["campaign_splits"] == 12).all()
    assert "frozen_latent pooled_drift_cell" in cost.loc["extracted", "one_time_steps"]
    assert "embed_cells trained/benchmark" in cost.loc["mlp_probe", "one_time_steps"]
    assert cost.loc["raw", "one_time_seconds"] == 0 and cost.loc["extracted", "campaign_ratio"] == 1
    np.testing.assert_allclose(cost["campaign_seconds"],
                               cost["one_time_seconds"] + 12 * cost["per_split_seconds"], rtol=1e-9)
    assert (run / "results" / "embeddings" / "trained" / "benchmark.h5").is_file()


def test_untrained_control_runs_the_extracted_pipeline_on_fresh_weights(run):
    from fmextract.operators import load_operators

    args = json.loads((run / "results" / "model" / "untrained" / "args.json").read_text())
    assert args["untrained"] is True and args["seed"] == 0
    trained = load_operators(run / "results" / "operators" / "trained" / "operators.npz")
    untrained = load_operators(run / "results" / "operators" / "untrained" / "operators.npz")
    assert trained.operators.shape == untrained.operators.shape and trained.genes == untrained.genes
    assert not np.allclose(trained.operators, untrained.operators)
    m = table(run, "metrics.tsv")
    assert m.loc[m["method"] == "control_untrained", "split"].nunique() == 3


def test_logs_per_rule(run):
    logs = list((run / "results" / "logs").rglob("*.log"))
    assert any(p.name == "gene_panel.log" for p in logs) and len(logs) >= 4 * 3


def test_rerun_is_a_no_op(run):
    proc = snakemake(run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean(tmp_path):
    work = copy_workflow(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_config_typo_fails_fast(tmp_path):
    work = copy_workflow(tmp_path)
    cfg = (work / "config" / "tiny.yaml").read_text().replace("n_splits:", "n_split:")
    (work / "config" / "tiny.yaml").write_text(cfg)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config/tiny.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown key 'n_split' under 'splits'" in proc.stdout + proc.stderr


def test_validation_compression_and_factor_tables(run):
    v = table(run, "manifold_validation.tsv")
    assert list(v.columns) == ["metric", "panel", "value", "threshold", "passed"]
    assert {"reference", "negative_control_shuffled_genes", "control_untrained_model", "immune"} <= set(v["panel"])
    gated = v.dropna(subset=["threshold"])
    assert {"trustworthiness", "blocked_permutation_p"} <= set(gated["metric"])
    ruler_trust = v[v["metric"] == "trustworthiness_ruler"]  # reported for every panel, not gated
    assert set(ruler_trust["panel"]) >= {"reference", "negative_control_shuffled_genes", "immune"}
    assert ruler_trust["threshold"].isna().all()
    c = table(run, "compression.tsv")
    assert {"variant", "rank", "size_mb", "endpoint", "mean", "q_value"} <= set(c.columns) and (c["size_mb"] > 0).all()
    f = table(run, "factor_ablation.tsv")
    assert len(f) > 0 and {"factor"} <= set(f.columns)
    assert len(table(run, "factor_programs.tsv")) > 0
    assert {"method", "split", "seconds"} <= set(table(run, "runtime.tsv").columns)
    assert "mlp_probe" in set(table(run, "parameters.tsv")["method"])


def test_report_builds_with_figures(run):
    snakemake(run, "--report", "results/report.html")
    html = (run / "results" / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "manifold" in html


def test_standalone_head_applied_to_immune_panel(run):
    import anndata as ad

    applied = ad.read_h5ad(run / "results" / "head" / "immune_applied.h5ad")
    assert applied.obsm["X_fmextract"].shape == (applied.n_obs, 10)
    assert {"fmextract_branch", "fmextract_stage", "fmextract_pseudotime"} <= set(applied.obs.columns)
    assert np.isfinite(applied.obs["fmextract_pseudotime"]).all()


def test_a_crashing_method_loses_only_its_split(run):
    s = table(run, "stats.tsv")
    crashy = s[s["method"] == "crashy"]
    assert len(crashy) > 0 and (crashy["n"] == 2).all() and (crashy["n_dropped"] == 1).all()
    assert (s.loc[s["method"] == "toy", "n"] == 3).all()
    runtime = table(run, "runtime.tsv")
    failed = runtime[runtime["status"] == "failed"]
    assert failed[["method", "split"]].values.tolist() == [["crashy", "split001"]]
