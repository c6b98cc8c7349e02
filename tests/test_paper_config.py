"""config/paper.yaml plans the whole paper DAG offline; every rule has a conda env that agrees with the pip pins."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory) -> tuple[Path, str]:
    """The dry-run plan of config/paper.yaml in a copy of the workflow (no data present): (workdir, output)."""
    work = copy_workflow(tmp_path_factory.mktemp("paper"))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", "config/paper.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return work, out


def planned_jobs(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, {field: value}) of every job block in a dry-run output."""
    jobs = []
    for m in re.finditer(r"^rule (\w+):\n((?:    .*\n?)+)", out, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(2), re.M))
        jobs.append((m.group(1), fields))
    return jobs


def test_paper_config_plans_88_splits_for_every_method(paper_plan):
    work, out = paper_plan
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    methods = cfg["methods"]
    core = [m for m, spec in methods.items() if spec.get("core", True)]
    assert "control_perfect" not in methods and "mlp_probe" in methods
    assert counts["run_method"] == 88 * len(core) + 40 * (len(methods) - len(core))
    assert counts["download"] == counts["verify_download"] == len(cfg["downloads"])
    assert "simulate" not in counts  # nothing of the demo leaks into the paper run
    assert not (work / "resources" / "atlas").exists()


def test_frozen_embeddings_once_per_model_and_panel_and_no_split_job_loads_the_transformer(paper_plan):
    """The paper's expensive forward pass happens once (rule embed_cells); split jobs read cached rows only."""
    _, out = paper_plan
    jobs = planned_jobs(out)
    embed = [fields["output"] for rule, fields in jobs if rule == "embed_cells"]
    assert embed == ["results/embeddings/trained/benchmark.h5"]  # one job per (model, panel) the methods declare
    loads_model = {rule for rule, fields in jobs if "best_model.pt" in fields.get("input", "")}
    # the last: sha256; untrained and planted copies read the architecture
    assert loads_model == {"embed_cells", "export_operators", "untrained_model", "planted_model", "verify_download"}
    exports = {f["output"] for r, f in jobs if r == "export_operators"}  # once per (model, definition)
    assert exports == {f"results/operators/{m}/{d}.npz" for m in ("trained", "planted")
                       for d in ("attention_prob", "qk_raw", "qk_weights", "ov_weights")} | {
        "results/operators/untrained/attention_prob.npz"}
    split_jobs = [(rule, fields) for rule, fields in jobs if "split=" in fields.get("wildcards", "")]
    assert split_jobs and not any("best_model.pt" in f.get("input", "") for _, f in split_jobs)
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for name, spec in cfg["methods"].items():  # nor does any method's code
        code = (ROOT / "workflow" / "methods" / f"{spec.get('file', name)}.py").read_text()
        assert "load_scgpt" not in code and "embed_cells(" not in code, name
    probe = [f["input"] for r, f in jobs if r == "run_method" and "method=mlp_probe" in f.get("wildcards", "")]
    assert len(probe) == 40 and all("results/embeddings/trained/benchmark.h5" in i for i in probe)
    latents = {f["output"] for r, f in jobs if r == "frozen_latent"}  # once per (map, adaptor) a method or rung reads
    declared = {s["inputs"]["latent"] for s in cfg["methods"].values() if "latent" in s.get("inputs", {})}
    assert declared == {f"results/latent/{f}.h5" for f in ("pooled_drift_cell", "pooled_drift_anchor", "top1_cell",
                        "top3_cell", "untrained_pooled_drift_cell", "raw_cell", "planted_pooled_drift_cell")}
    rungs = {f"results/latent/{f}_cell.h5" for f in ("top1_rank64", "top1_rank32", "top1_rank16", "top1_rank8",
                                                      "top1_sparse")}
    assert latents == declared | rungs
    compression = [f["input"] for r, f in jobs if r == "compression_split"]
    assert len(compression) == 88 and all("results/operators" not in i for i in compression)  # rows of the caches


def _pins(requirements) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for r in requirements if (m := re.match(r"([A-Za-z0-9_.-]+)==([^;\s]+)", r))}


def test_every_rule_has_an_existing_env_pinned_like_the_lock():
    lock = _pins((ROOT / "requirements" / "lock.txt").read_text().splitlines())
    for env in (ROOT / "envs").glob("*.yaml"):
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        for name, version in _pins(pip).items():
            assert lock.get(name) == version, f"{env.name}: {name}=={version}, requirements/lock.txt pins {lock.get(name)}"
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule in re.split(r"^rule ", text, flags=re.M)[1:]:
            name = rule.split(":")[0]
            m = re.search(r"conda:\s*\n\s*(\S+)", rule)
            assert m, f"{smk.name}: rule {name} names no conda env"
            if m.group(1).startswith('"'):
                assert (smk.parent / m.group(1).strip('"')).resolve().is_file(), f"rule {name}: {m.group(1)} missing"
    methods = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]
    for name, spec in methods.items():
        assert (ROOT / "envs" / f"{spec.get('env', 'core')}.yaml").is_file(), f"method {name}: env missing"


def test_default_profile_does_not_enable_conda():
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    conda = yaml.safe_load((ROOT / "profiles" / "conda" / "config.yaml").read_text())
    assert "software-deployment-method" not in default
    assert "conda" in str(conda.get("software-deployment-method"))


def test_docs_state_the_planned_job_count(paper_plan):
    """README.md and docs/reproduce.md state the paper dry run's job counts as `snakemake -n` plans them today."""
    _, out = paper_plan
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    for page in ("README.md", "docs/reproduce.md"):
        stated = re.search(r"plans ([\d,]+) jobs,\s+([\d,]+) of them method × split", (ROOT / page).read_text())
        assert stated, f"{page} does not state the paper dry run's job count"
        total, per_split = (int(g.replace(",", "")) for g in stated.groups())
        assert (total, per_split) == (counts["total"], counts["run_method"]), \
            f"{page}: plans {counts['total']:,} jobs, {counts['run_method']:,} of them method × split"
