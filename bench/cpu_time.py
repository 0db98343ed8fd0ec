"""How many CPU-seconds a run's trainings will take on this machine, measured before starting it.

    python bench/cpu_time.py --config realdata/run.yaml --cases 45      # the realdata/ run on this CPU
    python bench/cpu_time.py --config realdata/run-skullbreaklike.yaml  # its SkullBreak-like block on its own

The three hours of ``snakemake --profile realdata`` hold on a CPU with native bf16 and not on one
without (docs/ablation.md: the same seven trainings took 4 times the CPU for a baseline on an AMD EPYC).
This says which before the run, in a few minutes. Each training job of the config (both MAE variants,
every baseline, a method's own ``baselines.epochs_per_method``) is built and stepped as the trainer does
it, one thread, by ``bench/gpu.py``'s own timers in CPU-seconds: ``time_steps`` (the trainer's
:func:`~skullrecon.train.build_training` and :func:`~skullrecon.train.train_step`, so bf16 and channels-last
where the trainer would use them, on random binary grids at the config's grid, or its ``crop``, and batch size) and
``time_forward`` (one case's forward pass). Per job, as ``bench/gpu.py`` projects a GPU's: epochs x
(training steps x median step + validation cases x median forward). Masks and loading are left out
(whole epochs measured 1.05-1.09 times their steps on the EPYC), and so are preprocessing and the
post-processing after training.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import yaml

from gpu import card_name, time_forward, time_steps  # bench/gpu.py: the same steps, timed for a GPU
from skullrecon.settings import baseline_train
from skullrecon.train import TrainConfig, _split


def trained_datasets(cfg: dict) -> list[str]:
    """The datasets a run trains baselines on, as the workflow decides (workflow/rules/common.smk): every
    configured one and the SkullBreak-like set, less those ``scored_datasets`` leaves out."""
    datasets = sorted(cfg["datasets"]) + (["skullbreaklike"] if cfg.get("skullbreaklike") else [])
    scored = cfg.get("scored_datasets")
    if scored:
        datasets = [d for d in datasets if d in {s.removesuffix("_generalisation") for s in scored}]
    return datasets


def jobs(cfg: dict) -> list[dict]:
    """Every training job of a run config: name, arch, network, training settings, loss and cases a skull
    (``gpu.trainings`` lists the paper run's, with its datasets' case counts; here the skulls are ``--cases``).
    An MAE variant taken from a release (``mae.released``) trains nothing; a baseline trains once per dataset
    (named ``<method>_<dataset>`` where there are several), on the SkullBreak-like set five pairs a skull."""
    mae = cfg["mae"]
    released = mae.get("released") or {}
    out = [{"name": f"mae_{v}", "arch": mae["arch"], "network": mae["network"], "train": mae["train"],
            "loss": mae.get("loss"), "per_skull": 1} for v in mae["variants"] if v not in released]
    datasets = trained_datasets(cfg)
    for dataset in datasets:
        per_skull = len(cfg["skullbreaklike"]["kinds"]) if dataset == "skullbreaklike" else 1
        for method in cfg["baselines"]["methods"]:
            out.append({"name": method if len(datasets) == 1 else f"{method}_{dataset}", "arch": method,
                        "network": cfg["baselines"]["networks"][method], "train": baseline_train(cfg, method, dataset),
                        "loss": None, "per_skull": per_skull})
    return out


def time_job(job: dict, grid: int, cases: int, steps: int) -> dict:
    """Median CPU-seconds of a training step and of a forward pass (:func:`gpu.time_steps`,
    :func:`gpu.time_forward`, the first of each untimed), and the job's total (``cases`` skulls, each
    ``job['per_skull']`` training cases, split by skull as the trainer splits them)."""
    cpu = torch.device("cpu")
    step = time_steps(job["arch"], job["network"], job["train"], grid, cpu, warmup=1, repeats=steps,
                      loss=job["loss"], clock=time.process_time)
    forward = time_forward(job["arch"], job["network"], grid, cpu, warmup=1, repeats=steps, clock=time.process_time)
    train = TrainConfig.from_dict(job["train"])
    files = [Path(f"k{k}_{i:03d}") for i in range(cases) for k in range(job.get("per_skull", 1))]
    n_train, n_val = (len(s) for s in _split(files, train.val_fraction, train.seed))
    per_epoch = math.ceil(n_train / train.batch_size) * step["step_s"] + n_val * forward
    return {"job": job["name"], "epochs": train.epochs, "bf16": step["bf16"], "channels_last": step["channels_last"],
            "step_s": step["step_s"], "epoch_s": per_epoch, "job_s": per_epoch * train.epochs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("realdata/run.yaml"))
    ap.add_argument("--cases", type=int, default=45, help="training skulls (the realdata/ split: 45)")
    ap.add_argument("--cores", type=int, default=2, help="cores the run gets, one job per core")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per job, after one untimed")
    ap.add_argument("--grid", type=int, default=None, help="network grid (default: the config's)")
    ap.add_argument("--only", nargs="+", default=None, help="these jobs only (mae_d, unet, ...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = yaml.safe_load(args.config.read_text())
    grid = args.grid or cfg["preprocess"]["grid"]
    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"# {card_name(torch.device('cpu'))}, {args.config} at {grid}^3, {args.cases} training skulls, "
          f"one thread per job; native bf16: {native_bf16}")
    rows = []
    for job in jobs(cfg):
        if args.only and job["name"] not in args.only:
            continue
        r = time_job(job, grid, args.cases, args.steps)
        rows.append(r)
        print(f"{r['job']:14s} {r['epochs']:4d} epochs  step {r['step_s']:6.3f} CPU-s  epoch {r['epoch_s']:7.1f}  "
              f"job {r['job_s']:8.0f} CPU-s  (bf16 {r['bf16']}, channels-last {r['channels_last']})", flush=True)
    total = sum(r["job_s"] for r in rows)
    wall = max(total / args.cores, max(r["job_s"] for r in rows))
    print(f"trainings: {total:,.0f} CPU-s; on {args.cores} cores at least {wall / 3600:.2f} h of training "
          f"(perfect packing; masks, loading, preprocessing and post-processing not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
