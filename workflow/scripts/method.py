"""Rule run_method: run workflow/methods/<method>.py on one split (or all of them: splits.jobs: all_in_one) and score
it, within the job's own deadline."""

import logging
import threading
import time

from fmextract import deadline, logs, methods
from fmextract.chunks import open_backed
from fmextract.io import read_tsv, write_json, write_tsv
from fmextract.metrics import metrics_table
from fmextract.splits import job_splits

logs.start(snakemake)
log = logging.getLogger("method")
method, spec, seed = snakemake.wildcards.method, snakemake.params.spec, snakemake.params.seed
metrics_of, info_of = dict(job_splits(snakemake.output.metrics)), dict(job_splits(snakemake.output.info))
started: dict[str, float] = {}  # split -> when its run began
written: set[str] = set()
writing = threading.Lock()  # the watchdog and the main thread never write the same split's outputs


def write_outputs(split: str, record: dict, values: dict, parameters: list, error: Exception | None = None) -> None:
    """One split's metrics table and its JSON (status, error, seconds, parameters), each written atomically."""
    record = dict(record, **({"error": f"{type(error).__name__}: {error}"[:500]} if error is not None else {}))
    table = metrics_table([{"split": split, "method": method, "endpoint": k, "value": v} for k, v in values.items()])
    log.info("%s:\n%s", split, table.to_string(index=False))
    write_tsv(table, metrics_of[split])
    seconds = {k: round(record.pop(k, 0.0), 3) for k in ("method_seconds", "split_seconds")}
    write_json({**record, "status": "failed" if error is not None else "ok", **seconds, "parameters": parameters},
               info_of[split])
    written.add(split)


def on_timeout(exc: Exception) -> None:
    """The last attempt ran out of time: every split without outputs is recorded as timed out."""
    with writing:
        for split in metrics_of:
            if split not in written:
                elapsed = time.perf_counter() - started.get(split, time.perf_counter())
                write_outputs(split, {"method": method, "split": split, "kind": spec["kind"],
                                      "method_seconds": elapsed, "split_seconds": elapsed}, {}, [], exc)


watchdog = deadline.Deadline(
    snakemake.params.deadline_fraction * snakemake.resources.runtime * 60, attempt=snakemake.resources.attempt,
    retries=snakemake.params.retries, what=f"{method} on {', '.join(metrics_of) if len(metrics_of) < 4 else f'{len(metrics_of)} splits'}",
    on_last=on_timeout,
).start()


def run_split(module, panel, splits, split: str) -> tuple[dict, dict, list, Exception | None]:
    """The method on one split: (info record, metric values, parameter rows, the error it raised or None)."""
    start = started[split] = time.perf_counter()
    info = {"method": method, "split": split, "kind": spec["kind"]}
    expression = methods.reads_expression(module)
    train, test, truth = methods.split_views(panel, splits, split, max_train_cells=snakemake.params.max_train_cells,
                                             seed=seed, expression=expression)
    log.info("%s on %s: %d train cells, %d test cells (%d test donors)%s", method, split, train.n_obs, test.n_obs,
             truth["donor"].nunique(), "" if expression else "; reads its cached inputs only, no expression")
    params = {**spec.get("params", {}), "inputs": {key: snakemake.input[key] for key in spec.get("inputs", {})},
              "seed": seed, "threads": snakemake.threads, "subtypes": snakemake.params.subtypes, "split": split}
    if spec.get("sees_truth", False):
        params["truth"] = truth  # declared prior information of a control method (config: sees_truth)
    info.update(n_train=int(train.n_obs), n_test=int(test.n_obs),
                mode=module.mode(params) if callable(getattr(module, "mode", None)) else "")
    called = time.perf_counter()
    try:
        out = getattr(module, methods.KIND_FUNCTION[spec["kind"]])(train, test, params)
        info["method_seconds"] = time.perf_counter() - called
        checked = methods.check_output(spec["kind"], out, train, test, method)
        values, n_params = methods.evaluate(spec["kind"], checked, train, truth, subtypes=snakemake.params.subtypes,
                                            seed=seed)
        once = module.fitted_once(params) if callable(getattr(module, "fitted_once", None)) else {}
        result = values, methods.parameter_rows(spec["kind"], checked, n_params, once), None
    except Exception as exc:  # a method failing on one split must not cost the campaign: recorded, pairs dropped later
        if snakemake.params.fail_fast:
            raise
        log.exception("%s failed on %s; recorded as failed (config methods_fail_fast: true stops the run instead)",
                      method, split)
        info.setdefault("method_seconds", time.perf_counter() - called)
        result = {}, [], exc
    info["split_seconds"] = time.perf_counter() - start
    return (info, *result)


module = methods.load_method(snakemake.input.code, spec["kind"])
splits = read_tsv(snakemake.input.splits)
with open_backed(snakemake.input.h5ad) as panel:  # only a split's rows are read (none for cache-only methods)
    for split in metrics_of:
        info, values, parameters, error = run_split(module, panel, splits, split)
        with writing:
            write_outputs(split, info, values, parameters, error)
watchdog.finish()
