# Centre, crop to the skull, resample to the grid; keep what inverts it.


rule preprocess:
    input:
        dataset_root,
    output:
        directory(f"{RESULTS}/preprocessed/{{dataset}}/{{split}}"),
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}_{{split}}.log",
    params:
        layout=lambda wc: config["datasets"][wc.dataset]["layout"],
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
    conda:
        ENV
    script:
        "../scripts/preprocess.py"
