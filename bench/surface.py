"""Released first stages with and without the surface stage (skullrecon.surfaces): per-case metrics and a Table I
with paired intervals (skullrecon.report), the first stage run once per case for every row.

Each case goes the way ``skullrecon evaluate`` takes it (the network's probabilities rounded as the pipeline stores
them, ``from_grid``, the model's own post-processing): that is the single-stage row. The surface stage starts from
that implant, continues the skull's surfaces over the hole it fills and makes the implant by the MAE's rule
(closing 2 mm, opening 1 mm, largest component) for every method: one stage, the same for all.

Choose on the trainers' validation skulls (003, 006, 026, 047: held out of every realdata trainer), every setting
pair of ``--margins`` x ``--weights`` a row ``surface_m<margin>_w<weight>``:

    python bench/surface.py --models mae_d_gpu --data ../shared/data/skullfix/training_set \
        --ids 003 006 026 047 --margins 3 4 6 --weights 0 0.5 1 --out bench/results/surface-choice

then report on the test skulls with the chosen pair (the defaults), once.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def main() -> None:
    from skullrecon.evaluate import cases_of, grid_probabilities, load_first_stages, score_probabilities
    from skullrecon.io import read_volume
    from skullrecon.metrics import evaluate_case
    from skullrecon.postprocess import PostprocessConfig, extract_implant
    from skullrecon.preprocess import from_grid
    from skullrecon.report import write_rows_table1
    from skullrecon.surfaces import SurfaceConfig, surface_implant

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", required=True, help="released first stages (names or files)")
    ap.add_argument("--data", type=Path, required=True, help="a split folder (defective_skull/, implant/)")
    ap.add_argument("--ids", nargs="*", help="case ids (default all)")
    ap.add_argument("--dataset", default="skullfix", help="the block's name in the table")
    ap.add_argument("--margins", type=int, nargs="+", default=[SurfaceConfig.margin_deg])
    ap.add_argument("--weights", type=float, nargs="+", default=[SurfaceConfig.weight])
    ap.add_argument("--shape-models", nargs="+", default=["none"], help="shape model files (skullrecon.shape_model) "
                    "or none: each a variant (none: the harmonic fill alone)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--perfect", action="store_true", help="the stage's ceiling: start from the true implant instead "
                    "of the first stage's (the single-stage rows are then the networks' own)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    chosen = len(args.margins) == 1 and len(args.weights) == 1 and len(args.shape_models) == 1
    # the chosen variant's rows are <method>_surface, which Table I pairs (skullrecon.report's second-stage rows)
    shapes = [None if s == "none" else s for s in args.shape_models]
    variants = [(SurfaceConfig(margin_deg=m, weight=w, shape_model=s),
                 "surface" if chosen else f"surface_m{m}_w{w:g}" + ("_ssm" if s else ""))
                for m in args.margins for w in args.weights for s in shapes]
    nets = load_first_stages(args.models, dev)  # keyed by method: Table I's rows
    rows: dict[str, list[dict]] = {}
    for case in cases_of(args.data, args.ids):
        defective, gt = read_volume(case.defective), read_volume(case.implant)
        for method, (name, net, spec) in nets.items():
            prob, grid_input, geom = grid_probabilities(net, spec, defective, dev)
            t = time.perf_counter()
            single = score_probabilities(prob, grid_input, geom, defective, gt, spec, dev)
            rows.setdefault(method, []).append({"case": case.name, "defect_type": case.defect_type or "", **single,
                                                "seconds": time.perf_counter() - t, "first_stage": name})
            post = PostprocessConfig.from_dict(spec["postprocess"])
            first = extract_implant(from_grid(prob, geom, post.threshold), defective.array, defective.spacing,
                                    spec["task"], post) > 0
            if args.perfect:
                first = gt.array > 0
            line = [f"{case.name} {name}: single {single['dsc']:.3f}/{single['hd95']:.2f}"]
            for cfg, label in variants:
                t = time.perf_counter()
                implant = surface_implant(first, defective.array, defective.spacing, cfg)
                m = evaluate_case(implant, gt.array, defective.array, gt.spacing, 10.0)
                key = f"{method}_{label}"
                rows.setdefault(key, []).append({"case": case.name, "defect_type": case.defect_type or "", **m,
                                                 "seconds": time.perf_counter() - t, "first_stage": name})
                line.append(f"{label} {m['dsc']:.3f}/{m['hd95']:.2f}")
            print("  ".join(line), flush=True)
    print(write_rows_table1(rows, args.out, args.dataset).read_text())


if __name__ == "__main__":
    main()
