"""What a perfect network could score at a given grid: the resolution ceiling of the MAE and of a baseline.

A perfect MAE outputs the complete skull as its grid sees it; a perfect baseline outputs the true
implant as its grid sees it. Both go back to the original grid as the pipeline takes them
(``from_grid``, threshold 0.5) and through the same implant extraction; the DSC and HD95 against the
true implant are what no training can beat at that grid. No network is involved.

    python bench/ceiling.py --data ../shared/data/skullfix/training_set --cases 001 002 005 --grids 64 128

``--boxes 128 192`` adds the ceiling of a second stage (issue 37): a perfect first stage at each grid, whose
upsampled implant plans a cube around the defect (its largest extent plus ``--box-margin``); a perfect second
stage restores the target on that cube's own ``box`` grid, and its output replaces the first stage's inside
the cube. The rows are named ``<grid>+box<box>``.

Run on training cases (the default: the nine ``realdata/`` validation cases of docs/ablation.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from skullrecon.io import read_volume
from skullrecon.metrics import evaluate_case
from skullrecon.postprocess import PostprocessConfig, extract_implant
from skullrecon.preprocess import from_grid, plan_crop, to_grid

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "skullfix" / "training_set"
VALIDATION = ["001", "002", "005", "010", "014", "017", "027", "034", "043"]
POSTPROCESS = {
    "paper": {"closing_mm": 3.0, "opening_mm": 0.0, "largest_component": False},
    "+open 1.6 +LC": {"closing_mm": 3.0, "opening_mm": 1.6, "largest_component": True},
}


def ceiling(data: Path, case: str, grid: int) -> list[dict]:
    defective = read_volume(data / "defective_skull" / f"{case}.nrrd")
    implant = read_volume(data / "implant" / f"{case}.nrrd").array
    complete = read_volume(data / "complete_skull" / f"{case}.nrrd").array
    geom = plan_crop(defective.array, defective.spacing, grid, 0.1)  # as the pipeline: from the input
    rows = []
    for method, target, task in (("perfect MAE", complete, "reconstruct"), ("perfect baseline", implant, "implant")):
        seen = (to_grid(target, geom) >= 0.5).astype(np.float32)  # the training target on the grid
        up = from_grid(seen, geom, 0.5)
        for name, pp in POSTPROCESS.items():
            found = extract_implant(up, defective.array, defective.spacing, task, PostprocessConfig.from_dict(pp))
            m = evaluate_case(found, implant, defective.array, defective.spacing)
            rows.append({"case": case, "grid": grid, "method": method, "postprocess": name, **m})
    return rows


def _inside(geom) -> tuple[slice, ...]:
    """The part of the original volume that a planned cube covers."""
    return tuple(slice(max(0, s), min(n, s + k)) for s, k, n in zip(geom.box_start, geom.box_size, geom.shape))


def box_ceiling(data: Path, case: str, grid: int, box_grid: int, box_margin: float) -> list[dict]:
    defective = read_volume(data / "defective_skull" / f"{case}.nrrd")
    implant = read_volume(data / "implant" / f"{case}.nrrd").array
    complete = read_volume(data / "complete_skull" / f"{case}.nrrd").array
    geom = plan_crop(defective.array, defective.spacing, grid, 0.1)
    # the cube is planned from what a perfect first stage fills (not the true implant): as a pipeline would
    first_implant = from_grid((to_grid(implant, geom) >= 0.5).astype(np.float32), geom, 0.5)
    box = plan_crop(first_implant if first_implant.any() else implant, defective.spacing, box_grid, box_margin)
    inside = _inside(box)
    voxel_mm = float(np.max(np.asarray(box.box_size) * np.asarray(box.spacing)) / box_grid)
    rows = []
    for method, target, task in (("perfect MAE", complete, "reconstruct"), ("perfect baseline", implant, "implant")):
        up = from_grid((to_grid(target, geom) >= 0.5).astype(np.float32), geom, 0.5)
        refined = from_grid((to_grid(target, box) >= 0.5).astype(np.float32), box, 0.5)
        up[inside] = refined[inside]
        for name, pp in POSTPROCESS.items():
            found = extract_implant(up, defective.array, defective.spacing, task, PostprocessConfig.from_dict(pp))
            m = evaluate_case(found, implant, defective.array, defective.spacing)
            rows.append({"case": case, "grid": f"{grid}+box{box_grid}", "box_voxel_mm": round(voxel_mm, 2),
                         "method": method, "postprocess": name, **m})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a SkullFix-layout folder of training triplets")
    ap.add_argument("--cases", nargs="+", default=VALIDATION)
    ap.add_argument("--grids", nargs="+", type=int, default=[64, 96, 128, 256])
    ap.add_argument("--boxes", nargs="*", type=int, default=[], help="second-stage cube grids (issue 37)")
    ap.add_argument("--box-margin", type=float, default=0.5,
                    help="room around the first stage's implant in the cube, a fraction of its largest extent")
    args = ap.parse_args()
    rows = []
    for grid in args.grids:
        for key in [grid] + [f"{grid}+box{b}" for b in args.boxes]:
            for case in args.cases:
                rows += (ceiling(args.data, case, grid) if key == grid else
                         box_ceiling(args.data, case, grid, int(key.split("box")[1]), args.box_margin))
            part = pd.DataFrame([r for r in rows if r["grid"] == key])
            print(part.groupby(["method", "postprocess"])[["dsc", "bdsc", "hd95"]].mean().round(3)
                  .rename(columns=lambda c: f"{c} @{key}").to_string(), flush=True)
            if "box_voxel_mm" in part:
                print(f"cube voxel: {part['box_voxel_mm'].min():.2f}-{part['box_voxel_mm'].max():.2f} mm", flush=True)
    df = pd.DataFrame(rows)
    df["grid"] = df["grid"].astype(str)
    print(f"\nmean over {len(args.cases)} cases ({', '.join(args.cases)}):")
    print(df.pivot_table(index=["method", "postprocess"], columns="grid", values=["dsc", "hd95"]).round(3).to_string())


if __name__ == "__main__":
    main()
