"""Released first stages with and without the second stage (skullrecon.refine) on real skulls: per-case metrics and
a Table I with paired intervals (skullrecon.report), the first stage run once per case for both.

Each case goes the way ``skullrecon evaluate`` takes it (the network's probabilities rounded as the pipeline stores
them, then ``from_grid`` or ``refine_prediction``, the model's own post-processing, the AutoImplant metrics), so a
row here equals ``skullrecon evaluate --model M [--refiner R]`` on that case.

    python bench/refine.py --refiner results/realdata-skullfix/networks/refiner.pt --models mae_d mae_nd segresnet \
        --data ../shared/data/skullfix/training_set --ids 003 006 026 047 --out bench/results/refine-validation

Rows are keyed by the models' methods, so one call scores one run's releases (the CPU run's, or the GPU-trained
``mae_d_gpu mae_nd_gpu segresnet_gpu unet_gpu``).

``--out`` gets ``metrics/<dataset>/<method>[_refined].csv``, ``table1.md`` and ``table1_paired.csv`` (``seconds``:
the upsampling or the second stage, the post-processing and the metrics of the row; the files of
``bench/results/refine-*`` timed the first two only). Choose on
the trainers' validation skulls (003, 006, 026, 047: held out of every realdata trainer, first stages and second
stage alike); report on the test skulls.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from skullrecon.evaluate import cases_of, grid_probabilities, load_first_stages, score_probabilities
    from skullrecon.io import read_volume
    from skullrecon.models import load_model
    from skullrecon.report import write_rows_table1

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
    nets = load_first_stages(args.models, dev)  # keyed by method: Table I's rows
    rows: dict[str, list[dict]] = {}
    for case in cases_of(args.data, args.ids):
        defective, gt = read_volume(case.defective), read_volume(case.implant)
        for method, (name, net, spec) in nets.items():
            prob, grid_input, geom = grid_probabilities(net, spec, defective, dev)
            for key, second in ((method, None), (f"{method}_refined", refiner)):
                t = time.perf_counter()
                m = score_probabilities(prob, grid_input, geom, defective, gt, spec, dev, 10.0, second)
                rows.setdefault(key, []).append({"case": case.name, "defect_type": case.defect_type or "", **m,
                                                 "seconds": time.perf_counter() - t, "first_stage": name})
            stages = (method, f"{method}_refined")
            print(case.name, name, " ".join(f"{k} {rows[k][-1]['dsc']:.3f}/{rows[k][-1]['hd95']:.2f}" for k in stages),
                  flush=True)
    print(write_rows_table1(rows, args.out, args.dataset).read_text())


if __name__ == "__main__":
    main()
