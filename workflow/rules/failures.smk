# Failed method jobs: results/tables/failures.tsv (also in the report); a method that failed on every split fails
# the run with one line; every failure is listed again at the end of the run (onsuccess / onerror).
import sys

from fmextract import failures


def method_jobs():
    """(info JSON, log) of every method × split job of this config."""
    info, log = rules.run_method.output.info, rules.run_method.log[0]
    return [(info.format(method=m, split=s), log.format(method=m, split=s)) for m, s in METHOD_SPLITS]


rule method_failures:
    input:
        info=[info for info, _ in method_jobs()],
    output:
        table="results/tables/failures.tsv",
    log:
        "results/logs/method_failures.log",
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=10,
    params:
        logs=[log for _, log in method_jobs()],
    script:
        "../scripts/failures.py"


def print_failure_summary():
    """The failed method jobs of this run, printed after Snakemake's own summary (stderr)."""
    for line in failures.summary(*failures.failed_jobs(method_jobs())):
        print(line, file=sys.stderr)


onsuccess:
    print_failure_summary()


onerror:
    print_failure_summary()
