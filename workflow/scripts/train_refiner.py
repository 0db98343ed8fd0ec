import torch
from skullrecon.refine import refine_run
from skullrecon.runlog import to_file

torch.set_num_threads(snakemake.threads)  # what the rule was given, not every core of the node
p = snakemake.params
with to_file(snakemake.log[0]):
    refine_run(
        input_dirs=snakemake.input.skulls,
        first_stage=snakemake.input.first_stage or None,
        model_path=snakemake.output.model,
        history_path=snakemake.output.history,
        checkpoint_dir=p.checkpoints,
        refine=p.refine,
        masking=p.masking,
        coarse_grid=p.grid,
        margin=p.margin,
        device=p.device,
    )
