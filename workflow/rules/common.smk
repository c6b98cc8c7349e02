# Everything that is not a rule: config validation, wildcard constraints, helpers, final targets.
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fmextract.config import check_config
from fmextract.methods import method_family, pseudotime_supervision
from fmextract.metrics import check_paper_endpoints
from fmextract.models import DEFAULT_KIND, layout
from fmextract.models import checkpoint_files as kind_checkpoint_files
from fmextract.splits import split_plan

check_config(config, os.path.join(workflow.basedir, "config", "schema.yaml"), source="config")
validate(config, schema="../../config/schema.yaml")

SEED = config["seed"]
#: the foundation model's kind (fmextract.models.<kind>); its checkpoint layout is read without importing torch
MODEL_KIND = config["model"].get("kind", DEFAULT_KIND)
MODEL_LAYOUT = layout(MODEL_KIND)
PANELS = list(config["panels"])
METHODS = list(config["methods"])
#: retries of a method job (rule run_method's own `retries`, so that the job knows its last attempt on any executor)
METHOD_RETRIES = config.get("methods_retries", 2)
#: split blocks: one block of n_splits, or the paper's 40 all-method + 24 + 24 core-only (splits.design: paper)
BLOCKS = split_plan(
    config["splits"].get("n_splits"), config["splits"].get("design"), scale=config["splits"].get("scale", 1.0)
)
SPLITS = [f"split{i:03d}" for i in range(sum(n for _, n in BLOCKS))]
#: per-split rules (run_method, compression_split, factor_*_split): one job per split, or one over all splits
#: (splits.jobs: all_in_one; the same output files, each split's start-up cost paid once per job instead of per split)
ALL_IN_ONE = config["splits"].get("jobs", "per_split") == "all_in_one"
if ALL_IN_ONE and len(BLOCKS) > 1:
    raise WorkflowError(
        "config splits.jobs: all_in_one runs every method on every split, but splits.design gives several blocks "
        "(core: false methods run only the first); set splits.jobs: per_split, or use splits.n_splits"
    )


def per_split(pattern):
    """A per-split rule's output: the pattern (one job per split), or its paths for every split (all_in_one)."""
    return [pattern.replace("{split}", s) for s in SPLITS] if ALL_IN_ONE else pattern


def per_job(pattern):
    """A per-split rule's log or benchmark: per split, or one per job ({split} -> all_splits) when all_in_one."""
    return pattern.replace("{split}", "all_splits") if ALL_IN_ONE else pattern


#: (method, split) pairs to run: `core: false` methods run only the first (all-method) block
METHOD_SPLITS = [
    (m, s) for m in METHODS for s in (SPLITS if config["methods"][m].get("core", True) else SPLITS[: BLOCKS[0][1]])
]
#: BH family of each method in stats.tsv, and whether its pseudotime is supervised (a readout) or unsupervised
METHOD_FAMILIES = {m: method_family(m, spec) for m, spec in config["methods"].items()}
#: the paper's eight endpoints (config endpoints.paper): the losses out of 8 and the BH families count exactly these
PAPER_ENDPOINTS = check_paper_endpoints(config["endpoints"]["paper"], config["endpoints"]["subtypes"])
PSEUDOTIME_SUPERVISION = {m: pseudotime_supervision(spec) for m, spec in config["methods"].items()}
_C = config["compression"]
#: compaction chain, in order (each rung is compared with the one before it and with pooled drift): pooled heads ->
#: best single head -> rank-r surrogates, largest rank first -> hard-sparse (cut from the rank-`ablation_rank` surrogate)
COMPRESSION_VARIANTS = [
    "pooled_drift",
    _C["base"],
    *(f"{_C['base']}_rank{r}" for r in sorted(_C["ranks"], reverse=True)),
    f"{_C['base']}_sparse",
]
ABLATION_MAP = f"{_C['base']}_rank{_C['ablation_rank']}"
SPARSE_MAP = f"{_C['base']}_sparse"
if _C["ablation_rank"] not in _C["ranks"]:
    raise WorkflowError(
        f"config compression.ablation_rank = {_C['ablation_rank']} is not in compression.ranks {_C['ranks']}; add it"
    )
#: operator definitions read from the checkpoint alone (= fmextract.operators.WEIGHT_DEFINITIONS; torch not imported here)
WEIGHT_DEFINITIONS = ("qk_weights", "ov_weights")
ALL_DEFINITIONS = ("attention_prob", "qk_raw", *WEIGHT_DEFINITIONS)
#: the operator definition every benchmark map uses, and those compared in operator_definitions.tsv
DEFINITION = config["operators"]["definition"]
COMPARED = list(dict.fromkeys([DEFINITION, *config["operators"].get("compare", ALL_DEFINITIONS)]))
#: feature maps manifold validation scores (its name -> the feature map), each with both frozen adaptors
VALIDATED_MAPS = {
    "pooled_drift": "pooled_drift",
    "raw_expression": "raw",
    "raw_pca": "raw_pca",
    "untrained": "untrained_pooled_drift",
    "planted": "planted_pooled_drift",
}
#: models whose heads are screened: the trained checkpoint and the planted-head positive control
SCREENED_MODELS = ["trained", "planted"]
#: checkpoints whose attention is exported: the configured (or pretrained) model, its untrained copy, the planted one
MODELS = ["trained", "untrained", "planted"]


