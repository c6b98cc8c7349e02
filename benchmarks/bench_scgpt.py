"""Full-size scGPT: flash-keyed checkpoint load, operator export and embedding throughput, peak memory.

Builds a randomly initialised model with scGPT whole-human's architecture (12 layers x 8 heads, d_model = d_hid =
512, 51 bins, post-norm) over a vocabulary of ``--vocab-genes`` genes (+ <pad>, <cls>, <eoc>), saves it in scGPT's
checkpoint layout with flash-attn keys (``self_attn.Wqkv.*``), loads it with ``load_scgpt`` and checks that every
weight survived. Random weights make the same amount of work as trained ones. Then, each in a fresh Python process
so that peak RSS (``ru_maxrss``, imports and model included) is comparable between runs:

  export   export_operators on ``--panel-genes`` genes (tokens: <cls> + every panel gene) for each ``--n-context``;
           checks the shape [12, 8, G, G] and that every row sums to 1
  embed    embed_cells (<cls> embedding, tokens: <cls> + the cell's non-zero genes, at most max_seq_len = 1200)
           on ``--embed-cells`` cells

and finally checks that a truncated best_model.pt is reported as a one-line InputError. Synthetic counts: Poisson
with log-normal gene rates and cell size factors (seeded); the mean number of tokens per cell is printed. On CPU,
export costs ~5 s per context cell at G = 1,200, linear in n_context at constant memory (one batch of one layer's
attention plus a float64 L x H x G x G accumulator), so paper scale (2,000 cells) is a linear extrapolation.

Usage: python benchmarks/bench_scgpt.py [--device cpu|cuda] [--n-context 4 16] [--out benchmarks/results/scgpt_cpu.md]
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
ARCH = {"d_model": 512, "nhead": 8, "d_hid": 512, "nlayers": 12, "n_bins": 51}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    p.add_argument("--n-context", type=int, nargs="+", default=[4, 16],
                   help="context cells for export_operators, one fresh process each (default: 4 16)")
    p.add_argument("--panel-genes", type=int, default=1200, help="operator size G (default: 1,200)")
    p.add_argument("--vocab-genes", type=int, default=1300, help="genes in the model vocabulary (default: 1,300)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="context cells per forward pass in export_operators, the same for every n_context (default: 4)")
    p.add_argument("--embed-cells", type=int, default=64, help="cells for the embed_cells throughput (default: 64)")
    p.add_argument("--embed-batch-size", type=int, default=16, help="cells per batch in embed_cells (default: 16)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = torch's default (default: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="keep checkpoint and data here (default: a temp dir, removed)")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown results file (default: benchmarks/results/scgpt_<device>.md)")
    p.add_argument("--worker", choices=("export", "embed"), help=argparse.SUPPRESS)  # internal: one measurement
    p.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.n_context) < 1 or args.batch_size < 1 or args.embed_cells < 1 or args.embed_batch_size < 1:
        p.error("--n-context, --batch-size, --embed-cells and --embed-batch-size must be >= 1")
    if args.panel_genes > args.vocab_genes:
        p.error(f"--panel-genes {args.panel_genes} exceeds --vocab-genes {args.vocab_genes}")
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / f"scgpt_{args.device}.md"
    return args


def peak_rss_gb() -> float:
    """This process's peak resident set size in GB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _torch_setup(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    return torch


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- setup (driver process) ------------------------------------------------------------------------------------------


