import torch
from skullrecon.runlog import to_file
from skullrecon.train import train_run

torch.set_num_threads(snakemake.threads)  # what the rule was given, not every core of the node
p = snakemake.params
with to_file(snakemake.log[0]):
    train_run(
        task="implant",
        input_dirs=list(snakemake.input),
        model_path=snakemake.output.model,
        history_path=snakemake.output.history,
        checkpoint_dir=p.checkpoints,
        method=snakemake.wildcards.baseline,
        arch=snakemake.wildcards.baseline,
        network=p.network,
        train=p.train,
        grid=p.grid,
        margin=p.margin,
        device=p.device,
    )
