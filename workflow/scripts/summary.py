"""Rules paper_comparison and summary_markdown."""

import logging

import pandas as pd

from fmextract import logs
from fmextract.io import atomic_path, write_tsv

logs.start(snakemake)
log = logging.getLogger("summary")
rule = snakemake.rule
# the paper's values as it prints them (their decimals set ours in summary.md)
tables = {name: pd.read_csv(path, sep="\t", dtype={"paper": str}) for name, path in snakemake.input.items()
          if name != "figures"}

if rule == "paper_comparison":
    from fmextract.comparison import compare

    figures = pd.read_csv(snakemake.input.figures, sep="\t", dtype=str)
    table, skipped = compare(figures, tables)
    log.info("%d of %d paper figures computed; not computable from this run's tables: %s", len(table), len(figures),
             ", ".join(skipped) or "none")
    write_tsv(table, snakemake.output[0])

elif rule == "summary_markdown":
    from fmextract.summary import render

    text = render(tables, reference=snakemake.params.reference, title=snakemake.params.title)
    with atomic_path(snakemake.output[0]) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
    log.info("wrote %s (%d lines)", snakemake.output[0], text.count("\n"))
