# Data: the published archives (verified, resumable), or the offline synthetic dataset.


rule download_dataset:
    wildcard_constraints:
        dataset="|".join(sorted(config["datasets"])),  # a configured dataset, not a derived one
    output:
        directory(f"{config['data_root']}/{{dataset}}"),
    log:
        f"{config['data_root']}/logs/download_{{dataset}}.log",
    params:
        dest_root=lambda wc, output: str(Path(output[0]).parent),
    conda:
        ENV
    script:
        "../scripts/download.py"


rule synthesize_dataset:
    wildcard_constraints:
        dataset="|".join(sorted(config["datasets"])),  # a configured dataset, not a derived one
    output:
        directory(f"{RESULTS}/data/{{dataset}}"),
    log:
        f"{RESULTS}/logs/synthesize_{{dataset}}.log",
    params:
        spec=lambda wc: canonical(config["datasets"][wc.dataset]["synthetic"]),
        types=lambda wc: config["datasets"][wc.dataset]["layout"].get("types"),
    conda:
        ENV
    script:
        "../scripts/synthesize.py"
