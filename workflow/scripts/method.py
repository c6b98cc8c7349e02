"""Rule run_method: run workflow/methods/<method>.py on one split and score it (within its own deadline)."""

import logging
import time

from fmextract import deadline, logs, methods
from fmextract.chunks import open_backed
from fmextract.io import read_tsv, write_json, write_tsv
from fmextract.metrics import metrics_table

logs.start(snakemake)
log = logging.getLogger("method")
method, split = snakemake.wildcards.method, snakemake.wildcards.split
spec = snakemake.params.spec
seed = snakemake.params.seed
info = {"method": method, "split": split, "kind": spec["kind"]}
start = time.perf_counter()


def write_outputs(values: dict, parameters: list, error: Exception | None = None) -> None:
    """The split's metrics table and its JSON (status, error, seconds, parameters), each written atomically."""
    record = dict(info, **({"error": f"{type(error).__name__}: {error}"[:500]} if error is not None else {}))
    table = metrics_table([{"split": split, "method": method, "endpoint": k, "value": v} for k, v in values.items()])
    log.info("\n%s", table.to_string(index=False))
    write_tsv(table, snakemake.output.metrics)
    seconds = record.pop("method_seconds", time.perf_counter() - start)  # the method call alone when it returned
    write_json({**record, "status": "failed" if error is not None else "ok", "method_seconds": round(seconds, 3),
                "parameters": parameters}, snakemake.output.info)


watchdog = deadline.Deadline(
    snakemake.params.deadline_fraction * snakemake.resources.runtime * 60, attempt=snakemake.resources.attempt,
    retries=snakemake.params.retries, what=f"{method} on {split}", on_last=lambda exc: write_outputs({}, [], exc),
).start()

module = methods.load_method(snakemake.input.code, spec["kind"])
expression = methods.reads_expression(module)
with open_backed(snakemake.input.h5ad) as panel:  # only this split's rows are read (none for cache-only methods)
    train, test, truth = methods.split_views(
        panel, read_tsv(snakemake.input.splits), split, max_train_cells=snakemake.params.max_train_cells, seed=seed,
        expression=expression,
    )
log.info("%s on %s: %d train cells, %d test cells (%d test donors)%s", method, split, train.n_obs, test.n_obs,
         truth["donor"].nunique(), "" if expression else "; reads its cached inputs only, no expression")
params = {**spec.get("params", {}), "inputs": {key: snakemake.input[key] for key in spec.get("inputs", {})},
          "seed": seed, "threads": snakemake.threads, "subtypes": snakemake.params.subtypes, "split": split}
if spec.get("sees_truth", False):
    params["truth"] = truth  # declared prior information of a control method (config: sees_truth)
info.update(n_train=int(train.n_obs), n_test=int(test.n_obs),
            mode=module.mode(params) if callable(getattr(module, "mode", None)) else "")
start = time.perf_counter()
error = None
try:
    out = getattr(module, methods.KIND_FUNCTION[spec["kind"]])(train, test, params)
    info["method_seconds"] = time.perf_counter() - start
    checked = methods.check_output(spec["kind"], out, train, test, method)
    values, n_params = methods.evaluate(spec["kind"], checked, train, truth, subtypes=snakemake.params.subtypes, seed=seed)
    once = module.fitted_once(params) if callable(getattr(module, "fitted_once", None)) else {}
    parameters = methods.parameter_rows(spec["kind"], checked, n_params, once)
except Exception as exc:  # a method failing on one split must not cost the campaign: recorded, pairs dropped later
    if snakemake.params.fail_fast:
        raise
    log.exception("%s failed on %s; recorded as failed (config methods_fail_fast: true stops the run instead)", method, split)
    values, parameters, error = {}, [], exc
if watchdog.finish():  # else the deadline fired meanwhile and writes the outputs itself
    write_outputs(values, parameters, error)