wildcard_constraints:
    path="|".join(re.escape(spec["path"]) for spec in config.get("downloads", {}).values()) or r"(?!)",
    name=r"[A-Za-z0-9_]+",
    panel="|".join(PANELS),
    method="|".join(METHODS),
    split=r"split\d{3}",
    feature=r"raw|raw_pca|(?:untrained_|planted_)?(?:pooled_drift|top\d+|top\d+_rank\d+|top\d+_sparse)",
    model="|".join(MODELS),
    definition="|".join(ALL_DEFINITIONS),
    mode="anchor|cell",
    dataset="|".join(["benchmark", *PANELS]),


def checkpoint_dir():
    """The model's checkpoint folder: the configured one, or the one the pipeline pretrains."""
    return config["model"]["checkpoint"] or "results/model/pretrained"


def checkpoint_files(directory=None):
    """{file name: path} of a checkpoint folder of the configured model kind (its module's CHECKPOINT_FILES)."""
    return kind_checkpoint_files(MODEL_KIND, directory or checkpoint_dir())


def vocabulary_file():
    """The checkpoint file holding the model's gene vocabulary (its module's VOCABULARY_FILE)."""
    return checkpoint_files()[MODEL_LAYOUT["VOCABULARY_FILE"]]


def checkpoint_inputs(wildcards):
    """The checkpoint files to read (ancient unless the pipeline pretrains them) and their download stamps."""
    files = checkpoint_files()
    if config["model"]["checkpoint"] is None:
        return files
    return {**{k: ancient(v) for k, v in files.items()}, "verified": download_stamps(*files.values())}


def operator_checkpoint(wildcards):
    """The checkpoint whose heads are exported: the configured (or pretrained) one, its untrained or planted copy."""
    if wildcards.model in ("untrained", "planted"):
        return checkpoint_files(f"results/model/{wildcards.model}")
    return checkpoint_inputs(wildcards)


def operator_data(wildcards):
    """Context cells of a forward-pass definition; weights-only definitions read no data."""
    if wildcards.definition in WEIGHT_DEFINITIONS:
        return {}
    return {"h5ad": "results/data/benchmark.h5ad", "reference_donors": "results/data/reference_donors.txt"}


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
    """Operators (+ the head screen) for head maps; the base map for its rank-r surrogates, the rank-`ablation_rank`
    surrogate for the hard-sparse one; the gene panel for `raw` (the identity map of the adaptor_raw control and of
    the raw-expression comparator); the pooled-drift map and the reference cells for `raw_pca` (the PCA comparator).

    A `untrained_` or `planted_` prefix takes that model's operators (and screen); the configured definition always.
    """
    if wildcards.feature == "raw":
        return {"genes": "results/data/gene_panel.txt"}
    if wildcards.feature == "raw_pca":  # comparator: PCA of reference cells, as wide as the pooled-drift map
        return {
            "width_of": "results/operators/pooled_drift.npz",
            "h5ad": "results/data/benchmark.h5ad",
            "reference_donors": "results/data/reference_donors.txt",
        }
    model, feature = feature_model(wildcards.feature)
    base, _, surrogate = feature.partition("_")
    if surrogate == "sparse" and base.startswith("top"):
        prefix = wildcards.feature.removesuffix(feature)
        return {"base": f"results/operators/{prefix}{base}_rank{config['compression']['ablation_rank']}.npz"}
    if surrogate and base.startswith("top"):
        return {"base": f"results/operators/{wildcards.feature.removesuffix(f'_{surrogate}')}.npz"}
    inputs = {"operators": f"results/operators/{model}/{DEFINITION}.npz"}
    if base.startswith("top"):
        inputs["screen"] = f"results/screen/{model}/{DEFINITION}.tsv"
    return inputs


def dataset_path(wildcards):
    """The prepared panel a per-cell cache covers: `benchmark` (the benchmark panel's genes) or a prepared panel."""
    return (
        "results/data/benchmark.h5ad" if wildcards.dataset == "benchmark" else f"results/data/{wildcards.dataset}.h5ad"
    )


def zero_shot_panel(wildcards):
    """The prepared immune panel for zero-shot transfer, if one is configured."""
    return ["results/data/immune.h5ad"] if "immune" in config["panels"] else []


def mismatched_panel(wildcards):
    """The prepared mismatched-compartment panel and its own lineage ruler (stage table, graph), if one is configured."""
    if "mismatched" not in config["panels"]:
        return {}
    spec = config["panels"]["mismatched"]
    return {
        "mismatched": "results/data/mismatched.h5ad",
        "mismatched_stage_table": spec["stage_table"],
        "mismatched_stage_graph": spec["stage_graph"],
    }


