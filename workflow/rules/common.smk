# Runs first: validates the config and holds every input function of the workflow.
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = f"results/{config['run']}"
DATASETS = list(config["datasets"])
# the generalisation experiment: <source>_generalisation holds new defects on the source's test skulls
GENERALISATION = {f"{src}_generalisation": src for src in config.get("generalisation") or {}}
for _src in GENERALISATION.values():
    if _src not in config["datasets"]:
        raise ValueError(f"config generalisation.{_src}: no dataset {_src!r} under datasets to take test skulls from")
EVAL_DATASETS = DATASETS + list(GENERALISATION)  # every dataset scored in Table I and the figures
MAE_METHODS = [f"mae_{v}" for v in config["mae"]["variants"]]
BASELINES = list(config["baselines"]["methods"])
METHODS = MAE_METHODS + BASELINES
ENV = "../../envs/skullrecon.yaml"


# Light or network-bound rules run on the submit host, not as cluster jobs (`--profile slurm`).
localrules: all, download_dataset, synthesize_dataset, resolved_config, masking_examples, table1, figure3, figure4


wildcard_constraints:
    dataset="|".join(EVAL_DATASETS),
    source="|".join(GENERALISATION.values()) or "none",
    method="|".join(METHODS),
    baseline="|".join(BASELINES) or "none",
    variant="d|nd",
    split="train|test",


def root_of(dataset):
    """Where a dataset's files are: generated, downloaded, an existing copy, or derived (generalisation)."""
    if dataset in GENERALISATION:
        return f"{RESULTS}/data/generalisation/{GENERALISATION[dataset]}"
    ds = config["datasets"][dataset]
    if ds["source"] == "data_dir":
        return ds["data_dir"]
    if ds["source"] == "synthetic":
        return f"{RESULTS}/data/{dataset}"
    return f"{config['data_root']}/{dataset}"


def dataset_root(wildcards):
    return root_of(wildcards.dataset)


def layout_of(dataset):
    """A dataset's layout; a derived one as skullrecon.defects.derived_layout writes it (test cases only)."""
    if dataset in GENERALISATION:
        locations = config["generalisation"][GENERALISATION[dataset]]["locations"]
        return {"train": "testing", "test": "testing", "types": list(locations)}
    return config["datasets"][dataset]["layout"]


def model_file(wildcards):
    if wildcards.method.startswith("mae_"):
        return f"{RESULTS}/models/{wildcards.method}.pt"
    # a generalisation set is scored with the baselines trained on its source's own defects
    source = GENERALISATION.get(wildcards.dataset, wildcards.dataset)
    return f"{RESULTS}/models/{wildcards.method}_{source}.pt"


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
    return expand(f"{RESULTS}/metrics/{{dataset}}/{{method}}.csv", dataset=EVAL_DATASETS, method=METHODS)
