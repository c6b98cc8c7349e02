# Failed method jobs: results/tables/failures.tsv (also in the report); a method that failed on every split fails
# the run with one line; every failure is listed again at the end of the run (onsuccess / onerror), and so is every
# input error of the run (one line each: the file, the config key, the fix).
import sys
import time

from fmextract import failures, logs

#: when this run started: input errors recorded since then are repeated at its end
RUN_START = time.time()

#: (info JSON, log) of every method x split job of this config
METHOD_JOBS = [
    (f"results/methods/{m}/{s}.json", rules.run_method.log[0].format(method=m, split=s)) for m, s in METHOD_SPLITS
]


rule method_failures:
    input:
        info=[info for info, _ in METHOD_JOBS],
    output:
        table="results/tables/failures.tsv",
    log:
        "results/logs/method_failures.log",
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        logs=[log for _, log in METHOD_JOBS],
    script:
        "../scripts/failures.py"


onsuccess:
    failures.print_summary(METHOD_JOBS, file=sys.stderr)


onerror:
    failures.print_summary(METHOD_JOBS, file=sys.stderr)
    for line in logs.input_errors_since(RUN_START):
        print(line, file=sys.stderr)
