"""Rule report_table: one results table as an HTML page with its caption, for the Snakemake report."""

import pandas as pd

from fmextract import logs
from fmextract.io import atomic_path
from fmextract.report import table_html, table_view

logs.start(snakemake)
name = snakemake.wildcards.table
table = pd.read_csv(snakemake.input.table, sep="\t", dtype={"paper": str})  # the paper's values as it prints them
shown, classes = table_view(name, table)
page = table_html(shown, title=name.replace("_", " ").capitalize(), caption=snakemake.params.caption,
                  source=snakemake.input.table, classes=classes)
with atomic_path(snakemake.output.html) as tmp, open(tmp, "w") as fh:
    fh.write(page)
