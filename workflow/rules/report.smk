# Table I, Figure 3, Figure 4, the masking examples and the resolved config of the run.


rule resolved_config:
    output:
        f"{RESULTS}/config.yaml",
    log:
        f"{RESULTS}/logs/resolved_config.log",
    params:
        config=config,
    conda:
        ENV
    script:
        "../scripts/resolved_config.py"


rule table1:
    input:
        metrics=all_metrics(),
        paper="workflow/report/paper_table1.csv",
    output:
        csv=report(f"{RESULTS}/table1.csv", caption="../report/table1.rst", category="Table I"),
        md=f"{RESULTS}/table1.md",
    log:
        f"{RESULTS}/logs/table1.log",
    conda:
        ENV
    script:
        "../scripts/table1.py"


rule figure4:
    input:
        all_metrics(),
    output:
        report(f"{RESULTS}/figure4.png", caption="../report/figure4.rst", category="Figures"),
    log:
        f"{RESULTS}/logs/figure4.log",
    conda:
        ENV
    script:
        "../scripts/figure4.py"


rule figure3:
    input:
        implants=expand(f"{RESULTS}/implants/{{dataset}}/{{method}}", dataset=EVAL_DATASETS, method=METHODS),
        cases=expand(f"{RESULTS}/preprocessed/{{dataset}}/test", dataset=EVAL_DATASETS),
    output:
        report(f"{RESULTS}/figure3.png", caption="../report/figure3.rst", category="Figures"),
    log:
        f"{RESULTS}/logs/figure3.log",
    params:
        datasets=EVAL_DATASETS,
        methods=METHODS,
        results=lambda wc, output: str(Path(output[0]).parent),
    conda:
        ENV
    script:
        "../scripts/figure3.py"


rule masking_examples:
    input:
        expand(f"{RESULTS}/preprocessed/{{dataset}}/train", dataset=config["mae"]["datasets"]),
    output:
        report(f"{RESULTS}/masking_examples.png", caption="../report/masking.rst", category="Figures"),
    log:
        f"{RESULTS}/logs/masking_examples.log",
    params:
        masking=config["mae"]["masking"],
    conda:
        ENV
    script:
        "../scripts/masking_examples.py"
