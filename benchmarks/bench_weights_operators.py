"""Weights-only operators at full size: `qk_weights` and `ov_weights` of scGPT whole-human's architecture.

Builds a randomly initialised model with the whole-human architecture (12 layers x 8 heads, d_model 512) over a
vocabulary of ``--vocab-genes`` genes, saves it in scGPT's checkpoint layout, loads it back and reads both weights-only
definitions over ``--panel-genes`` panel genes (no data, no forward pass), ``--repeats`` times each. Prints wall time
per call and per head, peak RSS, and checks the shape and (qk_weights) that rows sum to 1; writes a Markdown table.

Usage: python benchmarks/bench_weights_operators.py [--panel-genes 1200] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--panel-genes", type=int, default=1200, help="operator size G (default: 1,200)")
    p.add_argument("--vocab-genes", type=int, default=1300, help="genes in the model vocabulary (default: 1,300)")
    p.add_argument("--repeats", type=int, default=3, help="calls per definition; the median is reported (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "weights_operators.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Measure, check, print and write the table."""
    from fmextract.operators import weights_operators
    from fmextract.models.scgpt import build_demo_model, load_scgpt, save_scgpt

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    genes = [f"G{i:05d}" for i in range(args.vocab_genes)]
    model, vocab, cfg = build_demo_model(genes, d_model=512, nhead=8, d_hid=512, nlayers=12, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_scgpt(model, tmp, vocab=vocab, args=cfg, flash_keys=True)
        model = load_scgpt(tmp)
    panel = genes[: args.panel_genes]
    rows = []
    for definition in ("qk_weights", "ov_weights"):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ops = weights_operators(model, panel, definition)
            times.append(time.perf_counter() - start)
        assert ops.operators.shape == (12, 8, len(panel), len(panel))
        if definition == "qk_weights":
            assert np.allclose(ops.operators.sum(-1), 1, atol=1e-4)
        t = float(np.median(times))
        rows.append((definition, t, 1000 * t / 96))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    lines = [
        f"Weights-only operators, random 12 x 8 x 512 model, G = {args.panel_genes}, {args.threads} torch thread(s), "
        f"{platform.processor() or platform.machine()}, median of {args.repeats}; peak RSS {rss:.2f} GB (process)",
        "",
        "| definition | all 96 heads (s) | per head (ms) |",
        "|---|---:|---:|",
        *(f"| {d} | {t:.2f} | {ms:.1f} |" for d, t, ms in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
