"""The Snakefile and workflow/rules/*.smk are formatted with snakefmt (line length from pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def test_snakefmt_check(root):
    snakefmt = shutil.which("snakefmt")
    if snakefmt is None:
        pytest.fail("snakefmt is not installed; install the test extra: pip install -e '.[test]' -c requirements/lock.txt")
    files = ["Snakefile", *sorted(str(p.relative_to(root)) for p in (root / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run([snakefmt, "--check", *files], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"run `snakefmt {' '.join(files)}`:\n{proc.stdout}{proc.stderr}"


def test_snakefmt_check_catches_bad_formatting(root, tmp_path):
    (tmp_path / "pyproject.toml").write_text((root / "pyproject.toml").read_text())
    (tmp_path / "Snakefile").write_text('rule a:\n  output: "x"\n  shell: "touch {output}"\n')
    proc = subprocess.run(["snakefmt", "--check", "Snakefile"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
