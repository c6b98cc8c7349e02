"""`fmextract apply` at atlas scale: wall time and peak RSS on a CELLxGENE-shaped stand-in (issue "paper scale", item 6).

Target: 564,253 cells x 20,000 genes, 10% non-zero, <= 30 s wall and <= 4 GB peak RSS on 2 cores; reading the
counts is the floor. Steps, each measured in a fresh process (peak RSS of that process via `os.wait4`):

  generate  `make_standin`: a plain CELLxGENE-layout .h5ad (Ensembl ids in var_names, symbols in var.feature_name,
            raw counts in raw.X as float32 CSR, log1p-CP10k X as float32 CSR, categorical obs), uncompressed.
            Exactly `density` x n_genes non-zeros per cell (one gene drawn in each run of 1/density genes), counts
            1 + Poisson(1). Its one job is the file's shape; issue12's stand-in generator replaces it later.
  head      a head over a 1,200-gene panel drawn from those symbols: pooled drift of random row-stochastic operators,
            a random 10-d adaptor, readouts fitted on a small simulated panel (`Head.save`).
  floor     reading raw/X's data and indices arrays from disk once, block by block (nothing computed).
  apply     `fmextract apply HEAD INPUT OUTPUT --gene-symbol-column feature_name --counts-layer raw.X
            --annotations-only` (the output holds obs, obsm, uns; no copy of the matrices).
  apply_copy  the same without --annotations-only: OUTPUT is a byte copy of INPUT plus the annotations.

The page cache is left as it is (the machine is shared; 18 GB of matrices against 24 GB of RAM): the floor row says
what reading cost at that moment.

Usage: python benchmarks/bench_apply.py [--n-cells 564253] [--workdir DIR] [--out benchmarks/results/apply.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402  (the shared driver, beside this script)

STEPS = ("generate", "head", "floor", "apply", "apply_copy")
TARGET_S, TARGET_GB = 30.0, 4.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--n-cells", type=int, default=564_253, help="cells (default: 564,253)")
    p.add_argument("--n-genes", type=int, default=20_000, help="genes (default: 20,000)")
    p.add_argument("--density", type=float, default=0.10, help="fraction of non-zero entries per cell (default: 0.1)")
    p.add_argument("--panel-genes", type=int, default=1200, help="head panel genes (default: 1,200)")
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows written per block (default: 10,000)")
    p.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to skip (e.g. apply_copy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir, removed after)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "apply.md", help="Markdown table")
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal: run one step in this process
    return p.parse_args(argv)


def make_standin(path: Path, n_cells: int, n_genes: int, *, density: float = 0.1, seed: int = 0,
                 chunk_rows: int = 10_000) -> dict:
    """A plain CELLxGENE-like .h5ad: counts in raw.X, log1p(CP10k) in X (CSR float32), Ensembl var index +
    feature_name, categorical obs (donor_id, cell_type, tissue, assay). Written block by block with h5py."""
    import h5py
    import numpy as np
    import pandas as pd
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    step = int(round(1 / density))
    per_cell = n_genes // step
    nnz = n_cells * per_cell
    obs = pd.DataFrame({
        "donor_id": pd.Categorical(rng.choice([f"TSP{i}" for i in range(1, 22)], n_cells)),
        "cell_type": pd.Categorical(rng.choice(["classical monocyte", "CD4-positive, alpha-beta T cell", "B cell",
                                                "natural killer cell", "macrophage"], n_cells)),
        "tissue": pd.Categorical(rng.choice(["blood", "bone marrow", "spleen", "lung"], n_cells)),
        "assay": pd.Categorical(rng.choice(["10x 3' v3", "Smart-seq2"], n_cells, p=[0.95, 0.05])),
    }, index=pd.Index([f"cell{i:07d}" for i in range(n_cells)]))
    var = pd.DataFrame({"feature_name": pd.Categorical([f"GENE{i:05d}" for i in range(n_genes)])},
                       index=pd.Index([f"ENSG{i:011d}" for i in range(n_genes)]))
    csr = {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": np.array([n_cells, n_genes])}
    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, name, {})
        raw = f.create_group("raw")
        raw.attrs.update({"encoding-type": "raw", "encoding-version": "0.1.0"})
        write_elem(raw, "var", var)
        write_elem(raw, "varm", {})
        groups = {}
        for g in (f.create_group("X"), raw.create_group("X")):
            g.attrs.update(csr)
            g.create_dataset("indptr", data=np.arange(0, nnz + 1, per_cell, dtype=np.int64))
            groups[g.name] = (g.create_dataset("data", (nnz,), dtype=np.float32),
                              g.create_dataset("indices", (nnz,), dtype=np.int32))
        base = np.arange(per_cell, dtype=np.int32) * step
        for start in range(0, n_cells, chunk_rows):
            m = min(chunk_rows, n_cells - start)
            cols = (base + rng.integers(0, step, size=(m, per_cell), dtype=np.int32)).ravel()
            counts = (1 + rng.poisson(1.0, size=(m, per_cell))).astype(np.float32)
            norm = np.log1p(counts * (1e4 / counts.sum(1, keepdims=True))).astype(np.float32)
            lo, hi = start * per_cell, (start + m) * per_cell
            for name, values in (("/X", norm.ravel()), ("/raw/X", counts.ravel())):
                data, indices = groups[name]
                data[lo:hi] = values
                indices[lo:hi] = cols
    return {"nnz": int(nnz), "file_gb": path.stat().st_size / 1e9}


# --- steps (each runs in its own process) --------------------------------------------------------------------------


def step_generate(args: argparse.Namespace, work: Path) -> dict:
    """Write the stand-in."""
    return make_standin(work / "standin.h5ad", args.n_cells, args.n_genes, density=args.density, seed=args.seed,
                        chunk_rows=args.chunk_rows)


def step_head(args: argparse.Namespace, work: Path) -> dict:
    """A head over panel genes drawn from the stand-in's symbols; readouts fitted on a small simulated panel."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from fmextract.adaptor import Adaptor
    from fmextract.features import pooled_drift_map
    from fmextract.head import build_head
    from fmextract.stages import load_stage_table, stage_info

    rng = np.random.default_rng(args.seed)
    genes = [f"GENE{i:05d}" for i in np.sort(rng.choice(args.n_genes, args.panel_genes, replace=False))]
    G = len(genes)
    ops = rng.dirichlet(np.ones(G), size=(3, 1, G)).astype(np.float32)  # 3 layers x 1 head, row-stochastic
    fmap = pooled_drift_map(ops, genes)
    adaptor = Adaptor(W=rng.normal(size=(10, fmap.n_features)).astype(np.float32),
                      b=np.zeros(fmap.n_features, dtype=np.float32), scale=1.0)
    info = stage_info(load_stage_table(ROOT / "resources" / "hematopoiesis_stages.tsv"))
    n = 3000
    stage = rng.choice(info.index.to_numpy(), n)
    obs = pd.DataFrame({"donor": rng.choice(["D0", "D1", "D2"], n), "stage": stage,
                        "branch": info.loc[stage, "branch"].to_numpy(), "depth": info.loc[stage, "depth"].to_numpy()},
                       index=[f"t{i}" for i in range(n)])
    X = sp.random(n, G, density=0.1, format="csr", random_state=args.seed, dtype=np.float32)
    X.data = np.log1p(X.data * 20)
    subtypes = {"cd4_cd8": {"positive": ["naive_cd4_t", "memory_cd4_t", "treg"],
                            "negative": ["naive_cd8_t", "effector_cd8_t"]},
                "mono_macro": {"positive": ["macrophage"], "negative": ["classical_monocyte", "nonclassical_monocyte"]}}
    head = build_head(fmap, adaptor, ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes)), subtypes=subtypes,
                      seed=args.seed)
    head.save(work / "head.npz")
    return {"panel_genes": G, "head_mb": (work / "head.npz").stat().st_size / 1e6}


