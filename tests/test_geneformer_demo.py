"""config/geneformer_demo.yaml end to end: the real Snakefile, model.kind geneformer, in a temporary copy of the
workflow; the pipeline builds and pretrains its own tiny Geneformer and every table of the run is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "config/geneformer_demo.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The Geneformer demo, run once in a copy of the workflow."""
    work = tmp_path_factory.mktemp("geneformer_demo")
    for name in ("Snakefile", "workflow", "config", "resources", "profiles", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", CONFIG]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return work


def test_the_pipeline_builds_a_geneformer_checkpoint(run):
    folder = run / "results" / "model" / "pretrained"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForMaskedLM"]
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "token_dictionary.pkl", "gene_median_dictionary.pkl"}
    curve = pd.read_csv(folder / "loss_curve.tsv", sep="\t")
    cfg = yaml.safe_load((run / CONFIG).read_text())
    assert len(curve) == cfg["model"]["pretrain"]["steps"]
    planted = json.loads((run / "results" / "model" / "planted" / "config.json").read_text())
    assert planted["planted"]["layer"] == cfg["model"]["planted"]["layer"]
    untrained = json.loads((run / "results" / "model" / "untrained" / "config.json").read_text())
    assert untrained["untrained"] is True


def test_every_method_is_scored_and_the_planted_head_is_screened(run):
    cfg = yaml.safe_load((run / CONFIG).read_text())
    metrics = pd.read_csv(run / "results" / "tables" / "metrics.tsv", sep="\t")
    assert set(metrics["method"]) == set(cfg["methods"]) and metrics["split"].nunique() == cfg["splits"]["n_splits"]
    assert metrics["value"].between(-1, 1).all()
    definitions = pd.read_csv(run / "results" / "tables" / "operator_definitions.tsv", sep="\t")
    planted = definitions[definitions["model"] == "planted"]
    assert len(planted) == len(cfg["operators"]["compare"]) and planted["planted_head_rank"].notna().all()
    configured = planted.set_index("definition")["planted_head_rank"][cfg["operators"]["definition"]]
    assert configured == 1  # the planted positive control is found first by the configured definition
