"""Render the README's demo numbers from a run's summary.md, so the README never carries hand-copied numbers.

The block between `<!-- demo-numbers:start -->` and `<!-- demo-numbers:end -->` in README.md is rewritten from the
summary (default: docs/demo/summary.md, a committed copy of a clean demo run's results/summary.md):

    python tools/readme_numbers.py                                  # rewrite the block from docs/demo/summary.md
    python tools/readme_numbers.py --summary results/summary.md     # from a fresh run (then copy it to docs/demo/)
    python tools/readme_numbers.py --check                          # exit 1 if the block disagrees with the summary

tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-numbers:start -->", "<!-- demo-numbers:end -->"
#: columns of summary.md's benchmark table the README shows (the rest stay in summary.md)
BENCHMARK_COLUMNS = ["method", "family", "stage bal. acc.", "branch bal. acc.", "CD4/CD8 AUROC", "mono/macro AUROC",
                     "|ρ| pseudotime"]
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def sections(text: str) -> dict[str, str]:
    """summary.md's `## ` sections: heading -> body."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2])}


def section(text: str, prefix: str) -> str:
    """The body of the section whose heading starts with `prefix`; a one-line error names the missing heading."""
    for heading, body in sections(text).items():
        if heading.startswith(prefix):
            return body
    raise SystemExit(f"readme_numbers: the summary has no section '## {prefix}…'; render it with rule summary_markdown")


def table(body: str) -> list[dict[str, str]]:
    """The first Markdown table of a section as rows of {column: cell text}."""
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise SystemExit("readme_numbers: a summary section has no table; render it with rule summary_markdown")
    cells = [[c.strip() for c in CELL_SPLIT.split(line.strip("|"))] for line in lines]
    header = [c.replace("\\|", "|") for c in cells[0]]
    return [dict(zip(header, row)) for row in cells[2:]]


def markdown(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A Markdown table of `columns` (text left-aligned, numbers right-aligned, as summary.md)."""
    head = "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"
    rule = "|" + "|".join(":---" if c in ("method", "family", "panel") else "---:" for c in columns) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(r[c] for c in columns) + " |" for r in rows)])


def render(summary: str, source: str) -> str:
    """The README block: split count, the benchmark means, the paper family's tally and the manifold verdicts."""
    splits = re.search(r"Up to (\d+) donor-holdout splits", summary)
    bench = table(section(summary, "Benchmark: mean over splits"))
    counts = {r["family"]: r for r in table(section(summary, "Statistics by BH family"))}
    verdicts = table(section(summary, "Manifold validation verdicts"))
    paper = counts.get("paper")
    tally = (f"In the paper's BH family `extracted` is better than a baseline in {paper['reference_better']} of "
             f"{paper['comparisons']} comparisons and worse in {paper['reference_worse']} (q < 0.05)." if paper else "")
    adaptors = list(dict.fromkeys(r.get("adaptor", "") for r in verdicts))
    lines = []
    for adaptor in adaptors:
        rows = [r for r in verdicts if r.get("adaptor", "") == adaptor]
        panels = {v: ", ".join(f"`{r['panel']}`" for r in rows if (r["verdict passes"] == "yes") == (v == "pass"))
                  for v in ("pass", "fail")}
        which = f" ({adaptor}-trained adaptor)" if adaptor else ""
        lines.append(f"Manifold verdicts{which}, every gate must pass — pass: {panels['pass'] or 'none'}; "
                     f"fail: {panels['fail'] or 'none'}.")
    return "\n".join([
        f"Rendered by `tools/readme_numbers.py` from `{source}` ({splits.group(1) if splits else '?'} donor-holdout "
        "splits); mean over splits:",
        "",
        markdown(bench, [c for c in BENCHMARK_COLUMNS if c in bench[0]]),
        "",
        tally,
        *lines,
    ])


def replace_block(readme: str, block: str) -> str:
    """README text with the marked block replaced."""
    if START not in readme or END not in readme:
        raise SystemExit(f"readme_numbers: README.md has no {START} … {END} block")
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or --check) the README block from a summary.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, default=ROOT / "docs" / "demo" / "summary.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the block disagrees with the summary")
    args = parser.parse_args(argv)
    source = args.summary.resolve()
    shown = source.relative_to(ROOT).as_posix() if source.is_relative_to(ROOT) else str(args.summary)
    if not args.summary.is_file():
        raise SystemExit(f"readme_numbers: {args.summary} does not exist; run the demo (snakemake --cores all) and "
                         "copy results/summary.md there, or pass --summary")
    readme = args.readme.read_text()
    updated = replace_block(readme, render(args.summary.read_text(), shown))
    if args.check:
        if updated != readme:
            print(f"readme_numbers: {args.readme} disagrees with {shown}; run python tools/readme_numbers.py",
                  file=sys.stderr)
            return 1
        return 0
    if updated != readme:
        args.readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
