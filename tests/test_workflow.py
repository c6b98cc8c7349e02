"""The real Snakefile on the tiny config, in a temporary copy of the workflow: tables, columns, value ranges.

Also: `snakemake --lint` is clean, and adding a method by the two-step recipe of docs/add-baseline.md works.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = {
    "branch_balanced_accuracy", "branch_macro_f1", "stage_balanced_accuracy", "stage_macro_f1", "cd4_cd8_auroc",
    "cd4_cd8_balanced_accuracy", "mono_macro_auroc", "mono_macro_balanced_accuracy", "pseudotime_depth_spearman",
    "pseudotime_depth_abs_spearman",
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


ALWAYS_FAILING_METHOD = '''"""broken: breaks the method contract on every split (one array instead of (Z_train, Z_test))."""

import numpy as np


def embed(train, test, params):
    return np.zeros((test.n_obs, 2))
'''


SLOW_ONCE_METHOD = '''"""slow_once: raw expression, but its first attempt on each split overruns the job's deadline (retry test)."""

import time
from pathlib import Path

import numpy as np


def embed(train, test, params):
    first = Path(f"slow_once_{params['split']}.started")  # in the workflow copy: survives the job, unlike memory
    if not first.exists():
        first.touch()
        time.sleep(600)  # far past the deadline: this attempt exits for a retry
    dense = lambda a: np.asarray(a.X.todense(), dtype=np.float32)
    return dense(train), dense(test)
'''


ALWAYS_SLOW_METHOD = '''"""always_slow: raw expression, except that it never finishes on split001 (timeout test)."""

import time

import numpy as np


def embed(train, test, params):
    if params["split"] == "split001":
        time.sleep(600)  # far past the deadline on every attempt
    dense = lambda a: np.asarray(a.X.todense(), dtype=np.float32)
    return dense(train), dense(test)
