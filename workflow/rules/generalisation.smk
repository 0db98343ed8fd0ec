# The generalisation experiment: new defects (other places, shapes and sizes) on the complete skulls of a
# dataset's test split, written in the dataset layout as the dataset <source>_generalisation. Its test cases
# go through preprocess -> infer -> ... -> metrics like any dataset: the MAE as trained, the baselines
# trained on the source's own defects (model_file), so it shows what each method learned.


rule generalisation_dataset:
    input:
        lambda wc: root_of(wc.source),
    output:
        directory(f"{RESULTS}/data/generalisation/{{source}}"),
    log:
        f"{RESULTS}/logs/generalisation_{{source}}.log",
    params:
        layout=lambda wc: config["datasets"][wc.source]["layout"],
        spec=lambda wc: config["generalisation"][wc.source],
    resources:
        slurm_partition=lookup(dpath="slurm/partition", within=config, default=""),
        slurm_account=lookup(dpath="slurm/account", within=config, default=""),
    conda:
        ENV
    script:
        "../scripts/generalisation.py"
