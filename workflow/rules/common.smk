# Everything that is not a rule: config validation, wildcard constraints, helpers, final targets.
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from fmextract.config import check_config
from fmextract.splits import split_plan

min_version("9.0")

check_config(config, os.path.join(workflow.basedir, "config", "schema.yaml"), source="config")
validate(config, schema="../../config/schema.yaml")

SEED = config["seed"]
PANELS = list(config["panels"])
METHODS = list(config["methods"])
#: split blocks: one block of n_splits, or the paper's 40 all-method + 24 + 24 core-only (splits.design: paper)
BLOCKS = split_plan(config["splits"].get("n_splits"), config["splits"].get("design"))
SPLITS = [f"split{i:03d}" for i in range(sum(n for _, n in BLOCKS))]
#: (method, split) pairs to run: `core: false` methods run only the first (all-method) block
METHOD_SPLITS = [
    (m, s) for m in METHODS for s in (SPLITS if config["methods"][m].get("core", True) else SPLITS[: BLOCKS[0][1]])
]
_C = config["compression"]
#: compression ladder: pooled heads -> best single head -> rank-r surrogates -> hard-sparse
COMPRESSION_VARIANTS = [
    "pooled_drift",
    _C["base"],
    *(f"{_C['base']}_rank{r}" for r in _C["ranks"]),
    f"{_C['base']}_sparse",
]
ABLATION_MAP = f"{_C['base']}_rank{_C['ablation_rank']}"
#: checkpoints whose attention is exported: the configured (or pretrained) model and its untrained copy
MODELS = ["trained", "untrained"]


wildcard_constraints:
    path="|".join(re.escape(spec["path"]) for spec in config.get("downloads", {}).values()) or r"(?!)",
    name=r"[A-Za-z0-9_]+",
    panel="|".join(PANELS),
    method="|".join(METHODS),
    split=r"split\d{3}",
    feature=r"pooled_drift|untrained_pooled_drift|top\d+|top\d+_rank\d+|top\d+_sparse",
    model="|".join(MODELS),
    mode="anchor|cell",
    dataset="|".join(["benchmark", *PANELS]),


def checkpoint_dir():
    """The scGPT checkpoint folder: the configured one, or the one the pipeline pretrains."""
    return config["model"]["checkpoint"] or "results/model/pretrained"


def checkpoint_files(directory=None):
    """The three files of an scGPT checkpoint folder."""
    directory = directory or checkpoint_dir()
    return {name: f"{directory}/{name}" for name in ("args.json", "vocab.json", "best_model.pt")}


def checkpoint_inputs(wildcards):
    """The checkpoint files to read (ancient unless the pipeline pretrains them) and their download stamps."""
    files = checkpoint_files()
    if config["model"]["checkpoint"] is None:
        return files
    return {**{k: ancient(v) for k, v in files.items()}, "verified": download_stamps(*files.values())}


def operator_checkpoint(wildcards):
    """The checkpoint whose attention is exported: the configured (or pretrained) one, or its untrained copy."""
    if wildcards.model == "untrained":
        return checkpoint_files("results/model/untrained")
    return checkpoint_inputs(wildcards)


def simulated_panel_path(wildcards):
    """The path a simulated panel is written to (its config `path`)."""
    return config["panels"][wildcards.panel]["path"]


DOWNLOADS = config.get("downloads", {})


def download_spec(path):
    """The `downloads:` entry (with its name) whose path is `path`."""
    for name, spec in DOWNLOADS.items():
        if spec["path"] == path:
            return {**spec, "name": name}
    raise WorkflowError(f"{path}: no config downloads entry has this path; add one, or place the file there")


def download_stamps(*paths):
    """Verification stamps of the configured downloads among `paths` (a user file without an entry has none)."""
    return [f"results/downloads/{n}.sha256" for n, spec in DOWNLOADS.items() if spec["path"] in paths]


def raw_panel(wildcards):
    """A panel's input .h5ad (+ its download stamp); user files are ancient() so touching them never re-triggers work."""
    spec = config["panels"][wildcards.panel]
    if "simulate" in spec:
        return {"panel": spec["path"]}
    return {"panel": ancient(spec["path"]), "verified": download_stamps(spec["path"])}


def feature_map_inputs(wildcards):
    """Operators (+ the head screen) for head maps; the base map for its rank-r and sparse surrogates.

    `untrained_pooled_drift` is the pooled-drift map of the untrained model's operators.
    """
    if wildcards.feature == "untrained_pooled_drift":
        return {"operators": "results/operators/untrained/operators.npz"}
    base, _, surrogate = wildcards.feature.partition("_")
    if surrogate and base.startswith("top"):
        return {"base": f"results/operators/{base}.npz"}
    inputs = {"operators": "results/operators/trained/operators.npz"}
    if base.startswith("top"):
        inputs["screen"] = "results/tables/head_screen.tsv"
    return inputs


