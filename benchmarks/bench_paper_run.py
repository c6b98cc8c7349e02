"""What the paper run costs: config/paper.yaml's DAG at full shape on stand-ins, every rule measured or extrapolated.

The real Snakefile runs in a copy of the workflow (`--workdir`) on:

- CELLxGENE-layout stand-ins (`fmextract.standin`) at the atlases' shape: a 564,253-cell Tabula Sapiens v2
  reference and a 329,762-cell immune atlas, `--genes` genes each (counts in raw.X, normalised X, real obs columns);
- a random checkpoint of scGPT whole-human's layout (12 layers, 8 heads, 512-d, flash-era `Wqkv` keys, a
  60,697-token vocabulary holding the stand-ins' genes) at `resources/scgpt_human/`, its digests pinned in a config
  layer exactly as the real files' are.

Every one-time job runs at full shape, and one split (`split000`, an all-method split with the 100k training-cell
cap) of every per-split rule. Where a full-shape run is out of reach on a CPU, a sample is measured and
extrapolated, and the table says so: the scGPT forward passes (operator export with `--n-context` instead of
2,000 context cells; the frozen-embedding cache on `--embed-cells` cells, then a random cache of the right shape so
the DAG can go on) and scVI (`--scvi-epochs` epochs, then scaled to scvi-tools' heuristic epochs). Per-split rules
are multiplied by their job count in the full plan (`snakemake -n`). Each job's wall time and peak RSS come from its
Snakemake `benchmark:` file; its declared `mem_mb` and `runtime` from the plan.

`--only ROW ...` measures just those rows (e.g. `--only "run_method celltypist" factor_core_split embed_cells`) and
merges them into the existing `--out` table, whose other rows keep their earlier numbers (the table says which).
CPU seconds (user + system of each job) are reported next to wall: on a shared machine contention inflates wall only.

Usage: nice -n 10 python benchmarks/bench_paper_run.py --workdir /tmp/paper_run [--cores 2]   (~25 GB of disk, hours)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCAB_SIZE = 60_697  # scGPT whole-human's vocabulary
ARCH = dict(nlayers=12, nhead=8, d_model=512, d_hid=512, n_bins=51)
SHAPES = {"reference": 564_253, "immune": 329_762}
ONE_SPLIT = "split000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workdir", type=Path, required=True, help="the workflow copy, stand-ins and results (kept; reused)")
    p.add_argument("--genes", type=int, default=20_000, help="genes of each stand-in (default: 20,000)")
    p.add_argument("--reference-cells", type=int, default=SHAPES["reference"])
    p.add_argument("--immune-cells", type=int, default=SHAPES["immune"])
    p.add_argument("--n-context", type=int, default=8, help="context cells of each forward-pass export (paper: 2,000)")
    p.add_argument("--embed-cells", type=int, default=200, help="cells embedded to measure the cache's rate")
    p.add_argument("--embed-tokens", type=int, default=200,
                   help="non-zero panel genes per sampled cell (a real 1,200-gene panel: ~200; the stand-in has ~54)")
    p.add_argument("--labels", choices=["ts_v2", "mixed"], default="ts_v2",
                   help="the reference stand-in's labels (ts_v2: Tabula Sapiens v2's donors, tissues and label "
                        "frequencies, docs/labels.md; mixed: fine labels with a share of coarse ones)")
    p.add_argument("--scvi-epochs", type=int, default=2, help="scVI epochs run (then scaled to the heuristic)")
    p.add_argument("--skip-methods", nargs="*", default=[], help="methods whose split job is not run (too slow here)")
    p.add_argument("--panel-cells", type=int, default=None,
                   help="cells the embedding cache's per-cell rate is extrapolated to (default: the stand-in panel's)")
    p.add_argument("--only", nargs="*", default=[],
                   help="measure only these table rows (e.g. 'run_method celltypist' factor_core_split embed_cells) "
                        "and merge them into the existing --out table; the other rows keep their earlier numbers")
    p.add_argument("--reuse-plan", action="store_true", help="read the plan of an earlier run (workdir/plan.json)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--inputs-only", action="store_true", help="write the stand-ins and the checkpoint, then stop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "paper_run.md", help="Markdown table")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (contention on a shared machine inflates wall, not these)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def denser(sample, tokens: int, seed: int):
    """The sample with at least `tokens` non-zero panel genes per cell (extra genes get a count of 1 at random), the
    token density of a real 1,200-gene panel, where the stand-in's filler genes are sparser."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = sample.layers["counts"]
    dense = np.asarray(counts.toarray() if sp.issparse(counts) else counts, dtype=np.float32)
    for row in dense:
        zeros = np.flatnonzero(row == 0)
        need = min(len(zeros), tokens - (len(row) - len(zeros)))
        if need > 0:
            row[rng.choice(zeros, size=need, replace=False)] = 1.0
    sample.layers["counts"] = sp.csr_matrix(dense)
    return sample


