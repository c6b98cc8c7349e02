"""Rule report_table: one results table as an HTML page with its caption, for the Snakemake report."""

from fmextract import logs
from fmextract.io import atomic_path, read_tsv
from fmextract.report import table_html

logs.start(snakemake)
name = snakemake.wildcards.table
page = table_html(read_tsv(snakemake.input.table), title=name.replace("_", " ").capitalize(),
                  caption=snakemake.params.caption, source=snakemake.input.table)
with atomic_path(snakemake.output.html) as tmp, open(tmp, "w") as fh:
    fh.write(page)