'''


def snakemake(workdir: Path, *args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` with the tiny config; fail the test with its output on error (if `check`)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/tiny.yaml", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 or not check, proc.stdout[-4000:] + proc.stderr[-8000:]
    return proc


def add_method(work: Path, name: str, code: str, **entry) -> None:
    """docs/add-baseline.md, "Add a baseline in two steps": 1. the method file, 2. one config entry."""
    (work / "workflow" / "methods" / f"{name}.py").write_text(code)
    cfg_path = work / "config" / "tiny.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["methods"][name] = {"kind": "embedding", **entry}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


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
    add_method(work, "toy", TOY_METHOD)
    add_method(work, "crashy", CRASHY_METHOD)
    proc = snakemake(work)
    (work / "snakemake.out").write_text(proc.stdout + proc.stderr)
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
    family = s.drop_duplicates("method").set_index("method")["family"]
    assert family["raw"] == family["toy"] == "paper" and family["extracted_top1"] == "extracted_variants"
    assert family["adaptor_raw"] == family["raw_mlp"] == family["control_untrained"] == "controls"
    pseudo = s[s["endpoint"].str.startswith("pseudotime")].drop_duplicates("method").set_index("method")["pseudotime"]
    assert pseudo["dpt"] == pseudo["palantir"] == "unsupervised" and pseudo["raw"] == "supervised"
    assert s.loc[~s["endpoint"].str.startswith("pseudotime"), "pseudotime"].isna().all()
    assert (s["q_value"] >= s["p_value"] - 1e-12).all() and s["q_value"].le(1).all()
    donor = table(run, "stats_donor_level.tsv")
    assert {"n_donors", "ci_low", "ci_high", "lodo_p_value", "q_value"} <= set(donor.columns)
    assert set(donor["method"]) == set(s["method"]) and (donor["ci_low"] <= donor["ci_high"]).all()


def test_label_coverage_tables(run):
    """Every panel's labels with what uses them; the adaptor column is the cell-trained adaptor's own draw."""
    cfg = yaml.safe_load((run / "config" / "tiny.yaml").read_text())
    for panel in cfg["panels"]:
        cov = table(run, f"label_coverage_{panel}.tsv")
        assert list(cov.columns[:8]) == ["label", "ontology_id", "n_cells", "stage", "branch", "mapping",
                                         "branch_endpoints", "stage_endpoints"]
        assert cov["n_cells"].sum() == len(ad.read_h5ad(run / "results" / "data" / f"{panel}.h5ad", backed="r"))
    cov = table(run, "label_coverage_reference.tsv")
    assert {"lineage stage", "stage"} <= set(cov["mapping"])  # the demo labels a share of B, T, monocytes by lineage
    assert cov.loc[cov["mapping"] == "lineage stage", "stage"].isin(["b_cell", "cd4_t", "cd8_t", "t_cell", "monocyte"]).all()
    assert set(cov.loc[cov["stage"] == "cd4_t", "cd4_cd8"]) == {"positive"}
    assert set(cov.loc[cov["stage"] == "monocyte", "mono_macro"]) == {"negative"}
    drawn = pd.read_csv(run / "results" / "adaptor" / "pooled_drift_cell.tsv", sep="\t")
    assert cov["cell_adaptor_cells"].sum() == len(drawn)
    assert cov["anchor_cells"].sum() > 0 and (cov["anchor_cells"] <= cov["n_cells"]).all()
    assert (run / "results" / "report" / "label_coverage_reference.html").is_file()  # in the report's Tables


def test_summary_runtime_parameters(run):
    summary = table(run, "summary.tsv")
    assert {"method", "endpoint", "mean", "sd"} <= set(summary.columns)
    runtime = table(run, "runtime.tsv")
    assert {"method", "split", "seconds", "max_rss_mb"} <= set(runtime.columns) and len(runtime) == len(methods(run)) * 3
    params = table(run, "parameters.tsv")
    assert (params["n_parameters"] > 0).all() and "extracted" in set(params["method"])
    roles = params.groupby("method")["role"].apply(set)
    assert roles["extracted"] == roles["adaptor_raw"] == {"adaptor", "readout"}  # adaptor fitted once, readouts per split
    assert roles["scvi"] == {"embedding", "readout"} and roles["raw_mlp"] == roles["mlp_probe"] == {"readout"}
    assert set(params.loc[params["role"] == "adaptor", "fitted"]) == {"once"}
    assert set(params.loc[params["role"] != "adaptor", "fitted"]) == {"per_split"}
    adaptor = params[(params["method"] == "extracted") & (params["role"] == "adaptor")]["n_parameters"].iloc[0]
    assert adaptor == 10 * 2 * 60  # d_latent x pooled-drift features (2 x 60 genes)
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
    trained = load_operators(run / "results" / "operators" / "trained" / "attention_prob.npz")
    untrained = load_operators(run / "results" / "operators" / "untrained" / "attention_prob.npz")
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


PANELS = {"internal", "external", "immune", "communication", "communication_control_shuffled_genes",
          "control_null_branch", "control_mismatched_compartment", "control_shuffled_genes", "control_untrained_model",
          "control_permuted_operator", "planted_model", "comparator_raw_expression", "comparator_raw_pca",
          "comparator_raw_expression_immune", "comparator_raw_pca_immune"}


def test_operator_definitions_and_head_screen_tables(run):
    from fmextract.operators import load_operators

    d = table(run, "operator_definitions.tsv")
    assert set(zip(d["model"], d["definition"])) == {(m, x) for m in ("trained", "planted")
                                                      for x in ("attention_prob", "qk_raw", "qk_weights", "ov_weights")}
    assert d.loc[d["configured"], "definition"].unique().tolist() == ["attention_prob"]
    assert {"pooled_drift_residualised_spearman", "best_head", "best_head_residualised_spearman"} <= set(d.columns)
    planted = d[d["model"] == "planted"].set_index("definition")["planted_head_rank"]
    assert planted["qk_weights"] == 1 and planted["attention_prob"] == 1  # the planted L1H1 of 3 x 2 heads is found
    h = table(run, "head_screen.tsv")
    assert {"layer", "head", "name", "rank", "ruler_spearman", "residualised_spearman", "trustworthiness"} <= set(h.columns)
    assert len(h) == 6 and sorted(h["rank"]) == list(range(1, 7))
    ops = load_operators(run / "results" / "operators" / "trained" / "qk_weights.npz")
    args = json.loads((run / "results" / "model" / "planted" / "args.json").read_text())
    assert len(ops.checkpoint_sha256) == 64 and args["planted"]["layer"] == 1 and args["planted"]["head"] == 1


def test_validation_compression_and_factor_tables(run):
    v = table(run, "manifold_validation.tsv")
    assert list(v.columns) == ["metric", "panel", "adaptor", "value", "threshold", "passed"]
    assert set(v["panel"]) == PANELS and set(v["adaptor"]) == {"anchor", "cell"}
    gated = v.dropna(subset=["threshold"])
    assert {"trustworthiness", "blocked_permutation_p"} <= set(gated["metric"])
    ruler_trust = v[v["metric"] == "trustworthiness_ruler"]  # reported for every panel, not gated
    assert set(ruler_trust["panel"]) == PANELS and ruler_trust["threshold"].isna().all()
    verdicts = v[v["metric"] == "all_gates"].set_index(["panel", "adaptor"])["passed"]
    assert len(verdicts) == 2 * len(PANELS)
    assert verdicts[("planted_model", "anchor")] and verdicts[("planted_model", "cell")]  # the positive control passes
    assert np.isfinite(v.loc[(v["panel"] == "immune") & (v["metric"] == "residualised_spearman"), "value"]).all()
    sep = table(run, "gate_separation.tsv")
    assert {"adaptor", "metric", "threshold", "external", "control_null_branch", "separates"} <= set(sep.columns)
    assert "all_gates" in set(sep["metric"])
    a = table(run, "attribution.tsv")
    assert list(a.columns) == ["panel", "adaptor", "gate", "comparator", "extracted", "comparator_value", "difference",
                               "ci_low", "ci_high", "verdict"]
    assert set(a["panel"]) == {"external", "immune"} and set(a["comparator"]) == {"raw_expression", "raw_pca"}
    assert set(a["verdict"]) <= {"credited to attention", "comparator ahead", "not resolved"}
    boot = a[a["gate"] != "blocked_permutation_p"]
    assert (boot["ci_low"] <= boot["ci_high"]).all()
    programs = table(run, "planted_factor_programs.tsv")
    assert {"factor", "program", "q_value"} <= set(programs.columns) and len(programs) > 0
    c = table(run, "compression.tsv")
    assert {"variant", "rank", "size_mb", "float32_bytes", "endpoint", "mean", "losses_vs_previous", "losses_vs_pooled",
            "n_loss_endpoints", "noninferiority_p", "noninferior"} <= set(c.columns) and (c["size_mb"] > 0).all()
    rungs = c.drop_duplicates("variant").set_index("variant")
    assert list(rungs.index) == ["pooled_drift", "top1", "top1_rank8", "top1_rank4", "top1_sparse"]
    assert rungs.loc["top1_sparse", "float32_bytes"] == 4 * 4 * (10 + 10)  # 4 factors x (10 read + 10 write genes)
    paper = yaml.safe_load((run / "config" / "tiny.yaml").read_text())["endpoints"]["paper"]
    n_paper = len(set(paper) & set(table(run, "metrics.tsv")["endpoint"]))  # the paper's endpoints this run computes
    assert (rungs["n_loss_endpoints"] == n_paper).all() and rungs["losses_vs_pooled"].iloc[1:].between(0, n_paper).all()
    # the paper's chain on the tiny ranks (4, 8: neither 64 nor 32): pooled -> top1 -> sparse
    assert rungs["paper_previous"].fillna("").tolist()[1:] == ["pooled_drift", "", "", "top1"]
    f = table(run, "factor_ablation.tsv")
    assert {"leave_one_out", "sparse_leave_one_out", "core_share", "core_sufficiency", "core_subset"} == set(f["analysis"])
    subsets = f[f["analysis"].isin(["core_sufficiency", "core_subset"])]
    assert subsets["factors"].nunique() == 15 and (f.loc[f["analysis"] == "core_sufficiency", "n_factors"] == 4).all()
    assert len(table(run, "factor_programs.tsv")) > 0
    comparison = table(run, "paper_comparison.tsv")
    assert list(comparison.columns) == ["result", "paper", "ours", "unit", "note"] and len(comparison) >= 30
    assert np.isfinite(comparison["ours"]).all()
    summary_md = (run / "results" / "summary.md").read_text()
    assert "## Compaction chain" in summary_md and "adaptor_raw" in summary_md and "unsupervised" in summary_md
    assert "Attribution: " in summary_md and "on the external panel" in summary_md
    assert {"method", "split", "seconds"} <= set(table(run, "runtime.tsv").columns)
    assert "mlp_probe" in set(table(run, "parameters.tsv")["method"])


def embedded_pages(html: str) -> dict[str, str]:
    """The HTML pages embedded in a Snakemake report (base64 data URIs), by their first <h1>."""
    pages = {}
    for blob in re.findall(r"data:text/html[^,]*;base64,([A-Za-z0-9+/=]+)", html):
        page = base64.b64decode(blob).decode("utf-8", errors="replace")
        title = re.search(r"<h1>(.*?)</h1>", page)
        pages[title.group(1) if title else ""] = page
    return pages


def first_screen(html: str) -> str:
    """The page up to its first figure: what a 1400 x 1000 window shows before scrolling (headline and grids)."""
    return html[: html.index("<img")]


def test_the_run_ends_with_a_one_page_report(run):
    html = (run / "results" / "report.html").read_text()
    top = first_screen(html)
    headline = re.search(r'<p class="caption" id="headline">(.*?)</p>', top).group(1)
    assert re.search(r"Over 3 donor-holdout splits and \d+ endpoints \(paired two-sided Wilcoxon, BH q &lt; 0.05\)",
                     headline)
    assert re.search(r"beats? extracted on at least one endpoint|none beats extracted|no method differs from extracted",
                     headline)
    assert "Manifold verdicts (anchor-trained adaptor), every gate must pass: internal " in headline
    assert "negative controls fail" in headline
    assert top.count("<table>") == 2 and "method × endpoint" in top and "panel × gate" in top
    assert "<td>control_<wbr>null_<wbr>branch</td>" in top and re.search(r'<td class="(pass|fail)">(pass|fail)</td>', top)
    assert html.count('src="data:image/png;base64,') == 6 and 'src="figures/' not in html  # self-contained
    assert '<a href="tables/stats.tsv">stats</a> (<a href="report/stats.html">formatted</a>)' in html
    landing = (run / "results" / "report" / "headline.rst").read_text()
    assert landing.startswith("Over 3 donor-holdout splits") and "``extracted``" in landing
    summary_md = (run / "results" / "summary.md").read_text()
    assert "**In short.** Over 3 donor-holdout splits" in summary_md


def test_report_html_has_figures_and_tables(run):
    snakemake(run, "--report", "results/snakemake_report.html")
    html = (run / "results" / "snakemake_report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "manifold" in html
    assert "Over 3 donor-holdout splits" in html  # the landing page carries the run's headline
    pages = embedded_pages(html)
    stats = pages["Stats"]
    assert "Paired two-sided Wilcoxon" in stats and "<th>q_<wbr>value</th>" in stats and "<td>crashy</td>" in stats
    assert {"Summary", "Stats donor level", "Manifold validation", "Failures", "Paper comparison"} <= set(pages)
    assert "<th>paper</th>" in pages["Paper comparison"]
    assert not re.search(r"<td[^>]*>\d\.\d{5,}</td>", pages["Paper comparison"])  # ours at the paper's decimals
    assert pages["Summary"].count("<tr>") < 30  # a method x endpoint grid, not 146 long-format rows
    assert "<td>split001</td>" in pages["Failures"] and "planted failure" in pages["Failures"]


def test_report_zip_has_the_tables(run):
    snakemake(run, "--report", "results/snakemake_report.zip")
    with zipfile.ZipFile(run / "results" / "snakemake_report.zip") as zf:
        names = zf.namelist()
        stats = [n for n in names if n.endswith("stats.html")]
        assert stats and any(n.endswith("report.html") for n in names), names
        assert any(n.endswith("paper_comparison.html") for n in names), names
        page = zf.read(stats[0]).decode()
    assert "<th>median_<wbr>diff</th>" in page and "Paired two-sided Wilcoxon" in page


def test_the_report_renders_the_paper_comparison(tmp_path):
    """The paper_comparison rule's table becomes a report page through REPORT_TABLES, like every other table."""
    work = copy_workflow(tmp_path)
    assert "results/report/paper_comparison.html" in snakemake(work, "-n", timeout=300).stdout


def test_partial_failures_are_summarised_at_the_end(run):
    out = (run / "snakemake.out").read_text().splitlines()
    at = next(i for i, line in enumerate(out) if line.startswith("fmextract: 1 method job(s) failed"))
    assert out[at + 1].strip() == ("crashy on split001: RuntimeError: planted failure "
                                   "(log: results/logs/methods/crashy/split001.log)")
    failures = table(run, "failures.tsv")
    assert failures[["method", "split"]].values.tolist() == [["crashy", "split001"]]


def test_all_in_one_jobs_give_the_same_tables_as_jobs_per_split(run, tmp_path):
    """splits.jobs: all_in_one (the demo's: one job per method over all splits) reruns every per-split rule of the
    finished tiny run as one job each and gives the same per-split outputs, bit for bit; a method that raises on one
    split (crashy) loses only that split inside its one job; each split's runtime shares its job's start-up."""
    work = tmp_path / "wf"
    shutil.copytree(run, work, symlinks=True)
    cfg_path = work / "config" / "tiny.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["splits"]["jobs"] = "all_in_one"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    per_split_rules = ["run_method", "compression_split", "factor_ablation_split", "factor_core_split"]
    proc = snakemake(work, "--forcerun", *per_split_rules, "--", "results/tables/metrics.tsv",
                     "results/tables/compression.tsv", "results/tables/factor_ablation.tsv", timeout=1800)
    jobs = re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M)  # Snakemake's job-count table
    counts = {rule: int(n) for rule, n in jobs}
    assert all(counts.get(r) == (len(methods(run)) if r == "run_method" else 1) for r in per_split_rules), counts
    for pattern in ("results/methods/*/split*.tsv", "results/compression/split*.tsv", "results/factors/split*.tsv",
                    "results/factors/core/split*.tsv"):
        old = sorted(run.glob(pattern))
        assert old and [p.relative_to(run) for p in old] == [p.relative_to(work) for p in sorted(work.glob(pattern))]
        for path in old:
            assert (work / path.relative_to(run)).read_bytes() == path.read_bytes(), path.relative_to(run)
    assert (work / "results/logs/methods/crashy/all_splits.log").is_file()
    runtime = table(work, "runtime.tsv")
    assert runtime.loc[runtime["status"] == "failed", ["method", "split"]].values.tolist() == [["crashy", "split001"]]
    bench = pd.read_csv(work / "results/benchmarks/methods/toy/all_splits.tsv", sep="\t")
    assert runtime.loc[runtime["method"] == "toy", "seconds"].sum() == pytest.approx(bench["s"].iloc[0], rel=1e-3)


def test_a_method_failing_on_every_split_fails_the_run(run, tmp_path):
    work = tmp_path / "wf"
    shutil.copytree(run, work, symlinks=True)  # the finished tiny run: only the new method's jobs and their consumers run
    add_method(work, "broken", ALWAYS_FAILING_METHOD)
    proc = snakemake(work, check=False)
    assert proc.returncode != 0
    line = ("fmextract: method broken failed on every split (3 of 3): InputError: method broken: embed() must return "
            "(Z_train, Z_test) or (Z_train, Z_test, n_parameters); log: results/logs/methods/broken/split000.log")
    out = (proc.stdout + proc.stderr).splitlines()
    end = max(i for i, x in enumerate(out) if x.startswith("Exiting because a job execution failed"))
    assert line in out[end:], "\n".join(out[-40:])  # the end-of-run summary (onerror) repeats it last
    assert not [x for x in out if "failed on every split" in x and "method broken" not in x]  # crashy: partial


def test_a_timed_out_method_is_retried_and_a_lasting_timeout_is_recorded(tmp_path):
    """A job past its deadline (methods_deadline_fraction 0.25 x runtime x attempt: slow_once 30 s then 60 s,
    always_slow 15 s then 30 s) exits for a retry with more time; on its last attempt the timeout is recorded
    (failures.tsv) and the statistics run on the finished splits.
    On the tiny data with raw as the reference and the two slow methods only: the jobs this needs, no more."""
    work = copy_workflow(tmp_path)
    cfg_path = work / "config" / "tiny.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["methods"] = {"raw": cfg["methods"]["raw"]}
    cfg["stats"]["reference"] = "raw"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    add_method(work, "slow_once", SLOW_ONCE_METHOD, resources={"runtime": 2})
    add_method(work, "always_slow", ALWAYS_SLOW_METHOD, resources={"runtime": 1})
    proc = snakemake(work, "--config", "methods_retries=1", "methods_deadline_fraction=0.25", "--rerun-incomplete",
                     "results/tables/stats.tsv", "results/tables/failures.tsv", timeout=1800)  # a flag ends --config
    out = proc.stdout + proc.stderr
    assert "slow_once on split000 ran past its deadline of 30 s on attempt 1; exiting for a retry" in out
    status = {s: json.loads((work / f"results/methods/slow_once/{s}.json").read_text())["status"] for s in
              ("split000", "split001", "split002")}
    assert status == {"split000": "ok", "split001": "ok", "split002": "ok"}
    failures = table(work, "failures.tsv").set_index(["method", "split"])["error"]
    assert failures[("always_slow", "split001")] == ("JobTimeout: always_slow on split001 ran past its deadline of 30 s "
                                                      "on attempt 2 (the last)")
    assert ("slow_once", "split000") not in failures.index
    stats_log = (work / "results" / "logs" / "stats.log").read_text()
    assert "always_slow: 2 of 3 splits" in stats_log and "slow_once: 3 of 3 splits" in stats_log
    s = table(work, "stats.tsv")
    assert (s.loc[s["method"] == "always_slow", "n"] == 2).all() and (s.loc[s["method"] == "slow_once", "n"] == 3).all()


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


def _bad_panels() -> dict:
    """Bad input files of the data contract: case -> (writer of the file, config overrides, what the line names)."""
    import anndata as ad

    from conftest import toy_counts_panel

    def h5ad(adata):
        return lambda path: adata.write_h5ad(path)

    def truncated(path):
        toy_counts_panel().write_h5ad(path)
        path.write_bytes(path.read_bytes()[:3000])

    good = toy_counts_panel()
    ensembl = good.copy()
    ensembl.var["feature_name"] = ensembl.var_names
    ensembl.var_names = [f"ENSG{i:011d}" for i in range(ensembl.n_vars)]
    normalised = ad.AnnData(X=good.X.multiply(1 / good.X.sum(axis=1)).tocsr(), obs=good.obs, var=good.var)
    zeros = good.copy()
    zeros.layers["counts"] = zeros.layers["counts"] * 0
    unknown = good.copy()
    unknown.obs["cell_type"] = "alien cell"
    return {
        "text_file": (lambda path: path.write_text("cell\tgene\tcount\nc1\tCD3E\t4\n"), {},
                      ["cannot be read as .h5ad", "panels.reference.path"]),
        "truncated": (truncated, {}, ["cannot be read as .h5ad (truncated file", "panels.reference.path"]),
        "ensembl_ids": (h5ad(ensembl), {}, ["var_names are Ensembl ids", "panels.reference.gene_symbol_column",
                                            "'feature_name' looks like it"]),
        "zero_cells": (h5ad(good[:0].copy()), {}, ["0 cells", "panels.reference.path"]),
        "no_counts": (h5ad(normalised), {"counts_layer": None},
                      ["X holds non-integer or negative values", "panels.reference.counts_layer"]),
        "zero_counts": (h5ad(zeros), {}, ["every count in layers['counts']", "panels.reference.counts_layer"]),
        "unknown_labels": (h5ad(unknown), {}, ["has a label in the stage table", "panels.reference.cell_type_key"]),
        "no_donor_column": (h5ad(good), {"donor_key": "donor"}, ["obs column 'donor' not found",
                                                                   "panels.reference.donor_key"]),
    }


@pytest.mark.parametrize("case", list(_bad_panels()))
def test_a_data_mistake_is_one_line_at_prepare(case, tmp_path):
    """Each bad input stops `prepare` (the first rule that reads it) with one line naming the file and the config
    key, exit non-zero, no traceback on the console or in the log."""
    write, overrides, expected = _bad_panels()[case]
    work = copy_workflow(tmp_path)
    (work / "data").mkdir()
    write(work / "data" / "panel.h5ad")
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    panel = {k: v for k, v in cfg["panels"]["reference"].items() if k != "simulate"}
    cfg["panels"]["reference"] = {**panel, "path": "data/panel.h5ad", **overrides}
    (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(work, "--", "results/data/reference.h5ad", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    lines = {x for x in out.splitlines() if x.startswith("fmextract: input error")}
    assert proc.returncode != 0 and len(lines) == 1, out[-3000:]
    line = lines.pop()
    assert line.startswith("fmextract: input error in rule prepare: data/panel.h5ad: "), line
    assert all(text in line for text in expected), line
    log = (work / "results" / "logs" / "prepare" / "reference.log").read_text()
    assert "Traceback" not in out and "Traceback" not in log and log.rstrip().endswith(line)


def test_a_retried_input_error_fails_at_once_with_the_same_line(tmp_path):
    """Under `retries` (a cluster profile's), the same job on the same input fails again without recomputing."""
    write, _, _ = _bad_panels()["unknown_labels"]
    work = copy_workflow(tmp_path)
    (work / "data").mkdir()
    write(work / "data" / "panel.h5ad")
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    panel = {k: v for k, v in cfg["panels"]["reference"].items() if k != "simulate"}
    cfg["panels"]["reference"] = {**panel, "path": "data/panel.h5ad"}
    (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(work, "--retries", "2", "--", "results/data/reference.h5ad", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    lines = [x for x in out.splitlines() if x.startswith("fmextract: input error")]
    assert proc.returncode != 0 and len(lines) >= 3 and len(set(lines)) == 1, out[-3000:]
    log = (work / "results" / "logs" / "prepare" / "reference.log").read_text()
    assert "failed so before" in log and "Traceback" not in out
