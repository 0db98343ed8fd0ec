"""Train a second-stage variant outside the DAG (a pilot, to be chosen on the validation skulls with
``bench/refine.py``): ``realdata/run.yaml``'s refine section and MAE (D) masks on the realdata run's 128^3 healthy
training skulls, with another epoch count and, optionally, a first-stage network whose outputs on the masked
healthy skulls it learns from instead of the simulated ones (``RefineDataset``'s ``first_stage``).

    python bench/refine_pilot.py --epochs 12 --first-stage models/mae_d_gpu.pt --out results/refine-pilot/r5b
    python bench/refine.py --refiner results/refine-pilot/r5b/refiner.pt --models mae_d_gpu mae_nd_gpu \
        segresnet_gpu unet_gpu --data ../shared/data/skullfix/training_set --ids 003 006 026 047 --out ...

The trainer holds out the same 4 validation skulls as every realdata trainer (003, 006, 026, 047).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import yaml


def main() -> None:
    from skullrecon.refine import refine_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("realdata/run.yaml"))
    ap.add_argument("--data", type=Path, default=Path("results/realdata-skullfix/preprocessed_fine/skullfix/train"))
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--first-stage", help="a first-stage model file to learn from (default: the simulated one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    run = yaml.safe_load(args.config.read_text())
    refine = {**run["refine"], "train": {**run["refine"]["train"], "epochs": args.epochs}}
    args.out.mkdir(parents=True, exist_ok=True)
    # the train_refiner job's own entry point, with the epochs and first stage changed (per-epoch log: history.csv)
    refine_run([args.data], args.out / "refiner.pt", args.out / "training.csv", args.out, refine, run["mae"]["masking"],
               run["preprocess"]["grid"], run["preprocess"]["margin"], device="cpu", first_stage=args.first_stage)


if __name__ == "__main__":
    main()
