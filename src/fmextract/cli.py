"""Command line of the standalone algorithm: `fmextract apply HEAD INPUT.h5ad OUTPUT.h5ad`, `fmextract info HEAD`.

Bad input ends with a one-line message on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, Sequence

from fmextract.errors import InputError

APPLY_HELP = """\
Map the cells of INPUT.h5ad through the exported head and write OUTPUT.h5ad: a copy of the input plus
obsm['X_fmextract'] (the latent), obsm['fmextract_branch_proba'] / ['fmextract_stage_proba'], obs columns
fmextract_branch, fmextract_stage (+ _probability), one fmextract_<subtype> probability per subtype readout
(e.g. fmextract_cd4_cd8 = P(CD4)), fmextract_pseudotime (predicted depth, 0 = HSC/MPP) and uns['fmextract']
(gene coverage).

INPUT must hold RAW integer counts over all measured genes (integer-valued floats are fine): the layer named
by --counts-layer (or raw.X), else layers['counts'], else X if it holds integers, else raw.X, so a CELLxGENE
file works as it ships (normalised X, counts in raw.X). The head applies the pipeline's log1p(CP10k)
normalisation itself. Genes are matched by the head's gene keys (`fmextract info` names them): symbols in
var_names, the var column named by --gene-symbol-column, or feature_name when var_names are Ensembl ids
(CELLxGENE); a head keyed by Ensembl ids (e.g. from Geneformer) reads var_names or --gene-symbol-column, and
input keyed the other way is refused.
INPUT is read batch by batch (memory: one batch of cells), so atlases of any size work; with
--annotations-only OUTPUT holds obs, obsm and uns alone (no copy of the expression matrices).
"""


@contextmanager
def _open_input(path: str) -> Iterator:
    """The input .h5ad with obs/var in memory and every matrix on disk; unreadable input -> one-line InputError."""
    from fmextract.chunks import open_backed

    if not Path(path).is_file():
        raise InputError(f"{path}: input file not found; pass an existing .h5ad with raw counts")
    with open_backed(path, key="INPUT") as adata:
        yield adata


def check_output_path(path: str) -> None:
    """Fail before any computation if OUTPUT cannot be written: its folder is missing, is a file or is read-only,
    or OUTPUT is a folder. Folders are never created (a typo would otherwise scatter outputs)."""
    out = Path(path)
    folder = out.parent
    if out.is_dir():
        raise InputError(f"{path}: OUTPUT is a folder; give a file name such as {out / 'cells.fmextract.h5ad'}")
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            raise InputError(f"{path}: {above} is a file, not a folder; choose an OUTPUT path in a folder")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist (it is not created for you); create it "
                         f"(mkdir -p {folder}) or choose another OUTPUT")
    try:  # what the atomic write will do: a temporary file beside OUTPUT (catches read-only file systems too)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", dir=folder)
    except OSError as err:
        raise InputError(f"{path}: cannot write in folder {folder} ({err.strerror}); choose a writable OUTPUT "
                         "location") from None
    os.close(fd)
    os.remove(probe)


def _write_output(source: str, path: str, adata, *, annotations_only: bool) -> None:
    """OUTPUT, atomically: INPUT's bytes with obs replaced and the head's obsm/uns entries added, or those alone."""
    import anndata as ad
    import h5py
    from anndata.io import write_elem

    from fmextract.io import atomic_path

    entries = {"obsm": dict(adata.obsm), "uns": {"fmextract": adata.uns["fmextract"]}}
    with atomic_path(path) as tmp:
        if annotations_only:
            ad.AnnData(obs=adata.obs, **entries).write_h5ad(tmp)
            return
        shutil.copyfile(source, tmp)  # the input as it is (matrices, raw, layers untouched), then the annotations
        with h5py.File(tmp, "r+") as f:
            del f["obs"]
            write_elem(f, "obs", adata.obs)
            for group, items in entries.items():
                if group not in f:
                    write_elem(f, group, {})
                for key, value in items.items():
                    if key in f[group]:
                        del f[group][key]
                    write_elem(f[group], key, value)


MAIN_EXAMPLES = """\
examples:
  fmextract apply results/head/fmextract_head.npz atlas.h5ad atlas.fmextract.h5ad
  fmextract info results/head/fmextract_head.npz
  fmextract COMMAND --help        # options and an example for each command

The head file is written by the workflow (`snakemake --cores all` -> results/head/fmextract_head.npz).
"""
APPLY_EXAMPLES = """\
examples:
  fmextract apply results/head/fmextract_head.npz atlas.h5ad atlas.fmextract.h5ad
  fmextract apply head.npz cellxgene.h5ad out.h5ad --gene-symbol-column feature_name --min-coverage 0.3
"""
INFO_EXAMPLES = """\
example:
  fmextract info results/head/fmextract_head.npz
