"""Rule method_failures: list the failed method jobs; a method that failed on every split fails the run."""

import logging

from fmextract import failures, logs
from fmextract.io import write_tsv

logs.start(snakemake)
log = logging.getLogger("failures")
table, totals = failures.failed_jobs(zip(snakemake.input.info, snakemake.params.logs))
for line in failures.summary(table, totals):
    log.warning(line)
everywhere = failures.failed_everywhere(table, totals)
if everywhere:  # nothing to compare for these methods: the run must not end "100% done"
    raise SystemExit("\n".join(everywhere.values()))
log.info("%d failed method job(s) of %d", len(table), int(totals.sum()))
write_tsv(table, snakemake.output.table)
