"""Atlas-scale memory and time of the prepare path, the feature map and the adaptor (issue "paper scale", item 3).

Writes a synthetic raw-count atlas chunk by chunk (never a dense or whole in-memory matrix), then runs every
stage in a fresh Python process and reads that process's own peak RSS (``ru_maxrss``) and wall time:

  prepare    data.prepare_panel: validate + harmonise labels + log1p CP10k, streamed into the prepared .h5ad
  panel      HVG panel on the reference donors' counts + streamed subset to the panel genes (the gene_panel rule)
  features   FeatureMap.transform over all cells in batches (dense G x G operator), features written to disk
  adaptor    Adaptor.transform over the on-disk features in batches -> z (cells x d_latent) in memory
  fused      FeatureMap.transform(..., then=adaptor.transform): features never stored, only z

Synthetic data (documented choice): 24 donors, 3 tissues, labels drawn from the project's stage table plus
~2% labels absent from it (dropped by prepare). Per cell, ``--genes-per-cell`` gene draws (log-normal spread)
from a log-normal ("Zipf-like") gene popularity, tilted 30-fold on a 40-gene marker program of the cell's
label; repeated draws merge into one non-zero, so the realised non-zeros per cell are lower (~1,000 for the
default 1,300 draws, i.e. ~5% of 20,000 genes) and are measured and printed. UMIs per cell follow
``--umis-per-cell``. The marker programs make seurat_v3 pick a panel of ~9% density (measured, printed).
Counts are stored in X (integer-valued, the data contract's ``counts_layer: null`` case) as CSR without
compression, so generation and reading stay fast; the prepared and panel files are gzip-compressed like the
pipeline's. Real atlases have ~1,000-2,500 detected genes per cell; the default sits at the low end so the
raw file stays at ~4.5 GB and the whole run at ~10 minutes on 2 cores (the full 7.5% would be ~850 M
non-zeros). Streamed stages hold one chunk at a time, so their memory does not grow with depth and their time
grows linearly in non-zeros: other depths are a linear extrapolation of the table, not a measurement.

Usage: python benchmarks/bench_scale.py [--n-cells 564253] [--out benchmarks/results/scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "prepare", "panel", "features", "adaptor", "fused")
TARGET_RSS_GB = 4.0
TARGET_FEATURES_S = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--n-cells", type=int, default=564_253, help="cells in the synthetic atlas (default: 564,253)")
    p.add_argument("--n-genes", type=int, default=20_000, help="genes in the raw file (default: 20,000)")
    p.add_argument("--panel-genes", type=int, default=1200, help="HVG panel size = operator size G (default: 1,200)")
    p.add_argument("--genes-per-cell", type=float, default=1300,
                   help="mean gene draws per cell; repeats merge, ~1,000 non-zeros (5%%) for the default 1,300")
    p.add_argument("--umis-per-cell", type=float, default=2500, help="mean UMIs per cell (default: 2,500)")
    p.add_argument("--n-donors", type=int, default=24, help="donors (default: 24)")
    p.add_argument("--n-reference-donors", type=int, default=4, help="donors used for the HVG panel (default: 4)")
    p.add_argument("--d-latent", type=int, default=10, help="adaptor latent dimension (default: 10)")
    p.add_argument("--chunk-size", type=int, default=10_000, help="rows per chunk in prepare/panel (default: 10,000)")
    p.add_argument("--batch-size", type=int, default=8192, help="cells per batch in features/adaptor (default: 8,192)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir, removed after)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md", help="Markdown table path")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: run one stage in this process
    return p.parse_args(argv)


def peak_rss_gb() -> float:
    """This process's peak resident set size in GB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


# --- stages (each runs in its own process) -------------------------------------------------------------------------


