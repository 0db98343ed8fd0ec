"""Sizes of the SkullBreak-like defects (skullrecon.skullbreaklike) on real skulls, beside the real thing.

Per kind, over a few real complete SkullFix skulls (default: the first four training skulls of
realdata/run.yaml's split): the implant's volume (cm^3) and the extent of its bounding box along
left-right, front-back and up-down (mm, LPS). Beside them: the SkullFix implants of the same skulls,
and the one real SkullBreak skull we have, ``autoimplantpipe_skullbreak_parietotemporal_001.nii.gz``
(a parieto-temporal defective skull without its implant), measured the only way a defective skull
alone allows and measured the same way on ours:

* the *lateral hole*: split the skull at its midline, project each half along left-right; where one
  half has no bone and the other has (>= 3 voxels), above the orbits, bone is missing on that side
  (largest such patch). Its area (cm^2), its front-back and up-down extent (mm), and the bone the
  other half has there (cm^3): a mirror estimate of the missing bone.

The Data in Brief article gives no implant volumes or sizes that could be found (docs/datasets.md).
Nothing is written but stdout; the result kept is bench/results/skullbreaklike-stats.txt.

    PYTHONPATH=src python bench/skullbreaklike_stats.py [--ids 1 2 3 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from skullrecon.defects import cranial_centre
from skullrecon.io import read_volume
from skullrecon.skullbreaklike import KINDS, _kind_id, cut_kind, implant_stats

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REAL_PT = "real/autoimplantpipe_skullbreak_parietotemporal_001.nii.gz"


def _lps(vol) -> np.ndarray:
    """The volume's affine in LPS (NIfTI stores RAS)."""
    a = np.asarray(vol.affine, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a if vol.format == "nifti" else a


def lateral_hole(skull: np.ndarray, affine: np.ndarray, min_other: int = 3) -> dict:
    """The largest patch where one half of the skull (split at the midline) has no bone seen from
    the side and the other half has; for a skull whose array axis 0 runs left-right."""
    skull = np.asarray(skull, bool)
    if int(np.argmax(np.abs(affine[:3, 0]))) != 0:
        raise ValueError("lateral_hole needs array axis 0 along left-right")
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    zs = np.nonzero(skull.any((0, 1)))[0]
    up = affine[2, 2] > 0  # index grows upwards
    low = zs[: len(zs) // 4] if up else zs[-(len(zs) // 4):]  # face and base: symmetric, intact
    mid = int(round(np.nonzero(skull[:, :, low])[0].mean()))
    halves = [skull[:mid].sum(0), skull[mid:].sum(0)]
    # above the orbits: the upper 60 % of the skull's height
    zc = np.arange(skull.shape[2])
    top, bottom = zs.max(), zs.min()
    cut = bottom + 0.4 * (top - bottom) if up else top - 0.4 * (top - bottom)
    above = (zc >= cut) if up else (zc <= cut)
    best = None
    for side, (a, b) in enumerate([(halves[0], halves[1]), (halves[1], halves[0])]):
        hole = (a == 0) & (b >= min_other) & above[None, :]
        lab, n = ndimage.label(hole)
        if not n:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        k = 1 + int(np.argmax(sizes))
        patch = lab == k
        if best is None or patch.sum() > best[1].sum():
            best = (side, patch, b)
    if best is None:
        return {"area_cm2": 0.0}
    side, patch, other = best
    ys, zs_ = np.nonzero(patch)
    return {
        "side": "low index" if side == 0 else "high index",
        "area_cm2": round(float(patch.sum() * sp[1] * sp[2] / 100), 1),
        "extent_y_mm": round(float((ys.max() - ys.min() + 1) * sp[1]), 1),
        "extent_z_mm": round(float((zs_.max() - zs_.min() + 1) * sp[2]), 1),
        "mirror_cm3": round(float(other[patch].sum() * np.prod(sp) / 1000), 1),
    }


def _row(name, vals) -> str:
    v = np.asarray(vals, float)
    if v.ndim == 1:
        return f"{name:>16}: {v.mean():6.1f} +- {v.std():5.1f}  ({v.min():.1f}-{v.max():.1f})"
    return f"{name:>16}: " + " x ".join(f"{m:5.1f} ({lo:.0f}-{hi:.0f})" for m, lo, hi in zip(v.mean(0), v.min(0), v.max(0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--ids", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    pt = read_volume(args.data / REAL_PT)
    real = lateral_hole(pt.array, _lps(pt))
    print(f"real SkullBreak parietotemporal_001 ({pt.shape}, 0.4 mm): lateral hole {real}")

    stats = {k: [] for k in KINDS}
    holes, fix = [], []
    for cid in args.ids:
        path = args.data / "skullfix" / "training_set" / "complete_skull" / f"{cid:03d}.nrrd"
        vol = read_volume(path)
        complete = vol.array.astype(bool)
        centre = cranial_centre(complete, vol.affine)
        implant = read_volume(args.data / "skullfix" / "training_set" / "implant" / f"{cid:03d}.nrrd").array.astype(bool)
        fix.append(implant_stats(implant, vol.affine, centre))
        for kind in KINDS:
            t = time.perf_counter()
            imp, info = cut_kind(complete, vol.affine, kind, np.random.default_rng([args.seed, cid, _kind_id(kind)]), centre)
            stats[kind].append(info)
            line = f"{cid:03d} {kind:>16}: {info['volume_cm3']:6.1f} cm3, extent {info['extent_mm']} mm, centre {info['centre_rel_mm']} mm ({time.perf_counter() - t:.1f} s)"
            if kind == "parietotemporal":
                holes.append(lateral_hole(complete & ~imp, vol.affine))
                line += f"; lateral hole {holes[-1]}"
            print(line)

    print(f"\nper kind over skulls {[f'{i:03d}' for i in args.ids]} (seed {args.seed}): volume cm^3 mean +- sd (min-max);"
          " extent L-R x A-P x S-I mm, mean (min-max)")
    for kind in KINDS:
        print(_row(kind, [s["volume_cm3"] for s in stats[kind]]))
        print(_row("", [s["extent_mm"] for s in stats[kind]]))
    print(_row("SkullFix implant", [s["volume_cm3"] for s in fix]))
    print(_row("", [s["extent_mm"] for s in fix]))
    print("\nlateral hole (the only measure the real defective skull allows), the same on both:")
    print(f"{'real PT 001':>16}: area {real['area_cm2']} cm2, A-P {real['extent_y_mm']} mm, S-I {real['extent_z_mm']} mm, mirror estimate {real['mirror_cm3']} cm3")
    for key, unit in [("area_cm2", "cm2"), ("extent_y_mm", "A-P mm"), ("extent_z_mm", "S-I mm"), ("mirror_cm3", "mirror cm3")]:
        print(_row(f"ours PT {unit}", [h.get(key, 0.0) for h in holes]))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