def build_checkpoint(args: argparse.Namespace, work: Path) -> dict:
    """Random full-size model saved with flash-attn keys, reloaded with load_scgpt; returns what was checked."""
    torch = _torch_setup(args)
    from fmextract.models.scgpt import build_demo_model, load_scgpt, save_scgpt

    genes = [f"GENE{i:05d}" for i in range(args.vocab_genes)]
    start = time.perf_counter()
    model, vocab, cfg = build_demo_model(genes, nhead=ARCH["nhead"], d_model=ARCH["d_model"], d_hid=ARCH["d_hid"],
                                         nlayers=ARCH["nlayers"], n_bins=ARCH["n_bins"], seed=args.seed, dropout=0.2)
    cfg["max_seq_len"] = 1200  # whole-human's args.json
    build_s = time.perf_counter() - start
    ckpt = work / "checkpoint"
    save_scgpt(model, ckpt, vocab=vocab, args=cfg, flash_keys=True)
    keys = list(torch.load(ckpt / "best_model.pt", weights_only=True))
    n_wqkv = sum(k.endswith("self_attn.Wqkv.weight") for k in keys)
    if n_wqkv != ARCH["nlayers"] or any("in_proj" in k for k in keys):
        raise SystemExit(f"checkpoint keys are not flash-style: {n_wqkv} Wqkv weights")
    start = time.perf_counter()
    loaded = load_scgpt(ckpt, device="cpu")
    load_s = time.perf_counter() - start
    own = model.state_dict()
    same = all(torch.equal(v, own[k]) for k, v in loaded.state_dict().items())
    if not same or (loaded.nlayers, loaded.nhead, loaded.d_model) != (12, 8, 512):
        raise SystemExit("the flash-keyed checkpoint did not reload to the same weights")
    n_params = sum(p.numel() for p in loaded.parameters())
    return {"build_s": build_s, "load_s": load_s, "n_params": n_params, "n_keys": len(keys), "n_wqkv": n_wqkv,
            "file_mb": (ckpt / "best_model.pt").stat().st_size / 1e6, "vocab": len(vocab), "genes": genes}


def write_data(args: argparse.Namespace, work: Path, genes: list[str]) -> dict:
    """Synthetic counts (cells x vocabulary genes) in layers['counts'] and the seeded panel."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(args.seed)
    n = max(max(args.n_context), args.embed_cells)
    rate = rng.lognormal(-0.5, 1.5, len(genes))
    size = rng.lognormal(0.0, 0.3, (n, 1))
    counts = sp.csr_matrix(rng.poisson(rate[None, :] * size).astype(np.float32))
    adata = ad.AnnData(X=counts.copy(), var=pd.DataFrame(index=genes))
    adata.layers["counts"] = counts
    adata.write_h5ad(work / "cells.h5ad")
    panel = sorted(rng.choice(genes, args.panel_genes, replace=False).tolist())
    (work / "panel.txt").write_text("".join(f"{g}\n" for g in panel))
    nnz = np.diff(counts.indptr)
    return {"n_cells": n, "nnz_per_cell": float(nnz.mean()), "panel_density": float((counts[:, [genes.index(g) for g in panel]] > 0).mean())}


def truncated_checkpoint(work: Path) -> str:
    """Copy the checkpoint, cut best_model.pt in half, return load_scgpt's InputError message."""
    from fmextract.errors import InputError
    from fmextract.models.scgpt import load_scgpt

    bad = work / "truncated"
    shutil.copytree(work / "checkpoint", bad, dirs_exist_ok=True)
    path = bad / "best_model.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    try:
        load_scgpt(bad)
    except InputError as err:
        message = str(err)
    else:
        raise SystemExit("a truncated best_model.pt loaded without an error")
    if "\n" in message:
        raise SystemExit(f"the truncated-checkpoint error is not one line: {message!r}")
    return message


# --- workers (one fresh process per measurement) ---------------------------------------------------------------------


def worker_export(args: argparse.Namespace, work: Path) -> dict:
    """export_operators on n_context = worker_n cells; shape and row-sum checks."""
    torch = _torch_setup(args)
    import anndata as ad
    import numpy as np

    from fmextract.operators import export_operators
    from fmextract.models.scgpt import load_scgpt

    model = load_scgpt(work / "checkpoint", device=args.device)
    adata = ad.read_h5ad(work / "cells.h5ad")
    panel = (work / "panel.txt").read_text().split()
    kw = dict(genes=panel, seed=args.seed, batch_size=args.batch_size, progress=False)
    if args.device == "cuda":  # CUDA context and kernels warmed up outside the timing
        export_operators(model, adata, n_context=1, **kw)
        torch.cuda.reset_peak_memory_stats()
    _sync(torch, args.device)
    start = time.perf_counter()
    ops = export_operators(model, adata, n_context=args.worker_n, **kw)
    _sync(torch, args.device)
    wall = time.perf_counter() - start
    arr = ops.operators
    expected = (ARCH["nlayers"], ARCH["nhead"], len(panel), len(panel))
    row_err = float(np.abs(arr.sum(-1, dtype=np.float64) - 1).max())
    return {"wall_s": wall, "cells_per_s": ops.meta["n_context"] / wall, "n_context": ops.meta["n_context"],
            "shape": list(arr.shape), "shape_ok": arr.shape == expected, "max_rowsum_err": row_err,
            "rows_ok": row_err < 1e-4 and bool(np.isfinite(arr).all()) and float(arr.min()) >= 0,
            "cuda_peak_gb": torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else None}


