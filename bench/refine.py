"""Released first stages with and without the second stage (skullrecon.refine) on real skulls: per-case metrics and
a Table I with paired intervals (skullrecon.report), the first stage run once per case for both.

Each case goes the way ``skullrecon evaluate`` takes it (the network's probabilities rounded as the pipeline stores
them, then ``from_grid`` or ``refine_prediction``, the model's own post-processing, the AutoImplant metrics), so a
row here equals ``skullrecon evaluate --model M [--refiner R]`` on that case.

    python bench/refine.py --refiner results/realdata-skullfix/networks/refiner.pt --models mae_d mae_nd segresnet \
        --data ../shared/data/skullfix/training_set --ids 003 006 026 047 --out bench/results/refine-validation

Rows are keyed by the models' methods, so one call scores one run's releases (the CPU run's, or the GPU-trained
``mae_d_gpu mae_nd_gpu segresnet_gpu unet_gpu``).

``--out`` gets ``metrics/<dataset>/<method>[_refined].csv``, ``table1.md`` and ``table1_paired.csv``. Choose on
the trainers' validation skulls (003, 006, 026, 047: held out of every realdata trainer, first stages and second
stage alike); report on the test skulls.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from skullrecon.evaluate import cases_of
    from skullrecon.infer import predict, stored_probabilities
    from skullrecon.io import read_volume
    from skullrecon.metrics import evaluate_case
    from skullrecon.models import load_model
    from skullrecon.postprocess import PostprocessConfig, extract_implant
    from skullrecon.preprocess import from_grid, preprocess_volume
    from skullrecon.refine import refine_prediction
    from skullrecon.release import resolve_model
    from skullrecon.report import write_table1

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refiner", required=True, help="a second stage's model file")
    ap.add_argument("--models", nargs="+", required=True, help="released first stages (names or files)")
    ap.add_argument("--data", type=Path, required=True, help="a split folder (defective_skull/, implant/)")
    ap.add_argument("--ids", nargs="*", help="case ids (default all)")
    ap.add_argument("--dataset", default="skullfix", help="the block's name in the table")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    refiner = load_model(args.refiner, dev)
    nets = {}
    for name in args.models:  # keyed by method (mae_d, segresnet...): Table I's rows and the paired references
        path, sha = resolve_model(name)
        net, spec = load_model(path, dev, need_postprocess=True, sha256=sha)
        if spec["method"] in nets:
            raise SystemExit(f"{name}: a second {spec['method']} first stage; score one run's releases at a time")
        nets[spec["method"]] = (name, net, spec)
    rows: dict[str, list[dict]] = {}
    for case in cases_of(args.data, args.ids):
        defective, gt = read_volume(case.defective), read_volume(case.implant)
        for method, (name, net, spec) in nets.items():
            post = PostprocessConfig.from_dict(spec["postprocess"])
            grid_input, geom = preprocess_volume(defective.array, defective.spacing, spec["grid"], spec["margin"])
            prob = stored_probabilities(predict(net, grid_input, dev)).astype(np.float32)
            t = time.perf_counter()
            stages = {method: from_grid(prob, geom, post.threshold)}
            t_single = time.perf_counter() - t
            t = time.perf_counter()
            stages[f"{method}_refined"] = refine_prediction(defective.array, prob, grid_input, geom, spec["task"],
                                                            *refiner, dev, post.threshold)
            t_refined = time.perf_counter() - t
            for key, prediction in stages.items():
                implant = extract_implant(prediction, defective.array, defective.spacing, spec["task"], post)
                m = evaluate_case(implant, gt.array, defective.array, gt.spacing, 10.0)
                rows.setdefault(key, []).append({"case": case.name, "defect_type": case.defect_type or "", **m,
                                                 "seconds": t_refined if key.endswith("_refined") else t_single,
                                                 "first_stage": name})
            print(case.name, name, " ".join(f"{k} {rows[k][-1]['dsc']:.3f}/{rows[k][-1]['hd95']:.2f}" for k in stages),
                  flush=True)
    folder = args.out / "metrics" / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, table in rows.items():
        pd.DataFrame(table).to_csv(folder / f"{key}.csv", index=False)
        paths.append(folder / f"{key}.csv")
    write_table1(paths, args.out / "table1.csv", args.out / "table1.md", paired_csv=args.out / "table1_paired.csv")
    print((args.out / "table1.md").read_text())


if __name__ == "__main__":
    main()
