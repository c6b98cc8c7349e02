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

Usage: python benchmarks/bench_paper_run.py --workdir /tmp/paper_run [--cores 2]   (~25 GB of disk, hours)
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
    p.add_argument("--scvi-epochs", type=int, default=2, help="scVI epochs run (then scaled to the heuristic)")
    p.add_argument("--skip-methods", nargs="*", default=[], help="methods whose split job is not run (too slow here)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--inputs-only", action="store_true", help="write the stand-ins and the checkpoint, then stop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "paper_run.md", help="Markdown table")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
                          resources=wf / "resources")
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


def targets(jobs: list[dict], skip_methods: list[str]) -> list[str]:
    """Every job's output except those of splits other than ONE_SPLIT, skipped methods and the whole-run aggregates."""
    skip = {"all", "collect", "stats", "method_failures", "runtime_summary", "compression_table", "factor_table",
            "factor_core_split", "figures", "paper_comparison", "summary_markdown", "report_table"}
    out = []
    for j in jobs:
        split = re.search(r"split=(split\d{3})", j["wildcards"])
        method = re.search(r"method=(\w+)", j["wildcards"])
        if j["rule"] in skip or (split and split.group(1) != ONE_SPLIT) or (method and method.group(1) in skip_methods):
            continue
        out += j["output"].split(", ")
    return sorted(set(out))


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
    _, wall, rss = timed(embed_to_cache, model, sample, wf / "embed_sample.h5", seed=args.seed, progress=False)
    tokens = float((sample.layers["counts"] > 0).sum(axis=1).mean()) + 1  # expressed panel genes + <cls>
    rng = np.random.default_rng(args.seed)
    out = wf / "results" / "embeddings" / "trained" / "benchmark.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    blocks = (rng.normal(size=(min(50_000, len(names) - s), ARCH["d_model"])).astype(np.float32)
              for s in range(0, len(names), 50_000))
    cache.write(out, names, blocks, d=ARCH["d_model"], attrs={"benchmark": "random stand-in of the right shape"})
    rate = args.embed_cells / wall
    return {"cells": args.embed_cells, "wall_s": wall, "peak_rss_gb": rss, "cells_per_s": rate, "tokens_per_cell": tokens,
            "panel_cells": len(names), "extrapolated_s": len(names) / rate}


def measured(wf: Path, jobs: list[dict]) -> list[dict]:
    """Jobs of the plan whose benchmark file exists, with its wall seconds and peak RSS (MB)."""
    import pandas as pd

    rows = []
    for j in jobs:
        path = wf / j["benchmark"] if j["benchmark"] else None
        if path is not None and path.exists():
            b = pd.read_csv(path, sep="\t").iloc[-1]
            rows.append({**j, "wall_s": float(b["s"]), "max_rss_mb": float(b["max_rss"]),
                         "cpu_s": float(b.get("cpu_time", float("nan")))})
    return rows


def group(job: dict) -> str:
    """The table row a job belongs to: its rule; per method for run_method; forward vs weights-only exports."""
    if job["rule"] == "run_method":
        return "run_method " + re.search(r"method=(\w+)", job["wildcards"]).group(1)
    if job["rule"] == "export_operators":
        forward = re.search(r"definition=(attention_prob|qk_raw)\b", job["wildcards"])
        return "export_operators " + ("(forward pass)" if forward else "(weights only)")
    return job["rule"]


