# Centre, crop to the skull, resample to the grid; keep what inverts it.


rule preprocess:
    input:
        dataset_root,
    output:
        directory(f"{RESULTS}/preprocessed/{{dataset}}/{{split}}"),
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}_{{split}}.log",
    params:
        layout=lambda wc: layout_of(wc.dataset),
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
    resources:
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/preprocess.py"
