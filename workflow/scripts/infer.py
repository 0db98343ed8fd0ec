from skullrecon.infer import infer_cases
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    infer_cases(
        model_path=snakemake.input.model,
        cases_dir=f"{snakemake.input.cases}/cases",
        out_dir=snakemake.output[0],
        device=snakemake.params.device,
    )