def stage_generate(args: argparse.Namespace, work: Path) -> dict:
    """Write the raw synthetic atlas chunk by chunk (CSR rows appended to the .h5ad; no whole matrix in memory)."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from fmextract.chunks import write_h5ad_streamed
    from fmextract.stages import load_stage_table

    rng = np.random.default_rng(args.seed)
    n, G = args.n_cells, args.n_genes
    labels = load_stage_table(ROOT / "resources" / "hematopoiesis_stages.tsv")["label"].tolist()
    labels += ["unannotated", "doublet"]  # absent from the stage table: prepare must drop them
    label_p = np.r_[rng.dirichlet(np.full(len(labels) - 2, 2.0)) * 0.98, 0.01, 0.01]
    base = rng.lognormal(0.0, 1.6, G)  # Zipf-like gene popularity
    common = np.argsort(-base)[200:4000]
    tilt = np.ones((len(labels), G))
    for t in range(len(labels)):  # a marker program per label: 40 genes of popularity rank 200-4,000 up 30-fold
        tilt[t, rng.choice(common, 40, replace=False)] = 30.0
    cum = np.cumsum(base * tilt, axis=1)
    cum /= cum[:, -1:]
    donors = np.array([f"donor{i:02d}" for i in range(args.n_donors)])
    cell_label = rng.choice(len(labels), n, p=label_p)
    obs = pd.DataFrame({
        "donor_id": pd.Categorical(rng.choice(donors, n)),
        "cell_type": pd.Categorical(np.array(labels, dtype=object)[cell_label]),
        "tissue": pd.Categorical(rng.choice(["bone_marrow", "blood", "spleen"], n)),
    }, index=pd.Index([f"cell{i:07d}" for i in range(n)], name="cell"))
    var = pd.DataFrame(index=pd.Index([f"GENE{i:05d}" for i in range(G)], name="gene"))

    nnz = 0

    def blocks():
        nonlocal nnz
        for start in range(0, n, args.chunk_size):
            stop = min(n, start + args.chunk_size)
            m, t = stop - start, cell_label[start:stop]
            draws = np.maximum(1, rng.lognormal(np.log(args.genes_per_cell), 0.35, m).astype(np.int64))
            umis = rng.lognormal(np.log(args.umis_per_cell), 0.45, m)
            row = np.repeat(np.arange(m), draws)
            gene = np.empty(row.size, dtype=np.int64)
            u, tr = rng.random(row.size), t[row]
            for k in np.unique(t):
                sel = tr == k
                gene[sel] = np.minimum(np.searchsorted(cum[k], u[sel]), G - 1)
            keys, mult = np.unique(row * G + gene, return_counts=True)
            r = keys // G
            extra = np.maximum(umis / draws - 1.0, 0.0)[r]
            vals = mult + rng.poisson(extra * mult)
            indptr = np.r_[0, np.cumsum(np.bincount(r, minlength=m))]
            X = sp.csr_matrix((vals.astype(np.float32), (keys % G).astype(np.int32), indptr), shape=(m, G))
            nnz += X.nnz
            yield {"X": X}

    write_h5ad_streamed(work / "raw.h5ad", obs, var, blocks(), keys=("X",), compression=None)
    return {"nnz": int(nnz), "nnz_per_cell": nnz / n, "file_gb": (work / "raw.h5ad").stat().st_size / 1e9}


def stage_prepare(args: argparse.Namespace, work: Path) -> dict:
    """The prepare rule: validate + harmonise + normalise, streamed."""
    from fmextract import data
    from fmextract.stages import load_stage_table

    table = load_stage_table(ROOT / "resources" / "hematopoiesis_stages.tsv")
    unmapped, info = data.prepare_panel(work / "raw.h5ad", table, work / "prepared.h5ad", source="raw.h5ad",
                                        donor_key="donor_id", cell_type_key="cell_type", tissue_key="tissue",
                                        counts_layer=None, gene_symbol_column=None, min_donors=3,
                                        chunk_size=args.chunk_size)
    return {**info, "file_gb": (work / "prepared.h5ad").stat().st_size / 1e9}


def stage_panel(args: argparse.Namespace, work: Path) -> dict:
    """The reference_donors + gene_panel rules: HVGs on the reference donors' counts, streamed panel subset."""
    from fmextract import data, donors

    obs = data.read_obs(work / "prepared.h5ad")
    ref = donors.choose_reference_donors(obs, n_reference=args.n_reference_donors, min_cells=5, seed=args.seed)
    with data.open_backed(work / "prepared.h5ad") as panel:
        n_ref = int(panel.obs["donor"].isin(ref).sum())
        genes = data.select_gene_panel(panel, reference_donors=ref, n_genes=args.panel_genes, vocab=list(panel.var_names),
                                       min_vocab_overlap=0.5, source="prepared.h5ad")
    data.write_gene_subset(work / "prepared.h5ad", work / "benchmark.h5ad", genes, chunk_size=args.chunk_size)
    (work / "genes.txt").write_text("".join(f"{g}\n" for g in genes))
    with data.open_backed(work / "benchmark.h5ad") as b:
        nnz = int(b.X.group["indptr"][-1])
        shape = b.shape
    return {"reference_cells": n_ref, "panel_genes": len(genes), "panel_density": nnz / (shape[0] * shape[1]),
            "file_gb": (work / "benchmark.h5ad").stat().st_size / 1e9}


