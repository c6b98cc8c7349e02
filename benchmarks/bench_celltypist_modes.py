"""CellTypist's training modes on the same splits: plain logistic regression, SGD and mini-batch SGD, side by side.

Adds three method entries through a config layer (`celltypist_lr`, `celltypist_sgd`, `celltypist_minibatch`: the
same `workflow/methods/celltypist.py`, CellTypist's own defaults except the mode), runs their split jobs with the
real Snakefile on top of the given configs (`results/` of the repository: the demo's data steps are reused), and
prints the sensitivity table: each mode's mean per endpoint, its difference from plain logistic regression (mean
and SD of the paired per-split difference), the split-to-split SD of the faster mode, whether the difference
exceeds that noise, and each mode's CPU seconds per split job (Snakemake's benchmark files).

Usage: python benchmarks/bench_celltypist_modes.py [--configfile config/config.yaml] [--cores 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODES = {"lr": {"use_SGD": False}, "sgd": {"use_SGD": True}, "minibatch": {"use_SGD": True, "mini_batch": True}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"], help="the run's config layers")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "celltypist_modes.md")
    return p.parse_args(argv)


def layer(base: dict) -> dict:
    """The config layer: one method entry per mode, each a copy of the configured celltypist entry."""
    entry = base["methods"]["celltypist"]
    methods = {}
    for mode, params in MODES.items():
        spec = {k: v for k, v in entry.items() if k != "params"}
        methods[f"celltypist_{mode}"] = {**spec, "file": "celltypist",
                                         "params": {**{k: v for k, v in (entry.get("params") or {}).items()
                                                       if k not in ("use_SGD", "mini_batch")}, **params}}
    return {"methods": methods}


def merged(configfiles: list[str]) -> dict:
    """The config layers merged as Snakemake merges `--configfile` layers (snakemake.utils.update_config)."""
    from snakemake.utils import update_config

    out: dict = {}
    for f in configfiles:
        update_config(out, yaml.safe_load((ROOT / f).read_text()) or {})
    return out


def table(splits: list[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-split metrics of every mode (long) and each mode's mean CPU seconds per split job."""
    rows, cpu = [], {}
    for mode in MODES:
        method = f"celltypist_{mode}"
        for split in splits:
            m = pd.read_csv(ROOT / "results" / "methods" / method / f"{split}.tsv", sep="\t")
            rows.append(m.assign(mode=mode))
        bench = [pd.read_csv(ROOT / "results" / "benchmarks" / "methods" / method / f"{s}.tsv", sep="\t") for s in splits]
        cpu[mode] = float(pd.concat(bench)["cpu_time"].mean())
    return pd.concat(rows, ignore_index=True), cpu


def markdown(metrics: pd.DataFrame, cpu: dict[str, float], n_splits: int, configfiles: list[str],
             endpoints: list[str]) -> str:
    """The sensitivity table: each mode against plain logistic regression, paired over splits."""
    wide = metrics.pivot_table(index=["split", "endpoint"], columns="mode", values="value").reset_index()
    lines = [f"# CellTypist's modes on the same {n_splits} splits ({' + '.join(configfiles)})", "",
             "Difference = mode minus plain logistic regression, mean over splits (SD of the paired difference); "
             "noise = the split-to-split SD of that mode's endpoint; `exceeds` when |mean difference| > noise.", "",
             "| endpoint | LR mean | SGD mean | SGD - LR (SD) | SGD noise | exceeds | mini-batch mean | "
             "mini-batch - LR (SD) | mini-batch noise | exceeds |", "|---|" + "---:|" * 5 + "---:|---:|---:|---|"]
    for endpoint in [e for e in endpoints if e in set(wide["endpoint"])]:
        w = wide[wide["endpoint"] == endpoint]
        cells = [endpoint, f"{w['lr'].mean():.3f}"]
        for mode in ("sgd", "minibatch"):
            d = w[mode] - w["lr"]
            noise = w[mode].std()
            cells += [f"{w[mode].mean():.3f}", f"{d.mean():+.3f} ({d.std():.3f})", f"{noise:.3f}",
                      "**yes**" if abs(d.mean()) > noise else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "CPU seconds per split job (mean): " + ", ".join(f"{m} {s:.1f}" for m, s in cpu.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    base = merged(args.configfile)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=ROOT / "results", delete=False) as fh:
        yaml.safe_dump(layer(base), fh)
    layer_path = Path(fh.name)
    try:
        plan = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "-n", "--forceall", "--configfile",
                               *args.configfile, str(layer_path)], cwd=ROOT, capture_output=True, text=True)
        splits = sorted(set(re.findall(r"results/methods/celltypist/(split\d{3})\.json", plan.stdout + plan.stderr)))
        if not splits:
            raise SystemExit("no celltypist split in the plan (is methods.celltypist configured?)\n" + plan.stderr[-2000:])
        targets = [f"results/methods/celltypist_{m}/{s}.json" for m in MODES for s in splits]
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), *targets,
                               "--configfile", *args.configfile, str(layer_path)], cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"snakemake exit {proc.returncode}")
    finally:
        layer_path.unlink(missing_ok=True)
    metrics, cpu = table(splits)
    text = markdown(metrics, cpu, len(splits), args.configfile, base["endpoints"]["paper"])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
