"""Could the skull's other half show where the missing bone lies? The defective skull mirrored left-right (axis 0, the
augmentations' plane), registered rigidly back onto itself, gives the bone of the other side; where the defect is on
one side, that bone is a full-resolution shape hint that no network has to learn (a candidate input of a second
stage, issue 37). Measured before building anything on it, on the trainers' validation skulls:

    python bench/mirror.py --data ../shared/data/skullfix/training_set --ids 003 006 026 047 \
        --out bench/results/mirror-xeon-2core.txt

Per skull: where the implant lies in the 64^3 grid (centroid, per axis: 31.5 is the middle), the registration (mean
distance of the mirrored bone to the bone, in voxels, capped at 5; rotation; shift) and the DSC against the true
implant of the mirrored bone the skull lacks, within the implant dilated by ``dilation`` voxels of the fine grid
(a generous region: any second stage would have to find it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import edt
import numpy as np
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation


def mirror_onto(bone: np.ndarray, cap: float = 5.0, points: int = 20000) -> tuple[np.ndarray, float, np.ndarray]:
    """The bone mirrored along axis 0 and moved rigidly (rotation vector, shift; about the grid's centre) to lie on
    ``bone``: minimises the capped mean distance of the mirrored bone to ``bone`` (Powell, from no motion)."""
    mirrored = np.ascontiguousarray(np.flip(bone, 0))
    distance = edt.edt(~bone).astype(np.float32)
    pts = np.argwhere(mirrored).astype(np.float64)
    pts = pts[:: max(1, len(pts) // points)]
    centre = np.array(bone.shape) / 2 - 0.5

    def cost(params: np.ndarray) -> float:
        moved = (pts - centre) @ Rotation.from_rotvec(params[:3]).as_matrix().T + centre + params[3:]
        return float(np.minimum(ndimage.map_coordinates(distance, moved.T, order=1, mode="nearest"), cap).mean())

    best = optimize.minimize(cost, np.zeros(6), method="Powell", options={"xtol": 1e-3, "ftol": 1e-5})
    grid = np.indices(bone.shape).reshape(3, -1).T.astype(np.float64)
    source = (grid - centre - best.x[3:]) @ Rotation.from_rotvec(best.x[:3]).as_matrix() + centre
    moved = ndimage.map_coordinates(mirrored.astype(np.float32), source.T, order=1, mode="constant")
    return moved.reshape(bone.shape) > 0.5, best.fun, best.x


def main() -> None:
    from skullrecon.evaluate import cases_of
    from skullrecon.io import read_volume
    from skullrecon.metrics import dice
    from skullrecon.preprocess import preprocess_volume, to_grid

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a split folder (defective_skull/, implant/)")
    ap.add_argument("--ids", nargs="*", help="case ids (default all)")
    ap.add_argument("--grid", type=int, default=128, help="the fine grid (the second stage's)")
    ap.add_argument("--dilation", type=int, default=4, help="voxels of the fine grid around the implant")
    ap.add_argument("--out", type=Path, help="also write the lines here")
    args = ap.parse_args()

    lines = [f"grid {args.grid}, region: implant dilated by {args.dilation} voxels"]
    for case in cases_of(args.data, args.ids):
        defective, implant = read_volume(case.defective), read_volume(case.implant)
        implant_values = implant.array.astype(np.float32)
        coarse = preprocess_volume(defective.array, defective.spacing, 64, 0.1)[1]
        centroid = np.argwhere(to_grid(implant_values, coarse) > 0.5).mean(0)
        grid_input, geom = preprocess_volume(defective.array, defective.spacing, args.grid, 0.1)
        truth = to_grid(implant_values, geom) > 0.5
        bone = grid_input > 0.5
        moved, cost, params = mirror_onto(bone)
        region = ndimage.binary_dilation(truth, iterations=args.dilation)
        lines.append(f"{case.name}: implant centroid (64^3) {centroid.round(1).tolist()}, "
                     f"registration {cost:.2f} vox, {np.degrees(np.linalg.norm(params[:3])):.1f} deg, shift "
                     f"{params[3:].round(1).tolist()} vox; mirrored bone in the defect: DSC "
                     f"{dice(moved & ~bone & region, truth):.3f}")
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