def _feature_map_and_adaptor(args: argparse.Namespace, work: Path):
    """A dense row-stochastic G x G operator (like an attention head) and a random frozen adaptor."""
    import numpy as np

    from fmextract.adaptor import Adaptor
    from fmextract.features import FeatureMap

    genes = (work / "genes.txt").read_text().split()
    rng = np.random.default_rng(args.seed)
    A = rng.random((len(genes), len(genes)), dtype=np.float32)
    fmap = FeatureMap(genes=genes, kind="heads", matrix=A / A.sum(axis=1, keepdims=True))
    adaptor = Adaptor(W=rng.normal(size=(args.d_latent, len(genes))).astype(np.float32),
                      b=rng.random(len(genes), dtype=np.float32), scale=1.0)
    return fmap, adaptor


def stage_features(args: argparse.Namespace, work: Path) -> dict:
    """FeatureMap.transform over every cell of the backed panel, batch by batch, into an on-disk array."""
    import h5py
    import numpy as np

    from fmextract import data

    fmap, _ = _feature_map_and_adaptor(args, work)
    with data.open_backed(work / "benchmark.h5ad") as panel, h5py.File(work / "features.h5", "w") as f:
        assert list(panel.var_names) == fmap.genes
        out = f.create_dataset("F", shape=(panel.n_obs, fmap.n_features), dtype=np.float32,
                               chunks=(min(args.batch_size, panel.n_obs), fmap.n_features))
        start = time.perf_counter()
        fmap.transform(panel.X, batch_size=args.batch_size, out=out)
        seconds = time.perf_counter() - start
        checksum = float(out[-1].sum())
    return {"transform_s": seconds, "features_gb_on_disk": panel.n_obs * fmap.n_features * 4 / 1e9, "checksum": checksum}


def stage_adaptor(args: argparse.Namespace, work: Path) -> dict:
    """Adaptor.transform over the on-disk features, batch by batch; z for all cells kept in memory."""
    import h5py

    from fmextract.chunks import map_rows

    _, adaptor = _feature_map_and_adaptor(args, work)
    with h5py.File(work / "features.h5", "r") as f:
        z = map_rows(adaptor.transform, f["F"], batch_size=args.batch_size)
    return {"z_shape": list(z.shape), "z_mb": z.nbytes / 1e6}


def stage_fused(args: argparse.Namespace, work: Path) -> dict:
    """Features and adaptor in one pass (then=adaptor.transform): only z (cells x d_latent) is kept."""
    from fmextract import data

    fmap, adaptor = _feature_map_and_adaptor(args, work)
    with data.open_backed(work / "benchmark.h5ad") as panel:
        z = fmap.transform(panel.X, batch_size=args.batch_size, then=adaptor.transform)
    return {"z_shape": list(z.shape), "z_mb": z.nbytes / 1e6}


def run_stage(args: argparse.Namespace) -> None:
    """Child process: run one stage, print its measurements as one JSON line."""
    start = time.perf_counter()
    extra = globals()[f"stage_{args.stage}"](args, args.workdir)
    print(json.dumps({"stage": args.stage, "wall_s": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(), **extra}))


