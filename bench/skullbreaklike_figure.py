"""docs/skullbreaklike.png: the five SkullBreak-like kinds on one real skull, beside the real SkullBreak one.

Columns: bilateral, frontoorbital, parietotemporal, random_1, random_2 cut into the real SkullFix
complete skull (default 001, seed 0, as bench/skullbreaklike_stats.py), the implant in red over the
defective skull; the last column the real SkullBreak parieto-temporal defective skull (no implant is
available for it). Rows: projections seen from the left side, from the front and from above (sums
along the axis: thicker bone is brighter).

    PYTHONPATH=src python bench/skullbreaklike_figure.py [--id 1] [--out docs/skullbreaklike.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from skullrecon.defects import cranial_centre
from skullrecon.io import read_volume
from skullrecon.skullbreaklike import KINDS, _kind_id, cut_kind

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REAL_PT = "real/autoimplantpipe_skullbreak_parietotemporal_001.nii.gz"
VIEWS = [("from the left", 0), ("from the front", 1), ("from above", 2)]


def _views(bone: np.ndarray, implant: np.ndarray | None, spacing):
    """Per view: (bone projection, implant projection or None, extent in mm) with LPS axes shown
    as: side view y (face left) by z up, front view x by z, top view x by y (face down)."""
    out = []
    for _, axis in VIEWS:
        b = bone.sum(axis).astype(np.float32)
        i = None if implant is None else implant.sum(axis) > 0
        rest = [a for a in range(3) if a != axis]
        ext = [0, b.shape[0] * spacing[rest[0]], 0, b.shape[1] * spacing[rest[1]]]
        if axis == 1:  # front view: the patient's left on the image's right, as facing them
            b = b[::-1]
            i = None if i is None else i[::-1]
        out.append((b, i, ext))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--id", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "skullbreaklike.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    vol = read_volume(args.data / "skullfix" / "training_set" / "complete_skull" / f"{args.id:03d}.nrrd")
    complete = vol.array.astype(bool)
    centre = cranial_centre(complete, vol.affine)
    spacing = np.linalg.norm(vol.affine[:3, :3], axis=0)
    columns = []
    for kind in KINDS:
        implant, info = cut_kind(complete, vol.affine, kind, np.random.default_rng([args.seed, args.id, _kind_id(kind)]), centre)
        title = f"{kind}\n{info['volume_cm3']:.0f} cm$^3$, {' x '.join(f'{e:.0f}' for e in info['extent_mm'])} mm"
        columns.append((title, _views(complete & ~implant, implant, spacing)))
    pt = read_volume(args.data / REAL_PT)
    # its voxel axes by the anatomy, not by its affine (a VTK conversion: the affine's RAS y would put the
    # face at high indices, the facial bones are at low ones, as in the SkullFix files): 0 left-right,
    # 1 face to back, 2 upwards
    columns.append(("real SkullBreak\nparietotemporal 001", _views(pt.array.astype(bool), None, np.abs(np.diag(pt.affine))[:3])))

    fig, axes = plt.subplots(3, len(columns), figsize=(2.1 * len(columns), 6.6))
    for j, (title, views) in enumerate(columns):
        for r, (b, i, ext) in enumerate(views):
            ax = axes[r, j]
            ax.imshow(b.T, origin="lower", cmap="gray", extent=ext, interpolation="antialiased")
            if i is not None:
                ax.imshow(np.ma.masked_where(~i.T, i.T.astype(float)), origin="lower", cmap=ListedColormap(["red"]), alpha=0.6,
                          extent=ext, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(VIEWS[r][0], fontsize=8)
    fig.suptitle(f"SkullBreak-like defects (red: implant) on the real SkullFix skull {args.id:03d}, seed {args.seed}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
