"""config/paper.yaml plans the whole paper DAG offline; every rule has a conda env that agrees with the pip pins."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from test_workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]


def test_paper_config_plans_88_splits_for_every_method(tmp_path):
    work = copy_workflow(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", "config/paper.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    methods = cfg["methods"]
    core = [m for m, spec in methods.items() if spec.get("core", True)]
    assert "control_perfect" not in methods and "mlp_probe" in methods
    assert counts["run_method"] == 88 * len(core) + 40 * (len(methods) - len(core))
    assert counts["download"] == counts["verify_download"] == len(cfg["downloads"])
    assert "simulate" not in counts  # nothing of the demo leaks into the paper run
    assert not (work / "resources" / "atlas").exists()


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