def timed(fn, *a, **kw) -> tuple[object, float, float]:
    """fn(*a, **kw) in this process: (result, wall seconds, peak RSS GB of this process so far)."""
    import resource

    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def copy_workflow(work: Path) -> Path:
    """The workflow as a user clones it; on a kept workdir the code is refreshed, generated inputs stay."""
    wf = work / "wf"
    wf.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "resources", "profiles", "envs"):
        src, dest = ROOT / name, wf / name
        if src.is_dir():
            if name != "resources":  # resources/ also holds the stand-ins and the checkpoint made below
                shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copy(src, dest)
    return wf


def standins(args: argparse.Namespace, wf: Path, paper: dict) -> dict:
    """The two atlases' stand-ins where the downloads would go; their sizes and generation times."""
    from fmextract.standin import N_IMMUNE_MISSING, write_standin

    out = {}
    for name, kind, n in (("tabula_sapiens_v2", "reference", args.reference_cells),
                          ("immune_atlas", "immune", args.immune_cells)):
        path = wf / paper["downloads"][name]["path"]
        # the immune stand-in draws N_IMMUNE_MISSING more genes and drops that many: the same filler genes this way
        n_genes = args.genes - (N_IMMUNE_MISSING if kind == "immune" else 0)
        if not path.exists():
            log(f"writing the {kind} stand-in: {n:,} cells x {n_genes:,} genes -> {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            write_standin(kind, path, n_cells=n, n_genes=n_genes, seed=args.seed, decontx=False,
                          resources=wf / "resources", **({"labels": args.labels} if kind == "reference" else {}))
            log(f"  {time.perf_counter() - start:.0f} s")
        out[name] = path
    return out


def checkpoint(args: argparse.Namespace, wf: Path, paper: dict) -> Path:
    """A random whole-human-layout checkpoint over the stand-ins' genes padded to 60,697 tokens, flash-era keys."""
    from fmextract.models.scgpt import build_demo_model, save_scgpt
    from fmextract.standin import standin_genes

    folder = wf / Path(paper["downloads"]["scgpt_weights"]["path"]).parent
    if (folder / "best_model.pt").exists():
        return folder
    genes = list(standin_genes(args.genes, resources=wf / "resources", seed=args.seed)["symbol"])
    genes += [f"TOKEN{i:05d}" for i in range(VOCAB_SIZE - 3 - len(genes))]  # + <pad>, <cls>, <eoc>
    model, vocab, cfg = build_demo_model(genes, seed=args.seed, dropout=0.2, **ARCH)
    cfg["max_seq_len"] = 1200  # whole-human's args.json
    save_scgpt(model, folder, vocab=vocab, args=cfg, flash_keys=True)
    log(f"checkpoint: {len(vocab):,} tokens, {sum(p.numel() for p in model.parameters()):,} parameters -> {folder}")
    return folder


