# Runs first: validates the config and holds every input function of the workflow.
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = f"results/{config['run']}"
DATASETS = list(config["datasets"])
MAE_METHODS = [f"mae_{v}" for v in config["mae"]["variants"]]
BASELINES = list(config["baselines"]["methods"])
METHODS = MAE_METHODS + BASELINES
ENV = "../../envs/skullrecon.yaml"


# Light or network-bound rules run on the submit host, not as cluster jobs (`--profile slurm`).
localrules: all, download_dataset, synthesize_dataset, resolved_config, masking_examples, table1, figure3, figure4


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    baseline="|".join(BASELINES) or "none",
    variant="d|nd",
    split="train|test",


def dataset_root(wildcards):
    """Where a dataset's files are: generated, downloaded, or an existing copy."""
    ds = config["datasets"][wildcards.dataset]
    if ds["source"] == "data_dir":
        return ds["data_dir"]
    if ds["source"] == "synthetic":
        return f"{RESULTS}/data/{wildcards.dataset}"
    return f"{config['data_root']}/{wildcards.dataset}"


def model_file(wildcards):
    if wildcards.method.startswith("mae_"):
        return f"{RESULTS}/models/{wildcards.method}.pt"
    return f"{RESULTS}/models/{wildcards.method}_{wildcards.dataset}.pt"


def task_of(method):
    return "reconstruct" if method.startswith("mae_") else "implant"


def final_outputs():
    return [
        f"{RESULTS}/config.yaml",
        f"{RESULTS}/table1.md",
        f"{RESULTS}/table1.csv",
        f"{RESULTS}/figure4.png",
        f"{RESULTS}/figure3.png",
        f"{RESULTS}/masking_examples.png",
    ]


def all_metrics():
    return expand(f"{RESULTS}/metrics/{{dataset}}/{{method}}.csv", dataset=DATASETS, method=METHODS)
