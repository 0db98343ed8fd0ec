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
    conda:
        ENV
    script:
        "../scripts/infer.py"
