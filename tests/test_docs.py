"""The documentation: config/README.md documents every config key; the catalog file, CITATION.cff, LICENSE and
profiles/README.md are well-formed; nothing points outside the repository or at a file that does not exist; the
README is short and its demo numbers agree with the committed docs/demo/summary.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

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


#: The team's working notes, which live outside the repository: nothing a user clones may point at them.
OUTSIDE_NOTES = ("METHOD.md", "DEMO_MODEL.md", "PAPER_FIGURES.md", "TS_V2_LABELS.md", "ARCHITECTURE.md", "STYLE.md",
                 "../shared")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:docs|resources|config)/[\w./-]*[\w/])")


def tracked_files(root: Path) -> list[Path]:
    """Files of the repository: `git ls-files` in a checkout, else every file outside ignored and hidden folders."""
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout:
        return [root / name for name in proc.stdout.split("\0") if name and (root / name).is_file()]
    skip = {"results", "__pycache__", "build"}
    return [p for p in root.rglob("*") if p.is_file()
            and not any(d in skip or d.startswith(".") for d in p.relative_to(root).parts[:-1])]


def read_text(path: Path) -> str | None:
    """A file's text, or None for a binary file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def documentation_files(root: Path) -> list[Path]:
    """Where references are checked: README, docs/, config/, src/, workflow/, Snakefile, profiles/, benchmarks/, resources/."""
    tops = ("docs", "config", "src", "workflow", "profiles", "benchmarks")
    return [p for p in tracked_files(root) if p.relative_to(root).parts[0] in tops
            or p.relative_to(root).as_posix() in ("README.md", "Snakefile")
            or (p.relative_to(root).parts[0] == "resources" and p.suffix in (".md", ".tsv"))]


def made_by_the_pipeline(root: Path) -> set[str]:
    """Folders the pipeline downloads into (every config's `downloads.<name>.path`): mentioned, never committed."""
    out = set()
    for cfg in (root / "config").glob("*.yaml"):
        for spec in (yaml.safe_load(cfg.read_text()) or {}).get("downloads", {}).values():
            out.add(str(PurePosixPath(spec["path"]).parent))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """Anchors of every heading of a Markdown file."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def test_nothing_points_outside_the_repository(root):
    """No tracked file outside tests/ cites the team's working notes or ../shared (users do not have them)."""
    found = []
    for path in tracked_files(root):
        rel = path.relative_to(root)
        text = read_text(path) if rel.parts[0] != "tests" else None
        found += [f"{rel}: {note}" for note in OUTSIDE_NOTES if text and note in text]
    assert not found, "references to files outside the repository: " + "; ".join(found)


def missing_references(root: Path, files: list[Path]) -> list[str]:
    """`file: reference` for every relative Markdown link (and its #anchor) and every docs/, resources/, config/ path
    named in `files` that does not exist under `root` (download destinations excepted)."""
    downloads = made_by_the_pipeline(root)
    missing = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        rel = path.relative_to(root).as_posix()
        targets = []
        if path.suffix == ".md":
            for link in MD_LINK.findall(text):
                if re.match(r"[a-z]+:", link):
                    continue
                name, _, anchor = link.partition("#")
                targets.append(((path.parent / name).resolve() if name else path, anchor, link))
        for mention in REPO_PATH.findall(text):
            if not {mention.rstrip("/"), mention.rstrip("/").rsplit("/", 1)[0]} & downloads:
                targets.append(((root / mention).resolve(), "", mention))
        for target, anchor, shown in targets:
            name = target.relative_to(root).as_posix() if target.is_relative_to(root) else str(target)
            if not target.exists():
                missing.append(f"{rel}: {shown}")
            elif anchor and target.suffix == ".md" and anchor not in anchors_of(target):
                missing.append(f"{rel}: {shown} (no such heading)")
    return sorted(set(missing))


