import torch
from skullrecon.runlog import to_file
from skullrecon.train import train_run

torch.set_num_threads(snakemake.threads)  # what the rule was given, not every core of the node
p = snakemake.params
with to_file(snakemake.log[0]):
    train_run(
        task="reconstruct",
        input_dirs=snakemake.input,
        model_path=snakemake.output.model,
        history_path=snakemake.output.history,
        checkpoint_dir=p.checkpoints,
        method=p.method,
        arch=p.mae["arch"],
        network=p.mae["network"],
        train=p.mae["train"],
        grid=p.grid,
        margin=p.margin,
        masking=p.mae["masking"],
        augment=p.mae.get("augment"),
        loss=p.mae.get("loss"),
        device=p.device,
    )
