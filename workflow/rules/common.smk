# Runs first: validates the config and holds every input function of the workflow.
import math
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = f"results/{config['run']}"
# the SkullBreak-like dataset (issue 38): SkullBreak's five kinds cut into another dataset's complete skulls, its
# split kept (rules/skullbreaklike.smk); trained on by the baselines and scored like a configured dataset
SKULLBREAKLIKE = config.get("skullbreaklike")
if SKULLBREAKLIKE and SKULLBREAKLIKE["source"] not in config["datasets"]:
    raise ValueError(f"config skullbreaklike.source: no dataset {SKULLBREAKLIKE['source']!r} under datasets to take skulls from")
DATASETS = sorted(config["datasets"]) + (["skullbreaklike"] if SKULLBREAKLIKE else [])  # YAML order must not matter
# the generalisation experiment: <source>_generalisation holds new defects on the source's test skulls
GENERALISATION = {f"{src}_generalisation": src for src in sorted(config.get("generalisation") or {})}
for _src in GENERALISATION.values():
    if _src not in config["datasets"]:
        raise ValueError(f"config generalisation.{_src}: no dataset {_src!r} under datasets to take test skulls from")
ALL_DATASETS = DATASETS + list(GENERALISATION)
# scored_datasets: Table I's blocks (default: every one); a dataset left out gets no baseline trained on it
# (realdata/run-skullbreaklike.yaml: the SkullBreak-like block alone, SkullFix only the source of its skulls)
EVAL_DATASETS = [d for d in ALL_DATASETS if d in (config.get("scored_datasets") or ALL_DATASETS)]
for _name in config.get("scored_datasets") or []:
    if _name not in ALL_DATASETS:
        raise ValueError(f"config scored_datasets: no dataset {_name!r} in this run (it has {', '.join(ALL_DATASETS)})")
TRAINED_DATASETS = [d for d in DATASETS if d in {GENERALISATION.get(e, e) for e in EVAL_DATASETS}]
MAE_METHODS = [f"mae_{v}" for v in config["mae"]["variants"]]
RELEASED_MAE = {v: n for v, n in (config["mae"].get("released") or {}).items() if v in config["mae"]["variants"]}
TRAINED_VARIANTS = [v for v in config["mae"]["variants"] if v not in RELEASED_MAE]
BASELINES = list(config["baselines"]["methods"])
METHODS = MAE_METHODS + BASELINES


def followed_methods(block):
    """The first stages a second stage's config block follows: its methods (default every one); none if absent."""
    if config.get(block) is None:
        return []
    methods = list(config[block].get("methods") or METHODS)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"config {block}.methods: no method {m!r} in this run (it has {', '.join(METHODS)})")
    return methods


# the second stage (rules/refine.smk): <method>_refined rows for the first stages it refines; absent, single stage only
REFINE = config.get("refine")
REFINED_FIRST = followed_methods("refine")
if REFINE and REFINE["grid"] % config["preprocess"]["grid"]:
    raise ValueError(f"config refine.grid {REFINE['grid']} must be a multiple of preprocess.grid "
                     f"{config['preprocess']['grid']}")
REFINE_GRID = REFINE["grid"] if REFINE else 0
REFINED = [f"{m}_refined" for m in REFINED_FIRST]
# the surface stage (rules/surface.smk): <method>_surface rows for the first stages it follows; absent, none
SURFACE = config.get("surface")
SURFACE_FIRST = followed_methods("surface")
SURFACED = [f"{m}_surface" for m in SURFACE_FIRST]
SHAPE_MODEL = bool((SURFACE or {}).get("shape_model"))  # the surface stage with a shape model of healthy skulls
SCORED_METHODS = METHODS + REFINED + SURFACED
ENV = "../../envs/skullrecon.yaml"


# Light or network-bound rules run on the submit host, not as cluster jobs (`--profile slurm`).
# Partition, account and GPU model of the others are cluster settings: slurm/config.yaml.
localrules: all, download_dataset, synthesize_dataset, resolved_config, released_mae, bundle_model, masking_examples, table1, figure3, figure4, training_curves


wildcard_constraints:
    dataset="|".join(ALL_DATASETS),
    source="|".join(GENERALISATION.values()) or "none",
    method="|".join(SCORED_METHODS),
    baseline="|".join(BASELINES) or "none",
    variant="d|nd",
    split="train|test",
    network="|".join(MAE_METHODS + [f"{b}_{d}" for b in BASELINES for d in DATASETS]),


