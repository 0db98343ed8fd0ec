# Network predictions on the grid for every test case: temporary where upsample is their only reader; kept where a
# second stage reads them too (rules/refine.smk), so that changing it runs neither inference nor upsampling again.


rule infer:
    wildcard_constraints:
        method="|".join(METHODS),
    input:
        model=network_file,
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        directory(f"{RESULTS}/predictions/{{dataset}}/{{method}}")
        if REFINE
        else temp(directory(f"{RESULTS}/predictions/{{dataset}}/{{method}}")),
    log:
        f"{RESULTS}/logs/infer/{{dataset}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/infer/{{dataset}}_{{method}}.tsv"
    params:
        device=config["device"],
    threads: 8
    retries: 2
    resources:
        gpu=1,
        gpu_slots=gpu_slots(),
        mem_mb=gpu_job_mem_mb(32000),
        runtime=lambda wc, attempt: 120 * attempt,
    conda:
        ENV
    script:
        "../scripts/infer.py"
