# Table I, Figures 3 and 4, the masking examples, the training curves, and the resolved config and
# software versions of the run: everything `snakemake --report` shows.


rule resolved_config:
    output:
        config=report(f"{RESULTS}/config.yaml", caption="../report/config.rst", category="Run"),
        env=report(f"{RESULTS}/env.json", caption="../report/env.rst", category="Run"),
    log:
        f"{RESULTS}/logs/resolved_config.log",
    params:
        config=canonical(config),
        source_dir=workflow.basedir,
    conda:
        ENV
    script:
        "../scripts/resolved_config.py"


rule table1:
    input:
        metrics=all_metrics(),
        paper=workflow.source_path("../report/paper_table1.csv"),
    output:
        csv=report(f"{RESULTS}/table1.csv", caption="../report/table1.rst", category="Table I"),
        md=report(f"{RESULTS}/table1.md", caption="../report/table1.rst", category="Table I"),
        paired=report(f"{RESULTS}/table1_paired.csv", caption="../report/table1.rst", category="Table I"),
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
        masking=setting("mae", "masking"),
    conda:
        ENV
    script:
        "../scripts/masking_examples.py"


rule training_curves:
    input:
        expand(f"{RESULTS}/training/{{network}}.csv", network=trained_network_names()),
    output:
        report(f"{RESULTS}/training_curves.png", caption="../report/training_curves.rst", category="Figures"),
    log:
        f"{RESULTS}/logs/training_curves.log",
    conda:
        ENV
    script:
        "../scripts/training_curves.py"
