"""The per-cell caches at paper shape: frozen scGPT embeddings, frozen latents, and what a split job then reads.

Each step runs in a fresh process (wall time and peak RSS via `os.wait4`), on the code path of its rule:

  panel    a benchmark-shaped panel (`--n-cells` x `--panel-genes`, the gene_panel rule's output: log1p X and counts
           layer, CSR, gzip), ~17% dense as measured for a 1,200-gene HVG panel in scale.md, and a whole-panel
           512-d embedding cache of random values for the read step. Not pipeline steps.
  latent   rule frozen_latent: a pooled-drift map (G x 2G) and a 10-d adaptor folded into one G x 10 matrix, the
           whole panel's X multiplied batch by batch into results/latent/<...>.h5 (`latent.write_latent_cache`).
  embed    rule embed_cells on `--embed-cells` cells only (the panel's first rows): a random full-size scGPT-layout
           checkpoint (12 layers, 8 heads, 512-d, flash-era keys; `bench_scgpt.build_checkpoint`),
           `scgpt.embed_to_cache` on the backed panel, CPU, `--threads` torch threads. Cells/s extrapolates to
           the whole panel (an estimate, not a measurement; on a GPU it is another number).
  read     a split job of a cache-only method (extracted, mlp_probe): the panel's obs read backed, `methods.split_views
           (expression=False)`, then `cache.read_rows` of its ~100k training and test cells from a whole-panel
           512-d embedding cache and from the 10-d latent cache.

Usage: python benchmarks/bench_caches.py [--n-cells 564253] [--embed-cells 200] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402  (the shared driver, beside this script)

STEPS = ("panel", "latent", "embed", "read")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--n-cells", type=int, default=564_253, help="cells of the benchmark panel (default: 564,253)")
    p.add_argument("--panel-genes", type=int, default=1200, help="panel genes (default: 1,200)")
    p.add_argument("--density", type=float, default=0.17, help="non-zero fraction of the panel (default: 0.17)")
    p.add_argument("--n-donors", type=int, default=21, help="donors (default: 21)")
    p.add_argument("--embed-cells", type=int, default=200, help="cells embedded by the embed step (default: 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the embed step (default: 1)")
    p.add_argument("--train-cells", type=int, default=100_000, help="training cells of the read step (default: 100k)")
    p.add_argument("--skip", nargs="*", default=[], choices=STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir, removed after)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "caches.md", help="Markdown table")
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def step_panel(args: argparse.Namespace, work: Path) -> dict:
    """The benchmark panel, written in row blocks as the gene_panel rule writes it (log1p X + counts, gzip)."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from fmextract import cache
    from fmextract.chunks import write_h5ad_streamed

    rng = np.random.default_rng(args.seed)
    n, G = args.n_cells, args.panel_genes
    obs = pd.DataFrame({"donor": pd.Categorical(rng.choice([f"TSP{i}" for i in range(args.n_donors)], n)),
                        "tissue": pd.Categorical(rng.choice(["blood", "bone_marrow", "spleen"], n))},
                       index=pd.Index([f"cell{i:07d}" for i in range(n)]))
    genes = [f"GENE{i:05d}" for i in range(G)]

    def blocks():
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            counts = sp.random(m, G, density=args.density, format="csr", random_state=rng, dtype=np.float32)
            counts.data = 1 + rng.poisson(1.5, counts.nnz).astype(np.float32)
            X = counts.copy()
            X.data = np.log1p(X.data * 10).astype(np.float32)
            yield {"X": X, "counts": counts}

    write_h5ad_streamed(work / "benchmark.h5ad", obs, pd.DataFrame(index=genes), blocks(), keys=("X", "counts"))
    # a whole-panel 512-d embedding cache for the read step (random values: only its shape matters)
    emb = (rng.normal(size=(min(8192, n - s), 512)).astype(np.float32) for s in range(0, n, 8192))
    cache.write(work / "emb.h5", obs.index, emb, d=512)
    return {"file_gb": (work / "benchmark.h5ad").stat().st_size / 1e9}


def step_latent(args: argparse.Namespace, work: Path) -> dict:
    """The frozen_latent rule's code on the whole panel."""
    import numpy as np

    from fmextract.adaptor import Adaptor
    from fmextract.chunks import open_backed
    from fmextract.features import pooled_drift_map
    from fmextract.latent import fold, write_latent_cache

    rng = np.random.default_rng(args.seed)
    G = args.panel_genes
    fmap = pooled_drift_map(rng.dirichlet(np.ones(G), size=(3, 1, G)).astype(np.float32), [f"GENE{i:05d}" for i in range(G)])
    adaptor = Adaptor(W=rng.normal(size=(10, fmap.n_features)).astype(np.float32),
                      b=np.zeros(fmap.n_features, dtype=np.float32), scale=1.0)
    start = time.perf_counter()
    folded = fold(fmap, adaptor)
    with open_backed(work / "benchmark.h5ad") as panel:
        write_latent_cache(folded, panel, work / "latent.h5")
    return {"work_s": time.perf_counter() - start, "file_mb": (work / "latent.h5").stat().st_size / 1e6}


