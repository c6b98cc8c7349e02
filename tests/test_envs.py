"""Dependency files agree: pyproject.toml (ranges) <- requirements/lock.txt (exact, tested) -> envs/*.yaml (generated)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tools"))
import envs as envs_tool  # noqa: E402
from lock import read_lock  # noqa: E402


@pytest.fixture(scope="module")
def project(root) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def requirements(project: dict) -> list[Requirement]:
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_envs_are_generated_from_the_lock(root):
    proc = subprocess.run([sys.executable, "tools/envs.py", "--check"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_stale_env_is_caught(root, tmp_path):
    envs = tmp_path / "envs"
    envs.mkdir()
    lock = read_lock(root / "requirements" / "lock.txt")
    for name in envs_tool.SPECS:
        (envs / f"{name}.yaml").write_text(envs_tool.render(name, lock))
    assert envs_tool.differences(root / "requirements" / "lock.txt", envs) == []
    stale = (envs / "scvi.yaml").read_text().replace(f"scvi-tools=={lock['scvi-tools']}", "scvi-tools==1.0.0")
    (envs / "scvi.yaml").write_text(stale)
    (envs / "extra.yaml").write_text("dependencies: []\n")
    problems = envs_tool.differences(root / "requirements" / "lock.txt", envs)
    assert any("scvi.yaml: differs" in p for p in problems) and any("extra.yaml: not generated" in p for p in problems)


def test_pyproject_has_ranges_not_pins(project):
    assert project["requires-python"] == ">=3.11"
    for req in requirements(project):
        assert not any(s.operator in ("==", "===", "~=") for s in req.specifier), f"{req}: exact pin in pyproject.toml"
        assert any(s.operator == ">=" for s in req.specifier), f"{req}: no lower bound"


def test_lock_satisfies_pyproject_and_pins_every_dependency(root, project):
    lock = read_lock(root / "requirements" / "lock.txt")
    for req in requirements(project):
        version = lock.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} missing from requirements/lock.txt; run python tools/lock.py"
        assert req.specifier.contains(Version(version), prereleases=True), f"lock {req.name}=={version} outside {req}"
    assert "+" not in lock["torch"]  # the local label would refuse PyPI's build of the same release


def test_readme_and_ci_install_from_the_lock(root):
    command = 'python -m pip install -e ".[test]" -c requirements/lock.txt'
    assert command in (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert command in ci and "python -m pytest" in ci
