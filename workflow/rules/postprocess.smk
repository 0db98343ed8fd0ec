# Back to each case's original grid and spacing, then the implant by morphology.


rule upsample:
    input:
        predictions=f"{RESULTS}/predictions/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        directory(f"{RESULTS}/upsampled/{{dataset}}/{{method}}"),
    log:
        f"{RESULTS}/logs/upsample/{{dataset}}_{{method}}.log",
    params:
        threshold=config["postprocess"]["threshold"],
    resources:
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/upsample.py"


rule extract_implants:
    input:
        upsampled=f"{RESULTS}/upsampled/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        directory(f"{RESULTS}/implants/{{dataset}}/{{method}}"),
    log:
        f"{RESULTS}/logs/extract/{{dataset}}_{{method}}.log",
    params:
        task=lambda wc: task_of(wc.method),
        postprocess=config["postprocess"],
    resources:
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/extract_implants.py"