# --- driver ----------------------------------------------------------------------------------------------------------


def spawn(stage: str, argv: list[str], work: Path) -> dict:
    """Run a stage in a fresh interpreter; returns its JSON report plus the process's wall time."""
    cmd = [sys.executable, __file__, *argv, "--workdir", str(work), "--stage", stage]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"stage {stage} failed (exit {res.returncode})")
    report = json.loads(res.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    return report


def markdown(args: argparse.Namespace, reports: dict[str, dict]) -> str:
    """The results table with the run's parameters and the targets."""
    g, p, pn = reports["generate"], reports["prepare"], reports["panel"]
    notes = {
        "generate": f"{g['nnz'] / 1e6:.0f} M non-zeros ({g['nnz_per_cell']:.0f}/cell), {g['file_gb']:.2f} GB (not a pipeline step)",
        "prepare": f"{p['n_obs']:,} cells kept ({p['n_dropped']:,} unmapped dropped), {p['n_vars']:,} genes, {p['file_gb']:.2f} GB gzip",
        "panel": f"HVGs on {pn['reference_cells']:,} reference cells; {pn['panel_genes']} genes, density {pn['panel_density']:.3f}, {pn['file_gb']:.2f} GB",
        "features": f"transform {reports['features']['transform_s']:.1f} s; {reports['features']['features_gb_on_disk']:.2f} GB features on disk",
        "adaptor": f"z {reports['adaptor']['z_shape']} ({reports['adaptor']['z_mb']:.0f} MB)",
        "fused": f"z {reports['fused']['z_shape']}; features never stored",
    }
    lines = [
        f"# Atlas-scale memory and time ({args.n_cells:,} cells)",
        "",
        f"Measured by `benchmarks/bench_scale.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Each stage ran in a fresh Python process; peak RSS is that process's "
        "`ru_maxrss` (imports included); wall is the stage's work (process = including interpreter start and imports).",
        "",
        f"Synthetic raw atlas: {args.n_cells:,} cells x {args.n_genes:,} genes, {args.n_donors} donors, "
        f"~{args.genes_per_cell:g} gene draws and ~{args.umis_per_cell:g} UMIs per cell, CSR counts in X. "
        f"Panel {args.panel_genes} HVGs on {args.n_reference_donors} reference donors; dense {args.panel_genes}x{args.panel_genes} "
        f"operator; adaptor d_latent={args.d_latent}; chunks {args.chunk_size:,} rows, batches {args.batch_size:,} cells.",
        "",
        "| stage | wall (s) | process (s) | peak RSS (GB) | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for s in STAGES:
        r = reports[s]
        lines.append(f"| {s} | {r['wall_s']:.1f} | {r['process_s']:.1f} | {r['peak_rss_gb']:.2f} | {notes[s]} |")
    pipeline = [s for s in STAGES if s != "generate"]
    max_rss = max(reports[s]["peak_rss_gb"] for s in pipeline)
    feat_s = reports["features"]["wall_s"]
    lines += [
        "",
        f"Targets: peak RSS <= {TARGET_RSS_GB:g} GB in every pipeline stage: **{'met' if max_rss <= TARGET_RSS_GB else 'NOT met'}** "
        f"(max {max_rss:.2f} GB); features <= {TARGET_FEATURES_S:.0f} s: **{'met' if feat_s <= TARGET_FEATURES_S else 'NOT met'}** "
        f"({feat_s:.1f} s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Generate the atlas, run every stage in its own process, print and write the Markdown table."""
    args = parse_args(argv)
    if args.stage:
        return run_stage(args)
    passthrough = [x for k, v in vars(args).items() if k not in ("workdir", "out", "stage")
                   for x in (f"--{k.replace('_', '-')}", str(v))]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    reports: dict[str, dict] = {}
    try:
        for stage in STAGES:
            reports[stage] = spawn(stage, passthrough, work)
            r = reports[stage]
            print(f"{stage:9s} wall {r['wall_s']:7.1f} s  process {r['process_s']:7.1f} s  peak RSS {r['peak_rss_gb']:5.2f} GB",
                  flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(args, reports)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