def worker_embed(args: argparse.Namespace, work: Path) -> dict:
    """embed_cells on worker_n cells (all their non-zero vocabulary genes, capped at max_seq_len)."""
    torch = _torch_setup(args)
    import anndata as ad
    import numpy as np

    from fmextract.models.scgpt import embed_cells, load_scgpt

    model = load_scgpt(work / "checkpoint", device=args.device)
    adata = ad.read_h5ad(work / "cells.h5ad")[: args.worker_n]
    counts, genes = adata.layers["counts"], list(adata.var_names)
    if args.device == "cuda":
        embed_cells(model, counts[:2], genes, batch_size=2, progress=False)
        torch.cuda.reset_peak_memory_stats()
    _sync(torch, args.device)
    start = time.perf_counter()
    emb = embed_cells(model, counts, genes, batch_size=args.embed_batch_size, seed=args.seed, progress=False)
    _sync(torch, args.device)
    wall = time.perf_counter() - start
    tokens = np.minimum(np.diff(counts.indptr), model.config["max_seq_len"] - 1) + 1
    return {"wall_s": wall, "cells_per_s": emb.shape[0] / wall, "n_cells": emb.shape[0], "shape": list(emb.shape),
            "tokens_per_cell": float(tokens.mean()), "finite": bool(np.isfinite(emb).all()),
            "cuda_peak_gb": torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else None}


def run_worker(args: argparse.Namespace) -> None:
    """Child process: one measurement, printed as one JSON line with this process's peak RSS."""
    report = globals()[f"worker_{args.worker}"](args, args.workdir)
    print(json.dumps({**report, "peak_rss_gb": peak_rss_gb()}))


