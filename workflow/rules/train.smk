# The MAE (healthy skulls only, D and ND masks) and the supervised baselines, one trainer.
# A network file holds what training determined; post-processing settings are added by
# bundle_model, so changing them never plans a training job. Checkpoints live in checkpoints/,
# which Snakemake never deletes: a retried or rerun job resumes there.


rule train_mae:
    wildcard_constraints:
        variant="|".join(TRAINED_VARIANTS) or "none",
    input:
        expand(f"{RESULTS}/preprocessed/{{dataset}}/train", dataset=config["mae"]["datasets"]),
    output:
        model=f"{RESULTS}/networks/mae_{{variant}}.pt",
        history=f"{RESULTS}/training/mae_{{variant}}.csv",
    log:
        f"{RESULTS}/logs/train/mae_{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/mae_{{variant}}.tsv"
    params:
        method=lambda wc: f"mae_{wc.variant}",
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/mae_{wc.variant}",
        # the MAE section less what the DAG already reflects (which variants, which input datasets)
        mae=lambda wc: canonical({k: v for k, v in config["mae"].items() if k not in ("datasets", "variants")}),
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
        device=config["device"],
    threads: 8
    # trainings before anything that could wait, so that the other rules' jobs fill the cores around them
    priority: 1
    # a time limit or a lost node: the next attempt resumes from the last checkpoint
    retries: 5
    resources:
        gpu=1,
        gpu_slots=gpu_slots(),
        mem_mb=gpu_job_mem_mb(64000),
        runtime=24 * 60,
    conda:
        ENV
    script:
        "../scripts/train_mae.py"


# mae.released: a variant's network taken from a released model instead of trained (the SkullBreak-like block on
# its own, realdata/run-skullbreaklike.yaml): refused unless the release learned from this run's MAE datasets with
# the same test skulls held out, on the same grid (skullrecon.release.network_from_release)
rule released_mae:
    wildcard_constraints:
        variant="|".join(RELEASED_MAE) or "none",
    output:
        model=f"{RESULTS}/networks/mae_{{variant}}.pt",
    log:
        f"{RESULTS}/logs/train/mae_{{variant}}.log",
    params:
        name=lambda wc: RELEASED_MAE[wc.variant],
    conda:
        ENV
    script:
        "../scripts/released_mae.py"


rule train_baseline:
    input:
        f"{RESULTS}/preprocessed/{{dataset}}/train",
    output:
        model=f"{RESULTS}/networks/{{baseline}}_{{dataset}}.pt",
        history=f"{RESULTS}/training/{{baseline}}_{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/train/{{baseline}}_{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{baseline}}_{{dataset}}.tsv"
    params:
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/{wc.baseline}_{wc.dataset}",
        network=lambda wc: canonical(config["baselines"]["networks"].get(wc.baseline, {})),
        train=lambda wc: baseline_train(wc.baseline, wc.dataset),
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
        device=config["device"],
    threads: 8
    # the slowest network first: on the demo's 2 cores SwinUNETR (415 of 1490 training CPU-seconds) was
    # started sixth and then ran alone for 4 minutes
    priority: lambda wc: 2 if wc.baseline == "swinunetr" else 1
    retries: 5
    resources:
        gpu=1,
        gpu_slots=gpu_slots(),
        mem_mb=gpu_job_mem_mb(64000),
        runtime=24 * 60,
    conda:
        ENV
    script:
        "../scripts/train_baseline.py"


rule bundle_model:
    input:
        f"{RESULTS}/networks/{{network}}.pt",
    output:
        f"{RESULTS}/models/{{network}}.pt",
    log:
        f"{RESULTS}/logs/bundle_model/{{network}}.log",
    params:
        postprocess=setting("postprocess"),
    conda:
        ENV
    script:
        "../scripts/bundle_model.py"
