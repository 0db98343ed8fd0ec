# The MAE (healthy skulls only, D and ND masks) and the supervised baselines, one trainer.
# Checkpoints live in checkpoints/, which Snakemake never deletes: a rerun resumes there.


rule train_mae:
    input:
        expand(f"{RESULTS}/preprocessed/{{dataset}}/train", dataset=config["mae"]["datasets"]),
    output:
        model=f"{RESULTS}/models/mae_{{variant}}.pt",
        history=f"{RESULTS}/training/mae_{{variant}}.csv",
    log:
        f"{RESULTS}/logs/train/mae_{{variant}}.log",
    params:
        method=lambda wc: f"mae_{wc.variant}",
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/mae_{wc.variant}",
        mae=config["mae"],
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
        postprocess=config["postprocess"],
        device=config["device"],
    threads: 2
    resources:
        gpu=1,
        gpu_model=lookup(dpath="slurm/gpu_model", within=config, default=""),
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/train_mae.py"


rule train_baseline:
    input:
        f"{RESULTS}/preprocessed/{{dataset}}/train",
    output:
        model=f"{RESULTS}/models/{{baseline}}_{{dataset}}.pt",
        history=f"{RESULTS}/training/{{baseline}}_{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/train/{{baseline}}_{{dataset}}.log",
    params:
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/{wc.baseline}_{wc.dataset}",
        network=lambda wc: config["baselines"]["networks"].get(wc.baseline, {}),
        train=config["baselines"]["train"],
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
        postprocess=config["postprocess"],
        device=config["device"],
    threads: 2
    resources:
        gpu=1,
        gpu_model=lookup(dpath="slurm/gpu_model", within=config, default=""),
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/train_baseline.py"
