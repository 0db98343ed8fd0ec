from skullrecon.infer import upsample_cases
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    upsample_cases(
        pred_dir=snakemake.input.predictions,
        cases_tsv=f"{snakemake.input.cases}/cases.tsv",
        out_dir=snakemake.output[0],
        threshold=snakemake.params.threshold,
    )
