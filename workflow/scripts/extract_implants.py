from skullrecon.infer import extract_cases
from skullrecon.postprocess import PostprocessConfig
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    extract_cases(
        upsampled_dir=snakemake.input.upsampled,
        cases_tsv=f"{snakemake.input.cases}/cases.tsv",
        out_dir=snakemake.output[0],
        task=snakemake.params.task,
        cfg=PostprocessConfig.from_dict(snakemake.params.postprocess),
    )
