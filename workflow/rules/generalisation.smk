# The generalisation experiment: new defects (other places, shapes and sizes) on the complete skulls of a
# dataset's test split, written in the dataset layout as the dataset <source>_generalisation. Its test cases
# go through preprocess -> infer -> ... -> metrics like any dataset: the MAE as trained, the baselines
# trained on the source's own defects (network_name), so it shows what each method learned.


rule generalisation_dataset:
    input:
        lambda wc: root_of(wc.source),
    output:
        directory(f"{RESULTS}/data/generalisation/{{source}}"),
    log:
        f"{RESULTS}/logs/generalisation_{{source}}.log",
    params:
        layout=lambda wc: canonical(config["datasets"][wc.source]["layout"]),
        spec=lambda wc: canonical(config["generalisation"][wc.source]),
    resources:
        mem_mb=8000,
        runtime=120,  # one job per source dataset: ~100 cases at 512^3
    conda:
        ENV
    script:
        "../scripts/generalisation.py"
