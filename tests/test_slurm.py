"""The SLURM profile on a real single-node SLURM: a small part of the tiny workflow runs as sbatch jobs.

tests/slurm/setup.sh installs Debian's SLURM packages when missing and starts munge, MariaDB, slurmdbd, slurmctld and
slurmd (all state in one folder); the module fixture tears them down again whatever happens. The run uses
profiles/slurm with the overrides of tests/slurm/test-profile.yaml (the test node has no GPU). It skips only where
SLURM cannot be had (not root, no apt-get, packages or daemons unavailable), with the reason.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "slurm"
#: one fixed folder, so a run killed before its teardown is cleaned up by the next setup
STATE = Path(os.environ.get("FMX_SLURM_STATE", "/tmp/fmextract-slurm-test"))
ACCOUNT = "fmxtest"
TARGETS = ["results/data/reference.h5ad", "results/splits/splits.tsv"]
#: the DAG of TARGETS on the tiny config: one SLURM job per rule (pretrain_demo_model is a GPU rule)
RULES = {"simulate", "prepare", "reference_donors", "pretrain_demo_model", "gene_panel", "splits"}
SKIP_STATUS = 77


def run(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd` in its own process group; on timeout kill the whole group (snakemake ignores SIGTERM)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{out[-3000:]}\n{err[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def merge(base: dict, override: dict) -> dict:
    """`override` into `base`, key by key at every level (a profile that inherits the shipped one)."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """A running single-node SLURM; yields the environment that reaches it; always stops its daemons."""
    if sys.platform != "linux":
        pytest.skip("SLURM test cluster: Linux only")
    ports = {f"FMX_{name}_PORT": str(free_port()) for name in ("SLURMCTLD", "SLURMD", "SLURMDBD", "MARIADB")}
    env = {**os.environ, **ports, "FMX_SLURM_ACCOUNT": ACCOUNT}
    try:
        setup = run(["bash", str(SCRIPTS / "setup.sh"), str(STATE)], timeout=420, env=env)
        if setup.returncode == SKIP_STATUS:
            pytest.skip(f"no SLURM on this machine: {setup.stderr.strip().splitlines()[-1]}")
        assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-6000:]
        env["SLURM_CONF"] = str(STATE / "slurm.conf")
        env["PATH"] = f"{STATE / 'bin'}:{env['PATH']}:/usr/sbin"
        yield env
    finally:
        down = run(["bash", str(SCRIPTS / "teardown.sh"), str(STATE), "--purge"], timeout=90, env=env)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """TARGETS of the tiny workflow run through profiles/slurm (+ the test overrides) on the test cluster."""
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    profile = yaml.safe_load((work / "profiles" / "slurm" / "config.yaml").read_text())
    merge(profile, yaml.safe_load((SCRIPTS / "test-profile.yaml").read_text()))
    (work / "profiles" / "slurm-test").mkdir()
    (work / "profiles" / "slurm-test" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", *TARGETS, "--workflow-profile", "profiles/slurm-test",
           "--configfile", "config/tiny.yaml"]
    proc = run(cmd, timeout=240, cwd=work, env={**cluster, "SLURM_ACCOUNT": ACCOUNT})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return work, proc


def sacct(env: dict[str, str]) -> list[dict[str, str]]:
    """Every job the test cluster's accounting knows (one line per job allocation)."""
    fields = ["JobID", "JobName", "State", "ExitCode", "Account", "Comment", "ReqTRES"]
    cmd = ["sacct", "-X", "-n", "-P", "--starttime", "now-1days", "-o", ",".join(fields)]
    proc = run(cmd, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines() if line]


def submitted(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """SLURM job id -> rule, from snakemake's "submitted with SLURM jobid N (log: .../rule_<rule>/...)" lines."""
    return dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: .*/rule_(\w+?)[/.]", proc.stdout + proc.stderr))


def test_jobs_ran_as_completed_slurm_jobs(slurm_run, cluster):
    work, proc = slurm_run
    log = proc.stdout + proc.stderr
    submitted_jobs = submitted(proc)
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    jobs = {job["JobID"]: job for job in sacct(cluster) if job["JobName"] == run_id}
    assert set(submitted_jobs.values()) == RULES, log[-4000:]
    assert set(jobs) == set(submitted_jobs), (jobs, submitted_jobs)
    for job_id, rule in submitted_jobs.items():
        job = jobs[job_id]
        assert (job["State"], job["ExitCode"], job["Account"]) == ("COMPLETED", "0:0", ACCOUNT), job
        assert re.fullmatch(rf"rule_{rule}(_wildcards_.*)?", job["Comment"]), job  # the plugin's job comment
    for target in TARGETS:
        assert (work / target).stat().st_size > 0


def test_rule_resources_reach_sbatch(slurm_run, cluster):
    """threads -> CPUs, mem_mb -> memory, and no GPU where the test profile turns it off."""
    rule_of = submitted(slurm_run[1])
    tres = {rule_of[job["JobID"]]: job["ReqTRES"] for job in sacct(cluster) if job["JobID"] in rule_of}
    assert "cpu=2" in tres["pretrain_demo_model"] and "mem=4000M" in tres["pretrain_demo_model"]
    assert "cpu=1" in tres["simulate"] and "mem=2000M" in tres["simulate"]
    assert not any("gpu" in value for value in tres.values()), tres


def test_every_gpu_rule_requests_a_gpu_in_the_profile():
    """The plugin submits GPUs from `gpu`, not the rules' `gpus`: the profile must map every GPU rule. A method's
    GPUs come from its config entry (`methods.<m>.resources.gpu`, already the `gpu` the plugin reads)."""
    rules_text = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    bodies = dict(re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", rules_text, flags=re.M))
    gpu_rules = {name for name, body in bodies.items() if re.search(r"^\s+gpus?=(?!method_resource)", body, flags=re.M)}
    assert re.search(r"^\s+gpu=method_resource\(\"gpu\", 0\)", bodies["run_method"], flags=re.M)
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    overrides = yaml.safe_load((SCRIPTS / "test-profile.yaml").read_text())
    assert gpu_rules, "no rule declares gpus= any more: update profiles/slurm and this test"
    for rule in gpu_rules:
        assert profile["set-resources"][rule]["gpu"] >= 1, rule
        assert overrides["set-resources"][rule] == {"gpu": 0, "gpus": 0}, rule


def test_a_campaign_survives_a_timeout_in_the_profile():
    """The profile retries and keeps going, and a retry gets more: every rule's runtime and mem_mb grow with the
    attempt (a rule's own lambda, or method_resource for run_method)."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["retries"] >= 1 and profile["keep-going"] is True
    rules_text = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    fixed = [(name, line.strip()) for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", rules_text, re.M)
             for line in re.findall(r"^\s+(?:mem_mb|runtime)=.*$", body, re.M)
             if "attempt" not in line and "method_resource" not in line and "report(" not in line
             and "results/" not in line]
    assert not fixed, fixed