def step_embed(args: argparse.Namespace, work: Path) -> dict:
    """The embed_cells rule's code on the panel's first `--embed-cells` cells, full-size random model, CPU."""
    import anndata as ad
    import numpy as np
    import torch

    import bench_scgpt
    from fmextract.chunks import open_backed, read_rows
    from fmextract.models.scgpt import embed_to_cache, load_scgpt

    torch.set_num_threads(args.threads)
    ns = argparse.Namespace(vocab_genes=60_697 - 3, seed=args.seed, threads=args.threads, device="cpu")
    if not (work / "checkpoint" / "best_model.pt").exists():
        bench_scgpt.build_checkpoint(ns, work)
    model = load_scgpt(work / "checkpoint")
    with open_backed(work / "benchmark.h5ad") as panel:
        rows = np.zeros(panel.n_obs, dtype=bool)
        rows[: args.embed_cells] = True
        sample = ad.AnnData(layers={"counts": read_rows(panel.layers["counts"], rows)}, obs=panel.obs[rows].copy(),
                            var=panel.var.copy())
    start = time.perf_counter()
    embed_to_cache(model, sample, work / "emb_sample.h5", seed=args.seed, batch_size=64, progress=False)
    wall = time.perf_counter() - start
    tokens = 1 + np.diff(sample.layers["counts"].indptr).mean()
    return {"work_s": wall, "cells_per_s": args.embed_cells / wall, "tokens_per_cell": float(tokens),
            "whole_panel_cpu_h": args.n_cells / (args.embed_cells / wall) / 3600 * args.threads}


def step_read(args: argparse.Namespace, work: Path) -> dict:
    """A cache-only split job: obs read backed, split views without expression, rows of both caches."""
    import pandas as pd

    from fmextract import cache, methods
    from fmextract.chunks import open_backed

    start = time.perf_counter()
    with open_backed(work / "benchmark.h5ad") as panel:
        donors = sorted(panel.obs["donor"].unique())
        table = pd.DataFrame([("s0", d, "test" if i < 2 else "train") for i, d in enumerate(donors)],
                             columns=["split", "donor", "role"])
        train, test, _ = methods.split_views(panel, table, "s0", max_train_cells=args.train_cells, seed=0,
                                             expression=False)
    views_s = time.perf_counter() - start
    for path in ("emb.h5", "latent.h5"):
        for view in (train, test):
            cache.read_rows(work / path, view.obs_names)
    return {"work_s": time.perf_counter() - start, "views_s": views_s, "n_train": train.n_obs, "n_test": test.n_obs}


def markdown(args: argparse.Namespace, reports: dict[str, dict]) -> str:
    """The results table."""
    notes = {
        "panel": lambda r: f"{r['file_gb']:.2f} GB gzip panel + a 512-d embedding cache (not pipeline steps)",
        "latent": lambda r: f"frozen_latent: {r['work_s']:.1f} s of work, {r['file_mb']:.0f} MB cache",
        "embed": lambda r: (f"embed_cells on {args.embed_cells} cells: {r['cells_per_s']:.2f} cells/s, "
                            f"{r['tokens_per_cell']:.0f} tokens/cell -> whole panel ~{r['whole_panel_cpu_h']:.0f} "
                            f"CPU-core-hours (extrapolated)"),
        "read": lambda r: (f"split job: {r['n_train']:,} train + {r['n_test']:,} test cells, views {r['views_s']:.1f} s, "
                           f"all reads {r['work_s']:.1f} s"),
    }
    lines = [f"# Per-cell caches at paper shape ({args.n_cells:,} cells x {args.panel_genes:,} panel genes)", "",
             f"Measured by `benchmarks/bench_caches.py` on {platform.node()} ({os.cpu_count()} CPUs, shared), "
             f"{time.strftime('%Y-%m-%d %H:%M')}; each step in a fresh process (wall includes start-up and imports; "
             "peak RSS = `ru_maxrss`).", "", "| step | wall (s) | peak RSS (GB) | notes |", "|---|---:|---:|---|"]
    for step, r in reports.items():
        lines.append(f"| {step} | {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | {notes[step](r)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run every step in a fresh process, print and write the table."""
    harness.run(__file__, parse_args(argv), argv, STEPS, globals(), markdown, reuse={"panel": "benchmark.h5ad"})


if __name__ == "__main__":
    main()
