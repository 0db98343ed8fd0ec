"""What a perfect network could score at a given grid: the resolution ceiling of the MAE and of a baseline.

A perfect MAE outputs the complete skull as its grid sees it; a perfect baseline outputs the true
implant as its grid sees it. Both go back to the original grid as the pipeline takes them
(``from_grid``, threshold 0.5) and through the same implant extraction; the DSC and HD95 against the
true implant are what no training can beat at that grid. No network is involved.

    python bench/ceiling.py --data ../shared/data/skullfix/training_set --cases 001 002 005 --grids 64 128

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a SkullFix-layout folder of training triplets")
    ap.add_argument("--cases", nargs="+", default=VALIDATION)
    ap.add_argument("--grids", nargs="+", type=int, default=[64, 96, 128, 256])
    args = ap.parse_args()
    rows = []
    for grid in args.grids:
        for case in args.cases:
            rows += ceiling(args.data, case, grid)
        part = pd.DataFrame([r for r in rows if r["grid"] == grid])
        print(part.groupby(["method", "postprocess"])[["dsc", "bdsc", "hd95"]].mean().round(3)
              .rename(columns=lambda c: f"{c} @{grid}").to_string(), flush=True)
    df = pd.DataFrame(rows)
    print(f"\nmean over {len(args.cases)} cases ({', '.join(args.cases)}):")
    print(df.pivot_table(index=["method", "postprocess"], columns="grid", values=["dsc", "hd95"]).round(3).to_string())


if __name__ == "__main__":
    main()