def markdown(args: argparse.Namespace, jobs: list[dict], done: list[dict], embed: dict, scvi_epochs: float,
             sizes: dict) -> str:
    """The per-rule table and the totals."""
    import pandas as pd

    full = pd.DataFrame(jobs).assign(group=lambda d: [group(j) for j in jobs])
    got = pd.DataFrame(done)
    got["group"] = [group(j) for j in done]
    table = full.groupby("group").agg(jobs=("rule", "size"), mem_mb=("mem_mb", "max"), runtime=("runtime", "max"))
    table = table.join(got.groupby("group").agg(measured=("rule", "size"), wall=("wall_s", "mean"),
                                                wall_max=("wall_s", "max"), rss=("max_rss_mb", "max")), how="left")
    scale, notes = {}, {}
    scale["export_operators (forward pass)"] = 2000 / args.n_context
    notes["export_operators (forward pass)"] = (f"measured with {args.n_context} context cells; wall x 2,000/"
                                                f"{args.n_context} (an upper bound: start-up and model load scale too)")
    scale["run_method scvi"] = scvi_epochs / args.scvi_epochs
    notes["run_method scvi"] = f"{args.scvi_epochs} epochs measured; wall x {scvi_epochs:.0f}/{args.scvi_epochs} epochs"
    if embed:
        table.loc["embed_cells", ["measured", "wall", "wall_max", "rss"]] = [1, embed["wall_s"], embed["wall_s"],
                                                                            embed["peak_rss_gb"] * 1000]
        scale["embed_cells"] = embed["panel_cells"] / embed["cells"]
        notes["embed_cells"] = (f"{embed['cells']} cells measured ({embed['cells_per_s']:.1f} cells/s at "
                                f"{embed.get('tokens_per_cell', float('nan')):.0f} tokens/cell, CPU, 1 thread); wall x "
                                f"{embed['panel_cells']:,} cells (a GPU job on a real run)")
    lines = [
        "# What the paper run costs (config/paper.yaml at full shape, on stand-ins)",
        "",
        f"Measured by `benchmarks/bench_paper_run.py` on {platform.node()} ({os.cpu_count()} CPUs, `--cores "
        f"{args.cores}`), {time.strftime('%Y-%m-%d %H:%M')}. Stand-ins: reference {args.reference_cells:,} cells, "
        f"immune {args.immune_cells:,} cells, {args.genes:,} genes each; random 12 x 8 x 512 checkpoint, "
        f"{VOCAB_SIZE:,} tokens. Wall and peak RSS from each job's Snakemake benchmark file (one-time jobs: all; "
        f"per-split rules: {ONE_SPLIT}, 100k training cells); mem_mb and runtime (min) as declared for attempt 1. "
        "Whole run = mean wall x jobs in the plan (x the sample's scale where noted).",
        "",
        "| step | jobs in the plan | measured | wall per job (s, mean / max) | peak RSS (GB) | mem_mb | RSS < mem_mb | "
        "runtime (min) | whole run (h) | how |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    total, over, missing = 0.0, [], []
    for name, r in table.sort_values(["jobs", "wall"]).iterrows():
        if pd.isna(r["measured"]):
            missing.append(f"{name} ({int(r['jobs'])})")
            continue
        whole = r["wall"] * scale.get(name, 1.0) * r["jobs"]
        total += whole
        ok = r["rss"] < r["mem_mb"]
        over += [] if ok else [name]
        lines.append(f"| {name} | {int(r['jobs'])} | {int(r['measured'])} | {r['wall']:.1f} / {r['wall_max']:.1f} | "
                     f"{r['rss'] / 1000:.2f} | {r['mem_mb']:.0f} | {'yes' if ok else '**no**'} | {r['runtime']:.0f} | "
                     f"{whole / 3600:.2f} | {notes.get(name, 'measured at full shape')} |")
    gpu = sum(table.loc[k, "wall"] * scale[k] * table.loc[k, "jobs"] for k in ("embed_cells",
              "export_operators (forward pass)") if k in table.index and not pd.isna(table.loc[k, "wall"]))
    lines += ["", f"Totals: **{total / 3600:.1f} hours** of job wall time, one core per job ({gpu / 3600:.1f} h of it "
              "the scGPT forward passes, CPU-measured, GPU jobs on a real run); peak RSS of any job "
              f"**{table['rss'].max() / 1000:.2f} GB**; disk: " + ", ".join(f"{k} {v:.1f} GB" for k, v in sizes.items())
              + ".",
              f"Every measured step's peak RSS is below its mem_mb: **{'yes' if not over else 'no: ' + ', '.join(over)}**.",
              "Not measured here: " + (", ".join(missing) or "none") + " (aggregates of every split, downloads, or "
              "jobs that did not finish; see the README)."]
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
    jobs = plan(wf, layers)
    log(f"plan: {len(jobs)} jobs")
    (work / "plan.json").write_text(json.dumps(jobs))
    embed = {}
    embed_json = work / "embed.json"
    if embed_json.exists():
        embed = json.loads(embed_json.read_text())
    else:  # the cache's inputs first (panel, verified checkpoint), then the sampled cache, then the rest of one split
        embed_inputs = [f for j in jobs if j["rule"] == "embed_cells" for f in j["input"].split(", ")]
        proc = snakemake(wf, layers, *embed_inputs, cores=args.cores)
        if proc.returncode:
            raise SystemExit(proc.stderr[-5000:])
        embed = embed_sample(args, wf)
        embed_json.write_text(json.dumps(embed))
        log(f"embedding sample: {embed['cells_per_s']:.2f} cells/s")
    log("running every one-time job and one split of every per-split rule")
    proc = snakemake(wf, layers, "--keep-going", *targets(jobs, args.skip_methods), cores=args.cores)
    (work / "snakemake.log").write_text(proc.stdout + proc.stderr)
    log(f"snakemake exit {proc.returncode} (log: {work / 'snakemake.log'})")
    # scvi-tools' heuristic epochs at the training-cell cap (the paper's training donors hold more cells than it)
    scvi_epochs = min(400, 400 * 20_000 / paper["splits"]["max_train_cells"])
    du = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e9 if p.exists() else 0.0
    sizes = {"stand-ins": du(wf / "resources" / "atlas"), "results/": du(wf / "results")}
    table = markdown(args, jobs, measured(wf, jobs), embed, scvi_epochs, sizes)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
