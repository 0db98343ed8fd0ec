import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # the library, also inside --sdm conda envs
from skullrecon.infer import infer_cases
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    infer_cases(
        model_path=snakemake.input.model,
        cases_dir=f"{snakemake.input.cases}/cases",
        out_dir=snakemake.output[0],
        device=snakemake.params.device,
    )
