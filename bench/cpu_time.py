"""How many CPU-seconds a run's trainings will take on this machine, measured before starting it.

    python bench/cpu_time.py --config realdata/run.yaml --cases 45      # the realdata/ run on this CPU

The three hours of ``snakemake --profile realdata`` hold on a CPU with native bf16 and not on one
without (docs/ablation.md: the same seven trainings took 4 times the CPU for a baseline on an AMD EPYC).
This says which before the run, in a few minutes. Each training job of the config (both MAE variants,
every baseline, a method's own ``baselines.epochs_per_method``) is built and stepped as the trainer does
it, one thread: :func:`skullrecon.train.build_training` (network, AdamW, loss), bf16 and channels-last
where the trainer would use them (:func:`~skullrecon.train.uses_bf16`,
:func:`~skullrecon.train.uses_channels_last`), :func:`~skullrecon.train.train_step` on random binary
grids at the config's grid and batch size. Per job: epochs x (training steps x median step + validation
cases x median forward). Masks and loading are left out (whole epochs measured 1.05-1.09 times their
steps on the EPYC), and so are preprocessing and the post-processing after training.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from skullrecon.settings import baseline_train
from skullrecon.train import (LossConfig, TrainConfig, _split, build_training, train_step, uses_channels_last)


def jobs(cfg: dict) -> list[dict]:
    """Every training job of a run config: name, arch, network, training settings, task, loss."""
    mae = cfg["mae"]
    out = [{"name": f"mae_{v}", "arch": mae["arch"], "network": mae["network"], "train": mae["train"],
            "task": "reconstruct", "loss": mae.get("loss")} for v in mae["variants"]]
    for method in cfg["baselines"]["methods"]:
        out.append({"name": method, "arch": method, "network": cfg["baselines"]["networks"][method],
                    "train": baseline_train(cfg, method), "task": "implant", "loss": None})
    return out


def time_job(job: dict, grid: int, cases: int, steps: int) -> dict:
    """Median CPU-seconds of a training step and of a validation forward pass, and the job's total."""
    cpu = torch.device("cpu")
    train = TrainConfig.from_dict(job["train"])
    loss_cfg = LossConfig.from_dict(job["loss"]) if job["task"] == "reconstruct" else None
    spec = {"arch": job["arch"], "network": job["network"], "grid": grid,
            "keep_input": bool(loss_cfg and loss_cfg.keeps_input)}
    net, opt, _, loss_fn, bf16 = build_training(spec, train, cpu, loss_cfg)
    channels_last = uses_channels_last(train, cpu, bf16)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(train.batch_size, 1, grid, grid, grid, generator=gen) > 0.9).float()
    y = torch.maximum(x, (torch.rand(x.shape, generator=gen) > 0.95).float())
    step = []
    for i in range(steps + 1):  # the first step (allocations, oneDNN's kernel choice) is not counted
        t0 = time.process_time()
        float(train_step(net, opt, loss_fn, x, y, cpu, bf16, channels_last))
        step.append(time.process_time() - t0)
    forward = []
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(steps + 1):
            t0 = time.process_time()
            net(x[:1])
            forward.append(time.process_time() - t0)
    n_train, n_val = (len(s) for s in _split([Path(f"{i:03d}") for i in range(cases)], train.val_fraction, train.seed))
    per_epoch = math.ceil(n_train / train.batch_size) * statistics.median(step[1:]) + n_val * statistics.median(forward[1:])
    return {"job": job["name"], "epochs": train.epochs, "bf16": bf16, "channels_last": channels_last,
            "step_s": statistics.median(step[1:]), "epoch_s": per_epoch, "job_s": per_epoch * train.epochs}


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("realdata/run.yaml"))
    ap.add_argument("--cases", type=int, default=45, help="training cases (the realdata/ split: 45)")
    ap.add_argument("--cores", type=int, default=2, help="cores the run gets, one job per core")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per job, after one untimed")
    ap.add_argument("--grid", type=int, default=None, help="network grid (default: the config's)")
    ap.add_argument("--only", nargs="+", default=None, help="these jobs only (mae_d, unet, ...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = yaml.safe_load(args.config.read_text())
    grid = args.grid or cfg["preprocess"]["grid"]
    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"# {cpu_name()}, {args.config} at {grid}^3, {args.cases} training cases, "
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