"""


def _apply(args: argparse.Namespace) -> int:
    """`fmextract apply`: load, apply (input read batch by batch), write atomically; print coverage and timing."""
    from fmextract.head import LATENT_KEY, PREFIX, Head

    t0 = time.perf_counter()
    check_output_path(args.output)
    head = Head.load(args.head)
    with _open_input(args.input) as adata:
        t1 = time.perf_counter()
        head.apply(adata, counts_layer=args.counts_layer, gene_symbol_column=args.gene_symbol_column,
                   min_coverage=args.min_coverage, batch_size=args.batch_size, source=args.input, inplace=True)
        t2 = time.perf_counter()
    _write_output(args.input, args.output, adata, annotations_only=args.annotations_only)
    t3 = time.perf_counter()
    info = adata.uns["fmextract"]
    print(f"{args.input}: {adata.n_obs:,} cells; {info['n_genes_found']} of {info['n_panel_genes']} panel genes found "
          f"(coverage {info['coverage']:.1%}); counts from {info['counts']}")
    print(f"timing: read {t1 - t0:.2f} s, apply {t2 - t1:.2f} s ({adata.n_obs / max(t2 - t1, 1e-9):,.0f} cells/s), "
          f"write {t3 - t2:.2f} s")
    columns = [c for c in adata.obs.columns if c.startswith(PREFIX)]
    print(f"wrote {args.output}: obsm['{LATENT_KEY}'] ({adata.obsm[LATENT_KEY].shape[1]} dims), obs {', '.join(columns)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    """`fmextract info`: what a head file holds."""
    from fmextract.head import Head

    head = Head.load(args.head)
    m = head.meta
    fm = m["feature_map"]
    print(f"{args.head} ({Path(args.head).stat().st_size / 1e6:.2f} MB), fmextract {m['fmextract_version']}")
    model = head.model
    note = "" if model.get("recorded", True) else " (not recorded: written before heads named their model)"
    print(f"model: {model['kind']}{note}; genes keyed by {model['gene_keys']}")
    print(f"panel: {fm['n_genes']} genes; feature map: {fm['kind']}, {fm['n_features']} features; "
          f"latent: {m['latent_dim']} dims")
    print(f"input: {m['input']['expects']}, normalised as {m['input']['normalisation']}")
    for key, clf in head.readouts.classifiers.items():
        print(f"readout {key}: {len(clf.classes_)} classes ({', '.join(map(str, clf.classes_))})")
    for name, spec in head.subtypes.items():
        state = "skipped: " + head.readouts.skipped[name] if name in head.readouts.skipped else "fitted"
        print(f"readout {name}: P({'/'.join(spec['positive'])}) vs {'/'.join(spec['negative'])} ({state})")
    print(f"trained on {m['training']['n_cells']:,} cells of {len(m['training']['donors'])} donors, seed {m['seed']}")
    print("trainable parameters: " + ", ".join(f"{k} {v:,}" for k, v in m["n_parameters"].items()))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `fmextract` argument parser with its subcommands."""
    from fmextract.features import BATCH_ROWS

    parser = argparse.ArgumentParser(
        prog="fmextract",
        description="Apply the algorithm extracted from scGPT attention (one exported head file) to new cells.",
        epilog=MAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('fmextract')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("apply", help="embed and annotate the cells of an .h5ad with a head", description=APPLY_HELP,
                       epilog=APPLY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("head", metavar="HEAD", help="head file (.npz) written by the export_head rule or Head.save")
    p.add_argument("input", metavar="INPUT.h5ad", help="cells to annotate, raw counts")
    p.add_argument("output", metavar="OUTPUT.h5ad", help="where to write the annotated copy (written atomically)")
    p.add_argument("--gene-symbol-column", metavar="COL", default=None,
                   help="var column with the head's gene keys, symbols or Ensembl ids (default: var_names, or "
                        "feature_name when var_names are Ensembl ids and the head is keyed by symbols)")
    p.add_argument("--counts-layer", metavar="NAME", default=None,
                   help="layer with raw counts, or raw.X (default: layers['counts'], else X if integer-valued, "
                        "else raw.X)")
    p.add_argument("--min-coverage", metavar="F", type=_fraction, default=0.5,
                   help="fail if fewer than this fraction of panel genes is found (default: %(default)s)")
    p.add_argument("--batch-size", metavar="N", type=_positive_int, default=BATCH_ROWS,
                   help="cells per batch; bounds memory (default: %(default)s)")
    p.add_argument("--annotations-only", action="store_true",
                   help="write obs, obsm and uns only, not a copy of the input's matrices (fast for atlases)")
    p.set_defaults(func=_apply)
    p = sub.add_parser("info", help="describe a head file", description="Print what a head file holds.",
                       epilog=INFO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("head", metavar="HEAD", help="head file (.npz)")
    p.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with a one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fmextract: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except InputError as err:
        print(f"fmextract: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