def config_layer(args: argparse.Namespace, wf: Path, paper: dict, files: dict[str, Path]) -> Path:
    """The benchmark's config layer: stand-in and checkpoint digests pinned, the sampled settings."""
    import yaml

    from fmextract.download import sha256_file

    digests = {name: {"sha256": sha256_file(path)} for name, path in files.items()}
    for name in ("scgpt_args", "scgpt_vocab", "scgpt_weights"):
        digests[name] = {"sha256": sha256_file(wf / paper["downloads"][name]["path"])}
    layer = {"downloads": digests, "operators": {"n_context": args.n_context},
             "methods": {"scvi": {"params": {"max_epochs": args.scvi_epochs}}}}
    path = wf / "config" / "bench_paper_run.yaml"
    path.write_text(yaml.safe_dump(layer))
    return path


def snakemake(wf: Path, layers: list[str], *extra: str, cores: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra, "--configfile", *layers,
           "--rerun-triggers", "mtime"]  # last: both options take several values
    return subprocess.run(cmd, cwd=wf, capture_output=True, text=True)


def plan(wf: Path, layers: list[str]) -> list[dict]:
    """Every job of the full plan: rule, output, benchmark file, declared mem_mb and runtime."""
    proc = snakemake(wf, layers, "-n", "--forceall")
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n?)+)", proc.stdout + proc.stderr, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(2), re.M))
        res = dict(re.findall(r"(\w+)=([^,]+)", fields.get("resources", "")))
        jobs.append({"rule": m.group(1), "input": fields.get("input", ""), "output": fields.get("output", ""),
                     "benchmark": fields.get("benchmark"),
                     "wildcards": fields.get("wildcards", ""), "mem_mb": float(res.get("mem_mb", "nan")),
                     "runtime": float(res.get("runtime", "nan"))})
    return jobs


def targets(jobs: list[dict], skip_methods: list[str], only: list[str]) -> list[str]:
    """Every job's output except those of splits other than ONE_SPLIT, skipped methods and the whole-run aggregates
    (with `only`: just the outputs of those table rows; Snakemake makes what they need)."""
    skip = AGGREGATES
    out = []
    for j in jobs:
        split = re.search(r"split=(split\d{3})", j["wildcards"])
        method = re.search(r"method=(\w+)", j["wildcards"])
        if j["rule"] in skip or (split and split.group(1) != ONE_SPLIT) or (method and method.group(1) in skip_methods):
            continue
        if only and group(j) not in only:
            continue
        out += j["output"].split(", ")
    return sorted(set(out))


def core_inputs(wf: Path, jobs: list[dict]) -> None:
    """The leave-one-out factor tables of every split that factor_core_split ranks factors over, as copies of
    ONE_SPLIT's (measured): their content does not change the core job's cost, and 87 more ablation jobs would."""
    first = wf / "results" / "factors" / f"{ONE_SPLIT}.tsv"
    for j in jobs:
        if j["rule"] == "factor_ablation_split" and not (wf / j["output"]).exists():
            shutil.copy(first, wf / j["output"])