def spawn(worker: str, n: int, args: argparse.Namespace, work: Path) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON report plus the process's wall time."""
    cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed),
           "--batch-size", str(args.batch_size), "--embed-batch-size", str(args.embed_batch_size),
           "--workdir", str(work), "--worker", worker, "--worker-n", str(n)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"{worker} (n={n}) failed (exit {res.returncode})")
    report = json.loads(res.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    return report


# --- driver ----------------------------------------------------------------------------------------------------------


def markdown(args, ckpt: dict, data: dict, exports: dict[int, dict], embed: dict, message: str, env: dict) -> str:
    """The results table with the run's parameters."""
    G = args.panel_genes
    cuda = args.device == "cuda"
    lines = [
        f"# scGPT full-size benchmark ({args.device})",
        "",
        f"Measured by `benchmarks/bench_scgpt.py` on {env['host']} ({env['cpus']} CPUs, torch {env['torch']}, "
        f"torch threads: {env['threads']}{', ' + env['gpu'] if cuda else ''}), {time.strftime('%Y-%m-%d %H:%M')}. "
        "Every measurement ran in a fresh Python process; peak RSS is that process's `ru_maxrss` (imports, model and "
        "data included); wall is the call alone (process = including interpreter start, imports and model load)"
        + ("; CUDA kernels warmed up first, outside the timing" if cuda else "") + ".",
        "",
        f"Model: random weights, scGPT whole-human architecture (12 layers x 8 heads, d_model 512, d_hid 512, 51 bins), "
        f"vocabulary {ckpt['vocab']:,} tokens, {ckpt['n_params'] / 1e6:.1f} M parameters. Data: {data['n_cells']} synthetic "
        f"cells, {data['nnz_per_cell']:.0f} non-zero genes per cell of {args.vocab_genes:,}; panel of {G:,} genes "
        f"(density {data['panel_density']:.2f}). Export batch {args.batch_size} cells, embed batch {args.embed_batch_size} cells.",
        "",
        "| measurement | setting | wall (s) | process (s) | cells/s | peak RSS (GB) |" + (" peak CUDA (GB) |" if cuda else "") + " check |",
        "|---|---|---:|---:|---:|---:|" + ("---:|" if cuda else "") + "---|",
        f"| load_scgpt | flash-keyed best_model.pt, {ckpt['file_mb']:.0f} MB, {ckpt['n_keys']} keys ({ckpt['n_wqkv']} `Wqkv`) "
        f"| {ckpt['load_s']:.2f} | | | |" + (" |" if cuda else "") + " all weights equal after reload |",
    ]
    for n, r in exports.items():
        check = f"shape {tuple(r['shape'])} {'ok' if r['shape_ok'] else 'WRONG'}; rows sum to 1 " \
                f"{'ok' if r['rows_ok'] else 'WRONG'} (max err {r['max_rowsum_err']:.1e})"
        lines.append(f"| export_operators | n_context {n}, G {G:,} | {r['wall_s']:.1f} | {r['process_s']:.1f} | "
                     f"{r['cells_per_s']:.3f} | {r['peak_rss_gb']:.2f} |" + (f" {r['cuda_peak_gb']:.2f} |" if cuda else "")
                     + f" {check} |")
    lines.append(f"| embed_cells | {embed['n_cells']} cells, {embed['tokens_per_cell']:.0f} tokens/cell | {embed['wall_s']:.1f} | "
                 f"{embed['process_s']:.1f} | {embed['cells_per_s']:.2f} | {embed['peak_rss_gb']:.2f} |"
                 + (f" {embed['cuda_peak_gb']:.2f} |" if cuda else "")
                 + f" shape {tuple(embed['shape'])}, {'finite' if embed['finite'] else 'NOT finite'} |")
    lines += ["", f"Truncated best_model.pt (first half of the file) -> `InputError`, one line:", "",
              f"    {message}", ""]
    sizes = sorted(exports)
    if len(sizes) >= 2:
        a, b = exports[sizes[0]], exports[sizes[-1]]
        per_cell = (b["wall_s"] - a["wall_s"]) / (sizes[-1] - sizes[0])
        grows = b["peak_rss_gb"] > 1.1 * a["peak_rss_gb"]
        lines += [f"Export time per extra context cell: {per_cell:.2f} s, so n_context = 2,000 takes ~"
                  f"{per_cell * 2000 / 3600:.1f} h on this device; peak RSS {a['peak_rss_gb']:.2f} GB at "
                  f"n_context {sizes[0]} vs {b['peak_rss_gb']:.2f} GB at {sizes[-1]} "
                  f"({'GROWS with n_context' if grows else 'within 10%: memory does not grow with n_context'}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Build and reload the checkpoint, run each measurement in its own process, print and write the table."""
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    sys.path.insert(0, str(ROOT / "src"))
    torch = _torch_setup(args)
    env = {"host": platform.node() or "this machine", "cpus": os.cpu_count(), "torch": torch.__version__,
           "threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else ""}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scgpt_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ckpt = build_checkpoint(args, work)
        print(f"checkpoint  flash-keyed, {ckpt['file_mb']:.0f} MB, reloaded in {ckpt['load_s']:.2f} s, weights equal", flush=True)
        data = write_data(args, work, ckpt.pop("genes"))
        exports = {}
        for n in sorted(set(args.n_context)):
            r = exports[n] = spawn("export", n, args, work)
            print(f"export      n_context {n:5d}  wall {r['wall_s']:7.1f} s  {r['cells_per_s']:.3f} cells/s  "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB  shape {r['shape']}  max|rowsum-1| {r['max_rowsum_err']:.1e}", flush=True)
            if not (r["shape_ok"] and r["rows_ok"]):
                raise SystemExit(f"export_operators n_context={n}: wrong shape or rows not summing to 1")
        embed = spawn("embed", args.embed_cells, args, work)
        print(f"embed       {embed['n_cells']} cells  wall {embed['wall_s']:7.1f} s  {embed['cells_per_s']:.2f} cells/s  "
              f"peak RSS {embed['peak_rss_gb']:.2f} GB", flush=True)
        message = truncated_checkpoint(work)
        print(f"truncated   InputError: {message}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(args, ckpt, data, exports, embed, message, env)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
