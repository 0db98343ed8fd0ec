import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # the library, also inside --sdm conda envs
from skullrecon.infer import upsample_cases
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    upsample_cases(
        pred_dir=snakemake.input.predictions,
        cases_tsv=f"{snakemake.input.cases}/cases.tsv",
        out_dir=snakemake.output[0],
        threshold=snakemake.params.threshold,
    )
