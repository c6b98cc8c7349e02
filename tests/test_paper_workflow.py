"""config/paper.yaml end to end, on CELLxGENE-layout stand-ins of Tabula Sapiens v2 and the immune atlas.

The paper config itself (structure untouched) with tests/config/paper_ci.yaml layered on top (checkpoint and scale
only) and a third layer pinning the stand-ins' digests, exactly as a user layers overrides: every target, then the
report. The stand-ins sit where the downloads would go, so the download rules verify them like real files. The
Tabula Sapiens stand-in follows the atlas's immune labels and donors x tissues (`write_standin(labels="ts_v2")`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fmextract.download import sha256_file
from fmextract.standin import NON_LINEAGE, OTHER_TYPES, TS_V2_DONORS, write_standin
from test_workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["config/paper.yaml", "config/paper_ci.yaml", "config/standin_digests.yaml"]
#: stand-in sizes: large enough that the reference donors reach the paper's anchors.min_cells, small enough for CI
SIZES = {"reference": (12_000, 600), "immune": (3_000, 560)}


def snakemake(work: Path, *args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", *LAYERS, *args]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-10000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The paper DAG on the stand-ins, run once for the module, plus its HTML report."""
    work = copy_workflow(tmp_path_factory.mktemp("paper"))
    shutil.copy(ROOT / "tests" / "config" / "paper_ci.yaml", work / "config" / "paper_ci.yaml")
    paper = yaml.safe_load((work / "config" / "paper.yaml").read_text())
    digests = {}
    for name, kind in (("tabula_sapiens_v2", "reference"), ("immune_atlas", "immune")):
        path = work / paper["downloads"][name]["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        n_cells, n_genes = SIZES[kind]
        write_standin(kind, path, n_cells=n_cells, n_genes=n_genes, seed=1, resources=work / "resources",
                      labels="ts_v2" if kind == "reference" else "mixed")
        digests[name] = {"sha256": sha256_file(path)}
    (work / "config" / "standin_digests.yaml").write_text(yaml.safe_dump({"downloads": digests}))
    snakemake(work)
    snakemake(work, "--report", "results/snakemake_report.html")
    return work


def table(run: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run / "results" / "tables" / name, sep="\t", keep_default_na=False, na_values=[""])


def log(run: Path, name: str) -> str:
    return (run / "results" / "logs" / name).read_text()


def test_every_target_and_the_report(run):
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    metrics = table(run, "metrics.tsv")
    assert set(metrics["method"]) == set(paper["methods"])
    per_method = metrics.groupby("method")["split"].nunique()
    for method, spec in paper["methods"].items():  # 2 + 1 + 1 splits; core: false methods run the first block only
        assert per_method[method] == (4 if spec.get("core", True) else 2), method
    for name in ("stats.tsv", "manifold_validation.tsv", "compression.tsv", "factor_ablation.tsv", "head_screen.tsv"):
        assert len(table(run, name)) > 0, name
    assert (run / "results" / "head" / "immune_applied.h5ad").is_file()
    assert len((run / "results" / "snakemake_report.html").read_text(errors="replace")) > 10_000
    assert "Manifold verdicts" in (run / "results" / "report.html").read_text()


def test_downloads_verified_against_pinned_digests(run):
    for name in ("tabula_sapiens_v2", "immune_atlas"):
        stamp = (run / "results" / "downloads" / f"{name}.sha256").read_text()
        assert stamp.split()[0] == sha256_file(run / "resources" / "atlas" / Path(stamp.split()[1]).name)
        assert "(verified)" in log(run, f"download/verify_{name}.log")


def test_non_hematopoietic_labels_listed_as_unmapped_with_counts(run):
    unmapped = table(run, "unmapped_labels_reference.tsv")
    assert list(unmapped.columns) == ["label", "ontology_id", "n_cells"]
    assert {"epithelial cell", "endothelial cell", "fibroblast"} <= set(unmapped["label"])
    assert set(unmapped["label"]) <= set(OTHER_TYPES) | set(NON_LINEAGE)  # and the labels naming no lineage
    assert {"leukocyte", "myeloid leukocyte"} & set(unmapped["label"])
    assert (unmapped["n_cells"] > 0).all() and unmapped["ontology_id"].str.startswith("CL:").all()


def test_label_coverage_every_atlas_label_reaches_a_stage(run):
    """Tabula Sapiens v2's lineage labels (B cell, CD4-/CD8-positive T cell, monocyte, T cell) are stages, in the
    subtype endpoints and the cell-trained adaptor; every dropped label is listed with its count."""
    cov = table(run, "label_coverage_reference.tsv").fillna({"label": "", "cd4_cd8": "", "mono_macro": ""})
    immune = cov[~cov["label"].isin(list(OTHER_TYPES)) & (cov["n_cells"] > 0)]
    assert immune.loc[immune["stage"].notna(), "n_cells"].sum() >= 0.9 * immune["n_cells"].sum()
    lineage = immune.set_index("label")
    assert lineage.loc["B cell", "mapping"] == "lineage stage" and lineage.loc["B cell", "cell_adaptor_cells"] > 0
    assert lineage.loc["CD4-positive, alpha-beta T cell", "cd4_cd8"] == "positive"
    assert lineage.loc["monocyte", "mono_macro"] == "negative"
    unmapped = table(run, "unmapped_labels_reference.tsv").set_index("label")["n_cells"]
    assert (cov.loc[cov["mapping"] == "unmapped"].set_index("label")["n_cells"] == unmapped.loc[
        cov.loc[cov["mapping"] == "unmapped", "label"]]).all()
    for panel in ("immune",):
        assert len(table(run, f"label_coverage_{panel}.tsv")) > 0
    assert (run / "results" / "report" / "label_coverage_reference.html").is_file()


def test_prepare_reads_raw_x_drops_smartseq_and_keeps_coarse_labels(run):
    import anndata as ad

    text = log(run, "prepare/reference.log")
    assert "counts from raw.X" in text and "assay 'Smart-seq2'" in text and "DROPPED" in text
    assert "mapped by obs['cell_type_ontology_term_id']" in text
    obs = ad.read_h5ad(run / "results" / "data" / "reference.h5ad", backed="r").obs
    coarse = obs["stage"].isna()
    assert coarse.any() and obs.loc[coarse, "branch"].notna().all() and obs.loc[coarse, "depth"].isna().all()
    assert (obs["assay"] != "Smart-seq2").all()
    assert set(obs["donor"]) == {d for donors in TS_V2_DONORS.values() for d in donors}  # the atlas's immune donors


def test_reference_donors_cover_stages_and_never_overlap(run):
    roles = table(run, "stage_roles.tsv")
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    donors_of = roles.set_index("stage")["benchmark_donors"]
    for name, spec in paper["endpoints"]["subtypes"].items():  # a listed stage may be absent (warned), never a side
        for side in ("positive", "negative"):
            assert any(donors_of.get(s, 0) > 0 for s in spec[side]), (name, side)
    staged = roles[roles["stage"].notna()]
    assert (staged["reference_anchors"] > 0).sum() >= 5
    text = log(run, "reference_donors.log")
    assert "strict non-overlap: 0 of" in text and "immune panel's cells" in text
    donors = (run / "results" / "data" / "reference_donors.txt").read_text().split()
    splits = pd.read_csv(run / "results" / "splits" / "splits.tsv", sep="\t")
    assert not set(splits.loc[splits["role"] == "test", "donor"]) & set(donors)
