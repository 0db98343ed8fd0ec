# Network predictions on the grid for every test case.


rule infer:
    input:
        model=model_file,
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        directory(f"{RESULTS}/predictions/{{dataset}}/{{method}}"),
    log:
        f"{RESULTS}/logs/infer/{{dataset}}_{{method}}.log",
    params:
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
        "../scripts/infer.py"
