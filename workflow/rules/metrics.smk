# DSC, boundary DSC and HD95 (mm) per test case, AutoImplant conventions.


rule metrics:
    input:
        implants=f"{RESULTS}/implants/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        f"{RESULTS}/metrics/{{dataset}}/{{method}}.csv",
    log:
        f"{RESULTS}/logs/metrics/{{dataset}}_{{method}}.log",
    params:
        margin_mm=config["metrics"]["boundary_margin_mm"],
    resources:
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/metrics.py"