def validated_adaptors(wildcards):
    """Each validated map's two frozen adaptors (anchor- and cell-trained), all made by the adaptor rule."""
    return {
        f"{name}_{mode}": f"results/adaptor/{feature}_{mode}.npz"
        for name, feature in VALIDATED_MAPS.items()
        for mode in ("anchor", "cell")
    }


def panel_stage_table(wildcards):
    """The stage table a panel's labels map onto: its own (the mismatched compartment's lineage table) or the data's."""
    return config["panels"][wildcards.panel].get("stage_table", config["data"]["stage_table"])


def method_file(wildcards):
    """The method's code file, workflow/methods/<file or name>.py."""
    return f"workflow/methods/{config['methods'][wildcards.method].get('file', wildcards.method)}.py"


def method_inputs(wildcards):
    """A method's declared extra inputs (config methods.<name>.inputs); `{checkpoint}` is the checkpoint folder."""
    inputs = config["methods"][wildcards.method].get("inputs", {})
    return {key: path.replace("{checkpoint}", checkpoint_dir()) for key, path in inputs.items()}


def method_resource(name, default):
    """A per-method resource from its config entry; memory and runtime grow with the attempt (a retry gets more)."""

    def get(wildcards, attempt=1):
        value = config["methods"][wildcards.method].get("resources", {}).get(name, default)
        if name == "runtime" and ALL_IN_ONE:  # a runtime is per split: the job runs them all
            value *= len(SPLITS)
        return value * attempt if name in ("mem_mb", "runtime") else value

    return get


def method_env(wildcards):
    """The conda env file of a method."""
    return f"../../envs/{config['methods'][wildcards.method].get('env', 'core')}.yaml"


def feature_model(feature):
    """(model, map) of a feature name: `<model>_<map>` names another model's map, anything else the trained one's."""
    prefix, _, rest = feature.partition("_")
    return (prefix, rest) if prefix in MODELS and prefix != "trained" else ("trained", feature)


def one_time_benchmarks(method):
    """Benchmark files (by step) of the one-time builds behind a method's declared cache inputs (runtime_summary).

    A frozen latent: its frozen_latent job, adaptor, feature map(s), head screen (top-k maps) and operator export
    (plus the untrained or planted model for their maps); frozen embeddings: the embed_cells job. Shared upstream
    steps (prepare, gene panel, the demo's pretraining) are excluded, as the paper excludes its shared reference matrix.
    """
    steps = {}
    for path in config["methods"][method].get("inputs", {}).values():
        if m := re.fullmatch(r"results/latent/(\w+)_(anchor|cell)\.h5", path):
            feature, mode = m.groups()
            model, own = feature_model(feature)
            base = own.split("_", 1)[0]
            steps[f"frozen_latent {feature}_{mode}"] = f"results/benchmarks/frozen_latent/{feature}_{mode}.tsv"
            steps[f"adaptor {feature}_{mode}"] = f"results/benchmarks/adaptor/{feature}_{mode}.tsv"
            steps[f"feature_map {feature}"] = f"results/benchmarks/feature_map/{feature}.tsv"
            if feature == "raw":  # the identity map: no operators
                continue
            if re.fullmatch(r"top\d+", base):
                steps[f"head_screen {model}"] = f"results/benchmarks/head_screen/{model}_{DEFINITION}.tsv"
            steps[f"export_operators {model}"] = f"results/benchmarks/export_operators/{model}_{DEFINITION}.tsv"
            if model != "trained":
                steps[f"{model}_model"] = f"results/benchmarks/{model}_model.tsv"
        elif m := re.fullmatch(r"results/embeddings/(\w+)/(\w+)\.h5", path):
            steps[f"embed_cells {m[1]}/{m[2]}"] = f"results/benchmarks/embed_cells/{m[1]}/{m[2]}.tsv"
    return steps


def report_tables():
    """The tables of REPORT_TABLES (report.smk) that some rule of this workflow makes (call once every rule is known)."""
    return [t for t in REPORT_TABLES if any(r.is_producer(f"results/tables/{t}.tsv") for r in workflow.rules)]


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
        "results/tables/stage_roles.tsv",
        *[f"results/tables/label_coverage_{p}.tsv" for p in PANELS],
        "results/tables/operator_definitions.tsv",
        "results/tables/manifold_validation.tsv",
        "results/tables/gate_separation.tsv",
        "results/tables/attribution.tsv",
        "results/tables/planted_factor_programs.tsv",
        "results/tables/compression.tsv",
        "results/tables/factor_ablation.tsv",
        "results/tables/factor_programs.tsv",
        "results/tables/paper_comparison.tsv",
        "results/summary.md",
        "results/report.html",
        "results/figures/manifold.png",
        "results/head/fmextract_head.npz",
        *(["results/head/immune_applied.h5ad"] if "immune" in config["panels"] else []),
    ]
