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

``--refine 128`` adds the ceiling of the second stage as built (:mod:`skullrecon.refine`): a perfect second stage on
a finer grid of the same box, inside the region it refines around a perfect first stage's fill (``roi_margin_mm``
of the config's ``refine`` section, 15 mm by default). The rows are named ``<grid>+refine<fine>``.

Run on training cases (the default: the nine ``realdata/`` validation cases of docs/ablation.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skullrecon.io import read_volume
from skullrecon.metrics import evaluate_case
from skullrecon.postprocess import PostprocessConfig, extract_implant
from skullrecon.preprocess import _overlap, from_grid, plan_crop, to_grid
from skullrecon.refine import RefineConfig, _fine_geometry, _original_region, region_of_interest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "skullfix" / "training_set"
VALIDATION = ["001", "002", "005", "010", "014", "017", "027", "034", "043"]
POSTPROCESS = {
    "paper": {"closing_mm": 3.0, "opening_mm": 0.0, "largest_component": False},
    "+open 1.6 +LC": {"closing_mm": 3.0, "opening_mm": 1.6, "largest_component": True},
}


def _perfect(target: np.ndarray, geom) -> np.ndarray:
    """A perfect network's output: the target as ``geom``'s grid sees it, back on the original grid."""
    return from_grid((to_grid(target, geom) >= 0.5).astype(np.float32), geom, 0.5)


def ceiling(data: Path, case: str, grid: int, boxes: Sequence[int] = (), box_margin: float = 0.5,
            refine: Sequence[int] = (), roi_margin_mm: float = 15.0) -> list[dict]:
    """Rows of a perfect MAE and a perfect baseline at ``grid`` (``grid``: the grid), with a perfect
    second stage on a cube of each of ``boxes`` (``grid``: ``<grid>+box<box>``, with ``box_voxel_mm``), and with
    a perfect second stage as :mod:`skullrecon.refine` applies one at each grid of ``refine`` (``<grid>+refine<n>``)."""
    defective = read_volume(data / "defective_skull" / f"{case}.nrrd")
    implant = read_volume(data / "implant" / f"{case}.nrrd").array
    complete = read_volume(data / "complete_skull" / f"{case}.nrrd").array
    geom = plan_crop(defective.array, defective.spacing, grid, 0.1)  # as the pipeline: from the input
    targets = {"perfect MAE": ("reconstruct", complete), "perfect baseline": ("implant", implant)}
    first = {method: _perfect(target, geom) for method, (_, target) in targets.items()}
    # each cube is planned from what a perfect first stage fills (not the true implant): as a pipeline would
    region = first["perfect baseline"] if first["perfect baseline"].any() else implant
    cubes = [(box, plan_crop(region, defective.spacing, box, box_margin)) for box in boxes]
    grid_input = (to_grid(defective.array, geom) >= 0.5).astype(np.uint8)
    complete_grid = to_grid(complete, geom)  # a perfect first stage's complete skull on its grid
    rows = []
    for method, (task, target) in targets.items():
        stages = [({"grid": grid}, first[method])]
        for fine in refine:
            cfg = RefineConfig(grid=fine, coarse_grid=grid, roi_margin_mm=roi_margin_mm, crop=8 * fine // grid)
            window = region_of_interest(complete_grid, grid_input, geom, cfg)
            if window is None:
                continue
            fine_geom = _fine_geometry(geom, fine)
            region = _original_region(fine_geom, tuple(slice(s.start * fine // grid, s.stop * fine // grid)
                                                          for s in window))
            refined = first[method].copy()
            refined[region] = _perfect(target, fine_geom)[region]
            stages.append(({"grid": f"{grid}+refine{fine}", "box_voxel_mm": round(max(fine_geom.grid_spacing), 2)},
                           refined))
        for box, cube in cubes:
            inside = _overlap(cube)[0]  # the original voxels the cube covers
            refined = first[method].copy()
            refined[inside] = _perfect(target, cube)[inside]
            voxel_mm = float(np.max(np.asarray(cube.box_size) * np.asarray(cube.spacing)) / box)
            stages.append(({"grid": f"{grid}+box{box}", "box_voxel_mm": round(voxel_mm, 2)}, refined))
        for stage, up in stages:
            for name, pp in POSTPROCESS.items():
                found = extract_implant(up, defective.array, defective.spacing, task, PostprocessConfig.from_dict(pp))
                m = evaluate_case(found, implant, defective.array, defective.spacing)
                rows.append({"case": case, **stage, "method": method, "postprocess": name, **m})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a SkullFix-layout folder of training triplets")
    ap.add_argument("--cases", nargs="+", default=VALIDATION)
    ap.add_argument("--grids", nargs="+", type=int, default=[64, 96, 128, 256])
    ap.add_argument("--boxes", nargs="*", type=int, default=[], help="second-stage cube grids (issue 37)")
    ap.add_argument("--box-margin", type=float, default=0.5,
                    help="room around the first stage's implant in the cube, a fraction of its largest extent")
    ap.add_argument("--refine", nargs="*", type=int, default=[],
                    help="the second stage's fine grids (skullrecon.refine)")
    ap.add_argument("--roi-margin-mm", type=float, default=15.0, help="the second stage's room around the fill")
    args = ap.parse_args()
    rows = []
    for grid in args.grids:
        for case in args.cases:
            rows += ceiling(args.data, case, grid, args.boxes, args.box_margin, args.refine, args.roi_margin_mm)
        for key in [grid] + [f"{grid}+box{b}" for b in args.boxes] + [f"{grid}+refine{r}" for r in args.refine]:
            part = pd.DataFrame([r for r in rows if r["grid"] == key])
            print(part.groupby(["method", "postprocess"])[["dsc", "bdsc", "hd95"]].mean().round(3)
                  .rename(columns=lambda c: f"{c} @{key}").to_string(), flush=True)
            if "box_voxel_mm" in part:
                print(f"cube voxel: {part['box_voxel_mm'].min():.2f}-{part['box_voxel_mm'].max():.2f} mm", flush=True)
    df = pd.DataFrame(rows)
    order = [k for g in sorted(args.grids)  # grids, then cubes, then second stages
             for k in [g] + [f"{g}+box{b}" for b in args.boxes] + [f"{g}+refine{r}" for r in args.refine]]
    print(f"\nmean over {len(args.cases)} cases ({', '.join(args.cases)}):")
    print(df.pivot_table(index=["method", "postprocess"], columns="grid", values=["dsc", "hd95"], sort=False)
          .sort_index().reindex(columns=order, level="grid").round(3).to_string())


if __name__ == "__main__":
    main()