def embed_sample(args: argparse.Namespace, wf: Path) -> dict:
    """The frozen-embedding cache's rate on `--embed-cells` cells (the rule's code path, CPU), then a random cache of
    the whole panel's shape written where the rule writes it, so the split jobs can read it."""
    import numpy as np
    import torch

    from fmextract import cache
    from fmextract.chunks import open_backed
    from fmextract.models.scgpt import embed_to_cache, load_scgpt

    torch.set_num_threads(1)
    panel_path = wf / "results" / "data" / "benchmark.h5ad"
    model = load_scgpt(wf / "resources" / "scgpt_human", device="cpu")
    with open_backed(panel_path) as panel:
        sample = panel[: args.embed_cells].to_memory()
        names = list(panel.obs_names)
    standin_tokens = float((sample.layers["counts"] > 0).sum(axis=1).mean()) + 1  # expressed panel genes + <cls>
    sample = denser(sample, args.embed_tokens, args.seed)
    cpu = cpu_seconds()
    _, wall, rss = timed(embed_to_cache, model, sample, wf / "embed_sample.h5", seed=args.seed, progress=False)
    cpu = cpu_seconds() - cpu
    tokens = float((sample.layers["counts"] > 0).sum(axis=1).mean()) + 1
    rng = np.random.default_rng(args.seed)
    out = wf / "results" / "embeddings" / "trained" / "benchmark.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    blocks = (rng.normal(size=(min(50_000, len(names) - s), ARCH["d_model"])).astype(np.float32)
              for s in range(0, len(names), 50_000))
    cache.write(out, names, blocks, d=ARCH["d_model"], attrs={"benchmark": "random stand-in of the right shape"})
    rate = args.embed_cells / wall
    names = names if args.panel_cells is None else range(args.panel_cells)
    return {"cells": args.embed_cells, "wall_s": wall, "cpu_s": cpu, "peak_rss_gb": rss, "cells_per_s": rate,
            "tokens_per_cell": tokens, "standin_tokens_per_cell": standin_tokens, "panel_cells": len(names),
            "extrapolated_s": len(names) / rate}


def measured(wf: Path, jobs: list[dict]) -> list[dict]:
    """Jobs of the plan whose benchmark file exists, with its wall seconds and peak RSS (MB)."""
    import pandas as pd

    rows = []
    for j in jobs:
        path = wf / j["benchmark"] if j["benchmark"] else None
        if path is not None and path.exists():
            b = pd.read_csv(path, sep="\t").iloc[-1]
            info = [wf / f for f in j["output"].split(", ") if f.endswith(".json") and "/methods/" in f]
            cells = json.loads(info[0].read_text()) if info and info[0].exists() else {}
            rows.append({**j, "wall_s": float(b["s"]), "max_rss_mb": float(b["max_rss"]),
                         "cpu_s": float(b.get("cpu_time", float("nan"))),
                         "cells": (cells.get("n_train"), cells.get("n_test"), cells.get("mode"))})
    return rows


def group(job: dict) -> str:
    """The table row a job belongs to: its rule; per method for run_method; forward vs weights-only exports."""
    if job["rule"] == "run_method":
        return "run_method " + re.search(r"method=(\w+)", job["wildcards"]).group(1)
    if job["rule"] == "export_operators":
        forward = re.search(r"definition=(attention_prob|qk_raw)\b", job["wildcards"])
        return "export_operators " + ("(forward pass)" if forward else "(weights only)")
    return job["rule"]


#: columns of the table; a per-split job within budget runs <= 15 minutes on one core
COLUMNS = ["step", "jobs in the plan", "measured", "wall per job (s, mean / max)", "CPU per job (s)", "peak RSS (GB)",
           "mem_mb", "RSS < mem_mb", "runtime (min)", "per job <= 15 min", "whole run, wall (h)", "whole run, CPU (h)",
           "how"]
#: rules that gather every split (or fetch the inputs): cheap, and not measurable on one split
AGGREGATES = {"all", "collect", "stats", "method_failures", "runtime_summary", "compression_table", "factor_table",
              "figures", "paper_comparison", "summary_markdown", "report_table", "download", "verify_download",
              "report_html"}
#: the scGPT forward passes: GPU jobs on a real run, outside the 24 CPU-hour budget
FORWARD = ("embed_cells", "export_operators (forward pass)")
BUDGET_JOB_S, BUDGET_RUN_H = 15 * 60, 24


