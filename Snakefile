# skullrecon: cranial defect reconstruction with self-supervised deformable masked autoencoders.
# The paper run: `snakemake --cores N` (config.yaml); the offline demo: `snakemake --profile demo`;
# a SLURM cluster: `snakemake --profile slurm`. Rules live in workflow/rules/, one file per stage.
import os

from snakemake.utils import min_version

min_version("9.0")


# Which config: `config` starts out holding what the command line gave (--configfile, then --config).
# A config file that defines `datasets` describes a whole run (demo/run.yaml, realdata/*.yaml, a copy
# of config.yaml) and is used as it is, so no paper setting leaks into another run. Otherwise the
# workflow's config.yaml (the paper's run) is loaded and the command line's values are merged onto
# it, Snakemake's documented --configfile/--config semantics (e.g. `--config device=cpu`, or a
# --configfile holding only `postprocess:`). Cluster jobs get the same arguments, so they decide
# the same; Snakemake 9's --replace-workflow-config is not forwarded to cluster jobs.
if "datasets" not in config:

    configfile: workflow.source_path("config.yaml")


# envs/skullrecon.post-deploy.sh installs this workflow's library into the rules' conda env
# (--sdm conda); this tells it where the workflow is, wherever Snakemake runs from.
os.environ.setdefault("SKULLRECON_WORKFLOW_DIR", workflow.basedir)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/generalisation.smk"
include: "workflow/rules/skullbreaklike.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/postprocess.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/shape_model.smk"
include: "workflow/rules/surface.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