def test_every_referenced_file_exists(root):
    """Every file the docs, configs, code and workflow point at exists in the repository."""
    missing = missing_references(root, documentation_files(root))
    assert not missing, "references to files that do not exist: " + "; ".join(missing)


def test_a_reference_to_a_missing_file_is_caught(tmp_path):
    """The checker reports a dead link, a dead #anchor and a dead path mention, and accepts live ones."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some section\n")
    (tmp_path / "README.md").write_text("[ok](docs/a.md#some-section) [gone](docs/b.md) [bad](docs/a.md#nope)\n"
                                        "see `config/missing.yaml` and docs/a.md\n")
    assert missing_references(tmp_path, [tmp_path / "README.md"]) == [
        "README.md: config/missing.yaml", "README.md: docs/a.md#nope (no such heading)", "README.md: docs/b.md"]


def test_docs_contents_lists_every_page(root):
    """docs/README.md links every page of docs/."""
    contents = (root / "docs" / "README.md").read_text()
    linked = {f"docs/{name}" for name in MD_LINK.findall(contents)}
    pages = {p.relative_to(root).as_posix() for p in (root / "docs").glob("*.md")} - {"docs/README.md"}
    assert pages <= linked, f"docs/README.md does not list: {sorted(pages - linked)}"


def test_documented_commands_keep_targets_out_of_configfile(root):
    """Snakemake reads every word after --configfile as a config file: a documented command names only .yaml files
    there (targets go before --configfile or after `--`)."""
    bad = []
    pages = [root / "README.md", root / "config" / "README.md", root / "profiles" / "README.md",
             *(root / "docs").glob("*.md")]
    for page in pages:
        for line in page.read_text().splitlines():
            for cmd in re.findall(r"snakemake [^`#\n]*--configfile [^`#\n]*", line):
                words = cmd.split("--configfile", 1)[1].split()
                files = words[: next((i for i, w in enumerate(words) if w.startswith("-")), len(words))]
                yamls = [w.strip("[]()").endswith((".yaml", ".yml")) for w in files]
                bad += [f"{page.relative_to(root)}: {cmd.strip()}"] * (not all(yamls))
    assert not bad, "targets read as config files: " + "; ".join(bad)


def test_profile_docs_name_every_gpu_rule(root):
    """profiles/README.md and docs/cluster.md name every rule the SLURM profile gives a GPU."""
    profile = yaml.safe_load((root / "profiles" / "slurm" / "config.yaml").read_text())
    gpu_rules = {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}
    for page in ("profiles/README.md", "docs/cluster.md"):
        text = (root / page).read_text()
        assert gpu_rules and all(f"`{rule}`" in text for rule in gpu_rules), f"{page} must name {sorted(gpu_rules)}"


README_MAX_LINES = 250


def test_readme_is_short_and_lists_the_docs(root):
    """The README stays a front page (≤ 250 lines) and links the docs/ contents."""
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES and "docs/README.md" in readme


def test_readme_demo_numbers_agree_with_the_committed_summary(root):
    """The README's demo numbers are rendered from docs/demo/summary.md by tools/readme_numbers.py, not copied."""
    proc = subprocess.run([sys.executable, "tools/readme_numbers.py", "--check"], cwd=root, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_numbers_check_catches_a_changed_number(root, tmp_path):
    """A number edited by hand inside the block (or a summary that moved on) fails the check."""
    readme = (root / "README.md").read_text()
    start, end = readme.index("<!-- demo-numbers:start -->"), readme.index("<!-- demo-numbers:end -->")
    block = readme[start:end]
    edited = re.sub(r"\| (\d)\.(\d)", lambda m: f"| {m.group(1)}.{(int(m.group(2)) + 1) % 10}", block, count=1)
    assert edited != block
    (tmp_path / "README.md").write_text(readme[:start] + edited + readme[end:])
    cmd = [sys.executable, "tools/readme_numbers.py", "--check", "--readme", str(tmp_path / "README.md")]
    assert subprocess.run(cmd, cwd=root, capture_output=True, text=True).returncode == 1