def rows(args: argparse.Namespace, jobs: list[dict], done: list[dict], embed: dict, scvi_epochs: float,
         max_train: int) -> dict:
    """step -> its table cells (COLUMNS), for every step with a measured job."""
    import pandas as pd

    full = pd.DataFrame(jobs).assign(group=lambda d: [group(j) for j in jobs])
    got = pd.DataFrame(done, columns=[*full.columns[:-1], "wall_s", "max_rss_mb", "cpu_s", "cells"])
    got["group"] = [group(j) for j in done]
    table = full.groupby("group").agg(jobs=("rule", "size"), mem_mb=("mem_mb", "max"), runtime=("runtime", "max"))
    table = table.join(got.groupby("group").agg(measured=("rule", "size"), wall=("wall_s", "mean"),
                                                wall_max=("wall_s", "max"), cpu=("cpu_s", "mean"),
                                                rss=("max_rss_mb", "max")), how="left")
    scale, notes = {}, {}
    scale["export_operators (forward pass)"] = 2000 / args.n_context
    notes["export_operators (forward pass)"] = (f"measured with {args.n_context} context cells; wall x 2,000/"
                                                f"{args.n_context} (an upper bound: start-up and model load scale too)")
    scale["run_method scvi"] = scvi_epochs / args.scvi_epochs
    notes["run_method scvi"] = f"{args.scvi_epochs} epochs measured; wall x {scvi_epochs:.0f}/{args.scvi_epochs} epochs"
    notes["factor_core_split"] = ("measured at full shape on split000; the other splits' leave-one-out tables it "
                                  "ranks factors over are copies of split000's (their content does not change its cost)")
    if embed:
        table.loc["embed_cells", ["measured", "wall", "wall_max", "cpu", "rss"]] = [
            1, embed["wall_s"], embed["wall_s"], embed.get("cpu_s", float("nan")), embed["peak_rss_gb"] * 1000]
        scale["embed_cells"] = embed["panel_cells"] / embed["cells"]
        notes["embed_cells"] = (f"{embed['cells']} cells measured at {embed['tokens_per_cell']:.0f} tokens/cell (a real "
                                f"panel's density; the stand-in has {embed.get('standin_tokens_per_cell', float('nan')):.0f}) "
                                f"= {embed['cells'] / embed.get('cpu_s', embed['wall_s']):.1f} cells per CPU-second, 1 "
                                f"thread; extrapolated per cell x {embed['panel_cells']:,} cells (a GPU job on a real run)")
    for name, cells in got.groupby("group")["cells"].first().items():
        if not (name.startswith("run_method") and isinstance(cells, tuple) and cells[0]):
            continue
        mode = f", mode {cells[2]}" if cells[2] else ""
        if cells[0] < max_train:  # a smaller stand-in: per training cell up to the cap (training dominates)
            scale[name] = max_train / cells[0]
            notes[name] = (f"measured on {ONE_SPLIT} with {cells[0]:,} training cells, {cells[1]:,} test cells{mode}; "
                           f"derived per training cell x {max_train:,}/{cells[0]:,}")
        elif args.only:
            notes[name] = f"measured on {ONE_SPLIT}: {cells[0]:,} training cells, {cells[1]:,} test cells{mode}"
    out = {}
    for name, r in table.iterrows():
        if pd.isna(r["measured"]):
            continue
        k = scale.get(name, 1.0)
        cpu = r["cpu"] if not pd.isna(r["cpu"]) else r["wall"]
        out[name] = [name, f"{int(r['jobs'])}", f"{int(r['measured'])}", f"{r['wall']:.1f} / {r['wall_max']:.1f}",
                     f"{r['cpu']:.1f}", f"{r['rss'] / 1000:.2f}", f"{r['mem_mb']:.0f}",
                     "yes" if r["rss"] < r["mem_mb"] else "**no**", f"{r['runtime']:.0f}",
                     "yes" if cpu * k <= BUDGET_JOB_S else f"**no** ({cpu * k / 60:.0f} min)",
                     f"{r['wall'] * k * r['jobs'] / 3600:.2f}", f"{cpu * k * r['jobs'] / 3600:.2f}",
                     notes.get(name, "measured at full shape")]
    return out


