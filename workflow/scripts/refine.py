import torch
from skullrecon.refine import refine_cases
from skullrecon.runlog import to_file

torch.set_num_threads(snakemake.threads)
with to_file(snakemake.log[0]):
    refine_cases(
        pred_dir=snakemake.input.predictions,
        cases_dir=snakemake.input.cases,
        refiner_path=snakemake.input.refiner,
        out_dir=snakemake.output[0],
        task=snakemake.params.task,
        threshold=snakemake.params.threshold,
        device=snakemake.params.device,
    )
