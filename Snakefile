# fmextract: extract a compact algorithm from scGPT attention and benchmark it on donor-holdout splits.
# Default: the embedded demo (config/config.yaml). Paper: --configfile config/paper.yaml.
from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the demo config instead of being merged into it (no demo simulate: blocks or methods leak
# into a run on real data); each config file is complete on its own.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/operators.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/interpret.smk"
include: "workflow/rules/head.smk"
include: "workflow/rules/failures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
        # the report's tables: those of REPORT_TABLES (report.smk) that a rule makes, checked once every rule is known
        lambda wc: [f"results/report/{t}.html" for t in report_tables()],