def canonical(value):
    """``value`` with every mapping's keys in sorted order, recursively.

    Snakemake compares a rule's params with those of its last run by their printed form, so a
    config section must print the same however its YAML was ordered: rewriting the config with
    sorted keys then reruns nothing.
    """
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def setting(*keys):
    """The config section at ``keys`` in canonical form (for params)."""
    value = config
    for key in keys:
        value = value[key]
    return canonical(value)


def baseline_train(method, dataset=None):
    """The baselines' training settings, with ``method``'s own epoch budget where the config gives one, and
    its budget on ``dataset`` above that (the workflow does not import the library:
    skullrecon.settings.baseline_train does the same)."""
    train = dict(config["baselines"]["train"])
    for own in ((config["baselines"].get("epochs_per_method") or {}).get(method),
                ((config["baselines"].get("epochs_per_dataset") or {}).get(dataset) or {}).get(method)):
        if own is not None:
            train["epochs"] = own
    return canonical(train)


def root_of(dataset):
    """Where a dataset's files are: generated, downloaded, an existing copy, or derived (generalisation)."""
    if dataset in GENERALISATION:
        return f"{RESULTS}/data/generalisation/{GENERALISATION[dataset]}"
    if dataset == "skullbreaklike":
        return f"{RESULTS}/data/skullbreaklike"
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
        return canonical({"train": "testing", "test": "testing", "types": list(locations)})
    if dataset == "skullbreaklike":  # SkullBreak's own layout (skullrecon.skullbreaklike.FOLDERS)
        return canonical({"train": "training", "test": "evaluation", "types": list(SKULLBREAKLIKE["kinds"])})
    return canonical(config["datasets"][dataset]["layout"])


def network_name(wildcards):
    """The trained network a method uses on a dataset: one MAE for all, one baseline per dataset."""
    if wildcards.method.startswith("mae_"):
        return wildcards.method
    # a generalisation set is scored with the baselines trained on its source's own defects
    return f"{wildcards.method}_{GENERALISATION.get(wildcards.dataset, wildcards.dataset)}"


def network_file(wildcards):
    return f"{RESULTS}/networks/{network_name(wildcards)}.pt"


def trained_network_names():
    """The networks this run trains (each with its training curve): not those taken from a release."""
    first = [n for n in network_names() if n.removeprefix("mae_") not in RELEASED_MAE or not n.startswith("mae_")]
    return first + (["refiner"] if REFINE else [])


def network_names():
    return MAE_METHODS + [f"{b}_{d}" for b in BASELINES for d in TRAINED_DATASETS]


def task_of(method):
    return "reconstruct" if method.startswith("mae_") else "implant"


def final_outputs():
    return [
        f"{RESULTS}/config.yaml",
        f"{RESULTS}/env.json",
        f"{RESULTS}/table1.md",
        f"{RESULTS}/table1.csv",
        f"{RESULTS}/figure4.png",
        f"{RESULTS}/figure3.png",
        f"{RESULTS}/masking_examples.png",
        f"{RESULTS}/training_curves.png",
        *expand(f"{RESULTS}/models/{{network}}.pt", network=network_names()),
        *([f"{RESULTS}/networks/refiner.pt"] if REFINE else []),
    ]


def all_metrics():
    return expand(f"{RESULTS}/metrics/{{dataset}}/{{method}}.csv", dataset=EVAL_DATASETS, method=SCORED_METHODS)


# Job sizes (what a job needs, not where it runs: partitions, account and GPU model are in the
# slurm profile). Host memory of the GPU jobs grows with the grid and with each retry.
def gpu_job_mem_mb(paper_mb):
    scale = (config["preprocess"]["grid"] / 256) ** 3
    return lambda wildcards, attempt: int(max(2000, paper_mb * scale) * attempt)


# A GPU job's share of one card, in eighths, for one machine (`--profile gpu`, docs/gpu.md): the
# profile gives Snakemake `gpu_slots=8` per card and never starts more GPU jobs than fit. The work
# per step grows with the grid's voxels and the paper's networks keep a card busy at 256^3 (about
# 110 ms per step on an H100, bench/results/gpu-h100.txt), so a 256^3 job takes the whole card and
# a smaller grid's job its fraction of 256^3, at least one eighth: up to 8 side by side at 64^3 or
# 128^3. A SLURM job gets a card of its own (`gpu=1`); the SLURM plugin does not read gpu_slots.
GPU_SLOTS = 8


def gpu_slots():
    share = (config["preprocess"]["grid"] / 256) ** 3
    return min(GPU_SLOTS, max(1, math.ceil(GPU_SLOTS * share)))
