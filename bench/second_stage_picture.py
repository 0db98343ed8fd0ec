"""One skull's implant from two ``skullrecon reconstruct`` runs, the first stage alone and both stages, on the true
implant (docs/second-stage-000.png):

    skullrecon reconstruct DEFECTIVE --model mae_d_gpu --out single/
    skullrecon reconstruct DEFECTIVE --model mae_d_gpu_refined --out both/
    python bench/second_stage_picture.py single/implant.nrrd both/implant.nrrd TRUE_IMPLANT DEFECTIVE \
        --out docs/second-stage-000.png

and the surface stage's (docs/surface-000.png): ``--model mae_d_gpu_surface`` for ``both/``, ``--second-label
"+ the skull's surfaces"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from skullrecon.io import read_volume
from skullrecon.metrics import evaluate_case

COLOURS = {"skull": (0.75, 0.75, 0.75), "missed": (0.2, 0.7, 0.2), "extra": (0.85, 0.2, 0.2), "hit": (0.95, 0.8, 0.1)}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("single", "both", "truth", "defective"):
        ap.add_argument(name, type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--second-label", default="both stages (+ 128^3)", help="the second panel's title")
    args = ap.parse_args()
    defective = read_volume(args.defective)
    truth = read_volume(args.truth).array.astype(bool)
    implants = {"first stage alone (64^3)": read_volume(args.single).array.astype(bool),
                args.second_label: read_volume(args.both).array.astype(bool)}
    bounds = [np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != ax)))[[0, -1]] for ax in range(3)]
    box = [slice(max(lo - 25, 0), hi + 25) for lo, hi in bounds]
    z, y = (sum(bounds[2]) // 2, sum(bounds[1]) // 2)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for col, (name, implant) in enumerate(implants.items()):
        m = evaluate_case(implant.astype(np.uint8), truth.astype(np.uint8), defective.array, defective.spacing)
        views = [((box[0], box[1], z), f"axial z={z}"), ((box[0], y, box[2]), f"coronal y={y}")]
        for row, (where, title) in enumerate(views):
            img = np.ones(defective.array[where].shape + (3,))
            img[defective.array[where] > 0] = COLOURS["skull"]
            img[truth[where] & ~implant[where]] = COLOURS["missed"]
            img[implant[where] & ~truth[where]] = COLOURS["extra"]
            img[implant[where] & truth[where]] = COLOURS["hit"]
            ax = axes[row, col]
            ax.imshow(img.transpose(1, 0, 2), origin="lower", interpolation="nearest")
            ax.set_title(f"{name}, {title}: DSC {m['dsc']:.3f}, HD95 {m['hd95']:.2f} mm", fontsize=9)
            ax.axis("off")
    fig.suptitle("yellow: implant on the true implant; red: implant only; green: true implant only; "
                 "grey: the defective skull", fontsize=9)
    plt.tight_layout()
    plt.savefig(args.out, dpi=80)


if __name__ == "__main__":
    main()