def earlier_rows(path: Path) -> dict:
    """step -> cells (COLUMNS) of an earlier table; a table without CPU columns counts its wall as CPU (one core per
    job), and says so."""
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("| ")]
    if not lines:
        return {}
    header, out = [c.strip() for c in lines[0].strip("|").split("|")], {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header == COLUMNS:
            out[cells[0]] = cells
        elif header[:3] == COLUMNS[:3] and len(cells) == 10:  # the first table: no CPU, no per-job budget column
            name, jobs, measured, wall, rss, mem, ok, runtime, whole, how = cells
            per_job = float(whole) * 3600 / int(jobs)
            out[name] = [name, jobs, measured, wall, "—", rss, mem, ok, runtime,
                         "yes" if per_job <= BUDGET_JOB_S else f"**no** ({per_job / 60:.0f} min)", whole, whole,
                         f"{how}; earlier run, CPU not recorded: wall counted as CPU"]
    return out


def earlier_setup(path: Path) -> str:
    """The 'Measured by ...' paragraph of an earlier table (where its merged rows come from) and, where that table
    merged rows itself, its own 'Rows measured ...' paragraph (so every row's provenance stays stated), or ''."""
    lines = path.read_text().splitlines() if path.exists() else []
    setup = next((ln for ln in lines if ln.startswith("Measured by")), "")
    rows = next((ln for ln in lines if ln.startswith("Rows measured in this run")), "")
    return setup + (" In that table: " + rows[len("Rows measured in this run"):].lstrip(": ") if rows else "")


def markdown(args: argparse.Namespace, table: dict, missing: list[str], sizes: dict, merged: str) -> str:
    """The per-step table (sorted by whole-run CPU) and the totals against the budget."""
    ordered = sorted(table.values(), key=lambda c: (int(c[1]), float(c[11])))
    wall = sum(float(c[10]) for c in ordered)
    cpu = sum(float(c[11]) for c in ordered)
    forward = sum(float(c[11]) for c in ordered if c[0] in FORWARD)
    over_job = [c[0] for c in ordered if c[9] != "yes" and c[0] not in FORWARD and int(c[1]) > 1]
    over_mem = [c[0] for c in ordered if c[7] != "yes"]
    lines = [
        "# What the paper run costs (config/paper.yaml at full shape, on stand-ins)",
        "",
        f"Measured by `benchmarks/bench_paper_run.py` on {platform.node()} ({os.cpu_count()} CPUs, `--cores "
        f"{args.cores}`), {time.strftime('%Y-%m-%d %H:%M')}. "
        f"Stand-ins: reference {args.reference_cells:,} cells ({args.labels} labels), immune {args.immune_cells:,} cells, "
        f"{args.genes:,} genes each; random 12 x 8 x 512 checkpoint, {VOCAB_SIZE:,} tokens. Wall, CPU (user + system of the job) and peak "
        f"RSS from each job's Snakemake benchmark file (one-time jobs: all; per-split rules: {ONE_SPLIT}, 100k training "
        "cells); mem_mb and runtime (min) as declared for attempt 1 (both grow with the attempt). Whole run = per-job "
        "value x jobs in the plan (x the sample's scale where noted); CPU is the budget's measure, as contention "
        "inflates wall but not CPU.",
    ]
    if merged:
        lines += ["", f"Rows measured in this run: {', '.join(args.only)} (`--only`; their cost depends on the "
                      "1,200-gene panel and the split's cells, not on the atlas's gene count). The other rows are "
                      "merged from the earlier full run of this table (their how column says so): " + merged]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * 6 + "---|---:|---|---:|---:|---|"]
    lines += ["| " + " | ".join(c) + " |" for c in ordered]
    lines += ["", f"Totals: **{cpu:.1f} CPU-hours** ({wall:.1f} h of job wall), one core per job; of them "
              f"{forward:.1f} CPU-h the scGPT forward passes (CPU-measured; GPU jobs on a real run), so "
              f"**{cpu - forward:.1f} CPU-hours besides the forward passes** (budget {BUDGET_RUN_H}: "
              f"{'within' if cpu - forward <= BUDGET_RUN_H else '**over**'}); disk: "
              + ", ".join(f"{k} {v:.1f} GB" for k, v in sizes.items()) + ".",
              "Per-split jobs over 15 minutes on one core (besides the forward passes): "
              + (", ".join(over_job) or "none") + ".",
              f"Every measured step's peak RSS is below its mem_mb: **{'yes' if not over_mem else 'no: ' + ', '.join(over_mem)}**.",
              "Not measured here, aggregates of every split and downloads: "
              + (", ".join(m for m in missing if m.split(" (")[0] in AGGREGATES) or "none") + ".",
              "**Not measured: " + (", ".join(m for m in missing if m.split(" (")[0] not in AGGREGATES) or "none")
              + "** (jobs that did not finish in this run; see docs/cost.md)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import yaml

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    wf = copy_workflow(work)
    paper = yaml.safe_load((wf / "config" / "paper.yaml").read_text())
    files = standins(args, wf, paper)
    checkpoint(args, wf, paper)
    if args.inputs_only:
        return
    layers = ["config/paper.yaml", str(config_layer(args, wf, paper, files).relative_to(wf))]
    plan_json = work / "plan.json"
    jobs = json.loads(plan_json.read_text()) if args.reuse_plan and plan_json.exists() else plan(wf, layers)
    log(f"plan: {len(jobs)} jobs")
    plan_json.write_text(json.dumps(jobs))
    embed = {}
    embed_json = work / "embed.json"
    if embed_json.exists():
        embed = json.loads(embed_json.read_text())
    elif not args.only or "embed_cells" in args.only:  # the cache's inputs (panel, checkpoint), then its sample
        embed_inputs = [f for j in jobs if j["rule"] == "embed_cells" for f in j["input"].split(", ")]
        proc = snakemake(wf, layers, *embed_inputs, cores=args.cores)
        if proc.returncode:
            raise SystemExit(proc.stderr[-5000:])
        embed = embed_sample(args, wf)
        embed_json.write_text(json.dumps(embed))
        log(f"embedding sample: {embed['cells_per_s']:.2f} cells/s")
    log("running " + (", ".join(args.only) if args.only else "every one-time job and one split of every per-split rule"))
    wanted = [t for t in targets(jobs, args.skip_methods, args.only) if "/factors/core/" not in t]
    core = [t for t in targets(jobs, args.skip_methods, args.only) if "/factors/core/" in t]
    proc = snakemake(wf, layers, "--keep-going", *wanted, cores=args.cores)
    if core and not snakemake(wf, layers, f"results/factors/{ONE_SPLIT}.tsv", cores=args.cores).returncode:
        core_inputs(wf, jobs)
        core_proc = snakemake(wf, layers, *core, cores=args.cores)
        proc = subprocess.CompletedProcess(proc.args, proc.returncode or core_proc.returncode,
                                           proc.stdout + core_proc.stdout, proc.stderr + core_proc.stderr)
    (work / "snakemake.log").write_text(proc.stdout + proc.stderr)
    log(f"snakemake exit {proc.returncode} (log: {work / 'snakemake.log'})")
    # scvi-tools' heuristic epochs at the training-cell cap (the paper's training donors hold more cells than it)
    scvi_epochs = min(400, 400 * 20_000 / paper["splits"]["max_train_cells"])
    du = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e9 if p.exists() else 0.0
    sizes = {"stand-ins": du(wf / "resources" / "atlas"), "results/": du(wf / "results")}
    done = [j for j in measured(wf, jobs) if not args.only or group(j) in args.only]
    table = {**(earlier_rows(args.out) if args.only else {}), **rows(args, jobs, done, embed, scvi_epochs,
                                                                    paper["splits"]["max_train_cells"])}
    missing = sorted({group(j) for j in jobs} - set(table))
    missing = [f"{g} ({sum(group(j) == g for j in jobs)})" for g in missing]
    table = markdown(args, table, missing, sizes, merged=earlier_setup(args.out) if args.only else "")
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
