# skullrecon: cranial defect reconstruction with self-supervised deformable masked autoencoders.
# The paper run: `snakemake --cores N` (config.yaml); the offline demo: `snakemake --profile demo`;
# a SLURM cluster: `snakemake --profile slurm`. Rules live in workflow/rules/, one file per stage.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the paper's run; a --configfile (e.g. the demo's) replaces it whole instead of being
# merged into it, so no paper setting leaks into another run.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/generalisation.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/postprocess.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
