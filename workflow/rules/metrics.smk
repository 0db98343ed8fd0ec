# DSC, boundary DSC and HD95 (mm) per test case, AutoImplant conventions.


rule metrics:
    input:
        implants=f"{RESULTS}/implants/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        report(
            f"{RESULTS}/metrics/{{dataset}}/{{method}}.csv",
            caption="../report/metrics.rst",
            category="Per-case metrics",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "method": "{method}"},
        ),
    log:
        f"{RESULTS}/logs/metrics/{{dataset}}_{{method}}.log",
    params:
        margin_mm=config["metrics"]["boundary_margin_mm"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/metrics.py"