def dataset_path(wildcards):
    """The prepared panel a per-cell cache covers: `benchmark` (the benchmark panel's genes) or a prepared panel."""
    return (
        "results/data/benchmark.h5ad" if wildcards.dataset == "benchmark" else f"results/data/{wildcards.dataset}.h5ad"
    )


def zero_shot_panel(wildcards):
    """The prepared immune panel for zero-shot transfer, if one is configured."""
    return ["results/data/immune.h5ad"] if "immune" in config["panels"] else []


def method_file(wildcards):
    """The method's code file, workflow/methods/<file or name>.py."""
    return f"workflow/methods/{config['methods'][wildcards.method].get('file', wildcards.method)}.py"


def method_inputs(wildcards):
    """A method's declared extra inputs (config methods.<name>.inputs); `{checkpoint}` is the checkpoint folder."""
    inputs = config["methods"][wildcards.method].get("inputs", {})
    return {key: path.replace("{checkpoint}", checkpoint_dir()) for key, path in inputs.items()}


def method_resource(name, default):
    """A per-method resource from its config entry, scaled by attempt for memory."""

    def get(wildcards, attempt=1):
        value = config["methods"][wildcards.method].get("resources", {}).get(name, default)
        return value * attempt if name == "mem_mb" else value

    return get


def method_env(wildcards):
    """The conda env file of a method."""
    return f"../../envs/{config['methods'][wildcards.method].get('env', 'core')}.yaml"


def feature_model(feature):
    """The model a feature map's operators come from: `<model>_<map>` names another model's map, else trained."""
    prefix = feature.split("_", 1)[0]
    return prefix if prefix in MODELS else "trained"


def one_time_benchmarks(method):
    """Benchmark files (by step) of the one-time builds behind a method's declared cache inputs (runtime_summary).

    A frozen latent: its frozen_latent job, adaptor, feature map(s), head screen (top-k maps) and operator export
    (plus the untrained copy for its maps); frozen embeddings: the embed_cells job. Shared upstream steps (prepare,
    gene panel, the demo's pretraining) are excluded, as the paper excludes its shared reference matrix.
    """
    steps = {}
    for path in config["methods"][method].get("inputs", {}).values():
        if m := re.fullmatch(r"results/latent/(\w+)_(anchor|cell)\.h5", path):
            feature, mode = m.groups()
            model = feature_model(feature)
            base = feature.split("_", 1)[0]
            steps[f"frozen_latent {feature}_{mode}"] = f"results/benchmarks/frozen_latent/{feature}_{mode}.tsv"
            steps[f"adaptor {feature}_{mode}"] = f"results/benchmarks/adaptor/{feature}_{mode}.tsv"
            for f in {feature, base} if re.fullmatch(r"top\d+", base) else {feature}:
                steps[f"feature_map {f}"] = f"results/benchmarks/feature_map/{f}.tsv"
            if re.fullmatch(r"top\d+", base):
                steps["head_screen"] = "results/benchmarks/head_screen.tsv"
            steps[f"export_operators {model}"] = f"results/benchmarks/export_operators/{model}.tsv"
            if model == "untrained":
                steps["untrained_model"] = "results/benchmarks/untrained_model.tsv"
        elif m := re.fullmatch(r"results/embeddings/(\w+)/(\w+)\.h5", path):
            steps[f"embed_cells {m[1]}/{m[2]}"] = f"results/benchmarks/embed_cells/{m[1]}/{m[2]}.tsv"
    return steps


def final_outputs():
    """Every table the default run produces."""
    return [
        "results/tables/metrics.tsv",
        "results/tables/stats.tsv",
        "results/tables/stats_donor_level.tsv",
        "results/tables/summary.tsv",
        "results/tables/runtime.tsv",
        "results/tables/runtime_summary.tsv",
        "results/tables/parameters.tsv",
        "results/tables/head_screen.tsv",
        "results/tables/manifold_validation.tsv",
        "results/tables/compression.tsv",
        "results/tables/factor_ablation.tsv",
        "results/tables/factor_programs.tsv",
        "results/figures/manifold.png",
        "results/head/fmextract_head.npz",
        *(["results/head/immune_applied.h5ad"] if "immune" in config["panels"] else []),
    ]
