# Centre, crop to the skull, resample to the grid; keep what inverts it.


rule preprocess:
    input:
        dataset_root,
    output:
        directory(f"{RESULTS}/preprocessed/{{dataset}}/{{split}}"),
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}_{{split}}.log",
    params:
        layout=lambda wc: layout_of(wc.dataset),
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,  # one job per dataset and split: ~570 SkullBreak cases
    conda:
        ENV
    script:
        "../scripts/preprocess.py"
