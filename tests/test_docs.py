"""The files a Snakemake workflow is expected to carry: config/README.md documents every config key, the catalog
file, CITATION.cff, LICENSE and profiles/README.md are present and well-formed."""

from __future__ import annotations

import re

import pytest
import yaml


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf key in the schema (`<name>` for user-named entries)."""
    defs = schema.get("definitions", {})
    out = []
    for key, spec in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "$ref" in spec:
            spec = defs[spec["$ref"].split("/")[-1]]
        extra = spec.get("additionalProperties")
        if "properties" not in spec and not (isinstance(extra, dict) and ({"properties", "$ref"} & set(extra))):
            out.append(path)
        else:
            out += schema_keys({**spec, "definitions": defs}, f"{path}.")
            extra = spec.get("additionalProperties")
            if isinstance(extra, dict):
                if "$ref" in extra:
                    extra = defs[extra["$ref"].split("/")[-1]]
                out += schema_keys({**extra, "definitions": defs}, f"{path}.<name>.")
    return out


def test_config_readme_documents_every_key(root):
    schema = yaml.safe_load((root / "config" / "schema.yaml").read_text())
    readme = (root / "config" / "README.md").read_text()
    ticked = re.findall(r"`([^`]+)`", readme)
    missing = []
    for path in schema_keys(schema):
        section, leaf = path.split(".")[0], path.split(".")[-1]
        has_leaf = any(re.search(rf"(^|[.(]){re.escape(leaf)}$", t) or t == leaf for t in ticked)
        if not (has_leaf and any(t.startswith(section) for t in ticked)):
            missing.append(path)
    assert not missing, f"config/README.md does not document: {', '.join(missing)}"


def test_catalog_citation_license_profiles(root):
    catalog = yaml.safe_load((root / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["mandatory-flags"]["flags"] == "--cores all" and catalog["usage"]["report"] is True
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["type"] == "software"
    assert any("2603.10261" in str(ref.get("identifiers", "")) + str(ref.get("url", "")) for ref in cff["references"])
    assert (root / "LICENSE").read_text().startswith("MIT License")
    profiles = (root / "profiles" / "README.md").read_text()
    for name in ("default", "conda", "slurm"):
        assert (root / "profiles" / name / "config.yaml").exists() and f"profiles/{name}" in profiles


@pytest.mark.parametrize("name", ["Snakefile"])
def test_min_version_is_at_the_top_of_the_snakefile(root, name):
    code = [line for line in (root / name).read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert code[:2] == ["from snakemake.utils import min_version", 'min_version("9.0")']