def step_floor(args: argparse.Namespace, work: Path) -> dict:
    """Read raw/X's data and indices once, 10,000 rows at a time: the I/O any reader of the counts pays."""
    import h5py

    with h5py.File(work / "standin.h5ad", "r") as f:
        g = f["raw"]["X"]
        indptr = g["indptr"][:]
        for start in range(0, len(indptr) - 1, 10_000):
            lo, hi = indptr[start], indptr[min(start + 10_000, len(indptr) - 1)]
            g["data"][lo:hi]
            g["indices"][lo:hi]
    return {"bytes_gb": 8 * int(indptr[-1]) / 1e9}


def _apply(work: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "fmextract.cli", "apply", str(work / "head.npz"), str(work / "standin.h5ad"),
           str(work / "applied.h5ad"), "--gene-symbol-column", "feature_name", "--counts-layer", "raw.X", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    out = {"stdout": proc.stdout.strip().replace("\n", " | "), "output_gb": (work / "applied.h5ad").stat().st_size / 1e9}
    (work / "applied.h5ad").unlink()
    return out


def step_apply(args: argparse.Namespace, work: Path) -> dict:
    """`fmextract apply ... --annotations-only` (its own process: start-up, imports, read, compute, write)."""
    return _apply(work, "--annotations-only")


def step_apply_copy(args: argparse.Namespace, work: Path) -> dict:
    """`fmextract apply` writing a copy of the input plus the annotations (the default)."""
    return _apply(work)


def markdown(args: argparse.Namespace, reports: dict[str, dict]) -> str:
    """The results table."""
    standin = args.workdir / "standin.h5ad" if args.workdir else None
    gen = reports.get("generate") or {  # a reused stand-in: its size from the file
        "nnz": args.n_cells * (args.n_genes // int(round(1 / args.density))),
        "file_gb": standin.stat().st_size / 1e9 if standin is not None and standin.exists() else float("nan")}
    lines = [
        f"# `fmextract apply` at atlas scale ({args.n_cells:,} cells)", "",
        f"Measured by `benchmarks/bench_apply.py` on {platform.node()} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Each step ran in a fresh process; wall includes interpreter start and "
        "imports; peak RSS is `ru_maxrss` of that process and its children. Page cache left as it was.", "",
        f"Stand-in: {args.n_cells:,} cells x {args.n_genes:,} genes, {args.density:.0%} non-zero "
        f"({gen.get('nnz', 0):,} non-zeros per matrix), counts in raw.X and log1p-CP10k X (CSR float32, uncompressed, "
        f"{gen.get('file_gb', float('nan')):.2f} GB); head: {args.panel_genes} panel genes, pooled drift, 10-d latent.",
        "", "| step | wall (s) | peak RSS (GB) | notes |", "|---|---:|---:|---|",
    ]
    for step, r in reports.items():
        note = {"generate": "not part of apply", "head": f"{r.get('head_mb', 0):.2f} MB head file",
                "floor": f"{r.get('bytes_gb', 0):.1f} GB of raw/X data + indices read",
                "apply": r.get("stdout", ""), "apply_copy": f"{r.get('output_gb', 0):.1f} GB written; "
                + r.get("stdout", "")}[step]
        lines.append(f"| {step} | {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | {note} |")
    if "apply" in reports:
        a = reports["apply"]
        ok = a["wall_s"] <= TARGET_S and a["peak_rss_gb"] <= TARGET_GB
        lines += ["", f"Target (apply, annotations only): <= {TARGET_S:.0f} s and <= {TARGET_GB:.0f} GB: "
                      f"**{'met' if ok else 'not met'}** ({a['wall_s']:.1f} s, {a['peak_rss_gb']:.2f} GB)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run every step in a fresh process, print and write the table."""
    harness.run(__file__, parse_args(argv), argv, STEPS, globals(), markdown, reuse={"generate": "standin.h5ad"})


if __name__ == "__main__":
    main()
