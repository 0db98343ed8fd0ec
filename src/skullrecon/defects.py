"""New defects on complete skulls: the test cases of the generalisation experiment.

The supervised baselines learn the defects of their training set; the MAE learns skulls. To show
the difference, the complete skulls of a dataset's *test* split (so no training skull is reused)
get defects unlike the dataset's own, at other places and of other shapes and sizes, and every
method is scored on them with the models trained as usual.

A defect is cut where a ray from the cranial cavity's centre leaves the skull, in a direction
drawn per location (patient space, LPS: +x left, +y posterior, +z superior, read through each
file's affine, so oblique headers are fine):

* ``frontal``: the forehead; ``temporal``: one side, at the level of the cavity's centre;
  ``parietal``: up and to one side, towards the back; ``bilateral``: the vertex, long across the
  midline so it opens both sides; ``random``: anywhere on the upper skull.

The cut is a solid centred in the bone at that point, with semi-axes drawn from ``size_mm``
(at least twice a skull's thickness apart, so it goes through the bone, not a dent):

* ``ellipsoid``: an ellipsoid with the normal along the ray and a random in-plane rotation;
* ``blob``: the same ellipsoid with its radius modulated by smooth noise over directions
  (about +-35 %), an irregular outline.

The implant is the removed bone's largest 26-connected piece and the defective skull is the
complete skull minus it, so ``defective | implant == complete`` and they never overlap. Each
defect draws from ``numpy.random.default_rng([seed, case, location])``: a case does not depend on
which others were made.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from skullrecon.datasets import DatasetError, Layout, list_cases
from skullrecon.io import read_volume, write_volume
from skullrecon.morphology import largest_component

__all__ = ["LOCATIONS", "SHAPES", "DERIVED_SPLIT", "cranial_centre", "cut_defect", "derive_dataset",
           "derived_layout"]

LOCATIONS = ("frontal", "temporal", "parietal", "bilateral", "random")
SHAPES = ("ellipsoid", "blob")
DERIVED_SPLIT = "testing"  # the derived dataset has only test cases, in this folder
_CONE_DEG = 6.0  # bone within this angle of the ray finds the surface point
_SHELL_MM = 15.0  # the skull's outer layer along the ray (thicker than any calvarium)
_BLOB_AMPLITUDE = 0.35


def _world(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel indices (n, 3) to patient mm (n, 3)."""
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _block_any(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """A coarser mask: a block is set where any of its voxels is."""
    pad = [(0, (-s) % f) for s, f in zip(mask.shape, factors)]
    m = np.pad(mask, pad)
    shape = [x for s, f in zip(m.shape, factors) for x in (s // f, f)]
    return m.reshape(shape).any(axis=(1, 3, 5))


def cranial_centre(skull: np.ndarray, affine: np.ndarray, step_mm: float = 3.0) -> np.ndarray:
    """Centre (patient mm) of the cranial cavity, the origin of every defect's ray.

    The cavity is what filling the holes of each axial slice adds to the bone (on a grid of about
    ``step_mm``, for speed), largest piece; a skull open in every slice falls back to the centre
    of the bone's bounding box.
    """
    skull = np.asarray(skull, bool)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factors = [max(1, int(round(step_mm / s))) for s in spacing]
    coarse = _block_any(skull, factors)
    axial = int(np.argmax(np.abs(affine[2, :3])))  # the array axis closest to superior
    structure = np.zeros((3, 3, 3), bool)
    plane = [slice(None)] * 3
    plane[axial] = 1
    structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
    cavity = ndimage.binary_fill_holes(coarse, structure=structure) & ~coarse
    labels, n = ndimage.label(cavity)
    if n and cavity.sum() > 0.01 * cavity.size:
        sizes = np.bincount(labels.ravel())[1:]
        idx = np.argwhere(labels == 1 + int(np.argmax(sizes))).astype(float)
    else:
        idx = np.argwhere(coarse).astype(float)
        idx = np.stack([idx.min(0), idx.max(0)])
    fine = idx * factors + (np.asarray(factors) - 1) / 2  # block centres on the original grid
    return _world(fine, affine).mean(axis=0)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def surface_point(skull: np.ndarray, affine: np.ndarray, centre: np.ndarray, draw: Callable[[], np.ndarray],
                  what: str) -> tuple[np.ndarray, np.ndarray]:
    """Where a ray from ``centre`` in a direction from ``draw()`` leaves the skull: a point in the
    outer layer of bone (mm, patient space) and the direction. Searched on blocks of about 2 mm
    (speed; a cut made there is voxel-exact); a ray that leaves through an opening (an orbit, the
    foramen) draws again, 20 times at most. Shared by the generalisation defects and the
    SkullBreak-like kinds (:mod:`skullrecon.skullbreaklike`)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factors = np.array([max(1, int(round(2.0 / s))) for s in spacing])
    blocks = np.argwhere(_block_any(skull, factors)) * factors + (factors - 1) / 2
    rel = _world(blocks, affine) - centre
    dist = np.linalg.norm(rel, axis=1)
    for _ in range(20):
        d = draw()
        t = rel @ d
        cone = t > dist * np.cos(np.deg2rad(_CONE_DEG))
        if cone.any():
            break
    else:
        raise ValueError(f"no bone found in 20 {what} directions from the cavity centre {centre.round(1)}")
    t_out = t[cone].max()
    return centre + d * float(np.median(t[cone & (t > t_out - _SHELL_MM)])), d


def _direction(location: str, rng: np.random.Generator) -> np.ndarray:
    """A ray direction in patient space (LPS) for a location."""
    side = rng.choice([-1.0, 1.0])
    if location == "frontal":
        return _unit([rng.normal(0, 0.15), -1.0, rng.uniform(0.2, 0.7)])
    if location == "temporal":
        return _unit([side, rng.uniform(-0.25, 0.25), rng.uniform(-0.1, 0.3)])
    if location == "parietal":
        return _unit([side * rng.uniform(0.6, 1.0), rng.uniform(0.0, 0.6), rng.uniform(0.8, 1.2)])
    if location == "bilateral":
        return _unit([rng.normal(0, 0.05), rng.uniform(-0.4, 0.3), 1.0])
    if location == "random":
        az, sz = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.95)
        return np.array([np.sqrt(1 - sz**2) * np.cos(az), np.sqrt(1 - sz**2) * np.sin(az), sz])
    raise ValueError(f"unknown defect location {location!r}; expected one of {list(LOCATIONS)}")


def _sphere_noise(rng: np.random.Generator, n_terms: int = 4):
    """A smooth random function on unit vectors, values within [-1, 1]."""
    k = rng.normal(size=(n_terms, 3))
    k *= (rng.uniform(1.5, 3.5, n_terms) / np.linalg.norm(k, axis=1))[:, None]
    phase = rng.uniform(0, 2 * np.pi, n_terms)
    amp = rng.uniform(0.5, 1.0, n_terms)
    amp /= amp.sum()
    return lambda u: np.sin(u @ k.T + phase) @ amp


def cut_defect(
    complete: np.ndarray,
    affine: np.ndarray,
    location: str,
    shape: str,
    size_mm: tuple[float, float],
    rng: np.random.Generator,
    centre: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The bone a new defect removes from a complete skull.

    Args:
        complete: the complete skull (binary array).
        affine: voxel indices to patient mm (LPS), e.g. ``Volume.affine``.
        location: one of :data:`LOCATIONS`.
        shape: one of :data:`SHAPES`.
        size_mm: range of the cut's semi-axes in mm.
        rng: the generator the defect draws from.
        centre: the ray origin (default :func:`cranial_centre`).

    Returns:
        The implant (bool, a subset of ``complete``, one 26-connected piece) and what was drawn.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown defect shape {shape!r}; expected one of {list(SHAPES)}")
    lo, hi = float(size_mm[0]), float(size_mm[1])
    if not 0 < lo <= hi:
        raise ValueError(f"size_mm must be 0 < low <= high, got {list(size_mm)}")
    skull = np.asarray(complete, bool)
    affine = np.asarray(affine, float)
    centre = cranial_centre(skull, affine) if centre is None else np.asarray(centre, float)
    point, d = surface_point(skull, affine, centre, lambda: _direction(location, rng), location)

    # the cut's frame: normal along the ray, the first tangent horizontal (across for bilateral)
    e1 = np.cross([0.0, 0.0, 1.0], d)
    e1 = _unit(e1) if np.linalg.norm(e1) > 1e-3 else np.array([1.0, 0.0, 0.0])
    if e1[0] < 0:
        e1 = -e1
    e2 = np.cross(d, e1)
    if location == "bilateral":
        psi = rng.uniform(-0.2, 0.2)
        axes = [rng.uniform(lo + 0.8 * (hi - lo), hi), rng.uniform(lo, hi)]
    else:
        psi = rng.uniform(0, np.pi)
        axes = list(rng.uniform(lo, hi, 2))
    e1, e2 = np.cos(psi) * e1 + np.sin(psi) * e2, -np.sin(psi) * e1 + np.cos(psi) * e2
    semi = np.array([*axes, rng.uniform(lo, hi)])
    frame = np.stack([e1, e2, d])  # rows: the cut's axes
    noise = _sphere_noise(rng) if shape == "blob" else None

    # voxel-exact inside the box that can hold the cut
    reach = semi.max() * (1 + _BLOB_AMPLITUDE)
    corners = point + reach * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    ijk = (corners - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    lo_i = np.clip(np.floor(ijk.min(0)).astype(int), 0, skull.shape)
    hi_i = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, skull.shape)
    box = tuple(slice(a, b) for a, b in zip(lo_i, hi_i))
    idx = np.argwhere(skull[box])
    q = ((_world(idx + lo_i, affine) - point) @ frame.T) / semi  # the ellipsoid is |q| < 1
    r = np.linalg.norm(q, axis=1)
    keep = r < 1 + (_BLOB_AMPLITUDE if noise is not None else 0)
    idx, q, r = idx[keep], q[keep], r[keep]
    if noise is not None:
        keep = r < 1 + _BLOB_AMPLITUDE * noise(q / np.maximum(r, 1e-9)[:, None])
        idx = idx[keep]
    cut = np.zeros(skull[box].shape, bool)
    cut[tuple(idx.T)] = True
    implant = np.zeros(skull.shape, bool)
    implant[box] = _largest_component(cut)
    if not implant.any():
        raise ValueError(f"the {location} {shape} cut at {point.round(1)} mm removed no bone")
    info = {
        "location": location,
        "shape": shape,
        "direction": d.round(4).tolist(),
        "centre_mm": point.round(2).tolist(),
        "semi_axes_mm": semi.round(2).tolist(),
        "implant_voxels": int(implant.sum()),
        "defect_fraction": round(float(implant.sum() / skull.sum()), 4),
    }
    return implant, info


def _largest_component(mask: np.ndarray) -> np.ndarray:
    return largest_component(mask, connectivity=26)


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode())


def derived_layout(locations: Sequence[str]) -> dict[str, Any]:
    """The layout (as in the config's ``datasets.<name>.layout``) of a derived dataset."""
    return {"train": DERIVED_SPLIT, "test": DERIVED_SPLIT, "types": list(locations)}


def derive_dataset(
    source_root: str | Path,
    source_layout: Layout,
    out_root: str | Path,
    locations: Sequence[str] = LOCATIONS,
    shapes: Sequence[str] = SHAPES,
    size_mm: tuple[float, float] = (15.0, 45.0),
    seed: int = 0,
    per_skull: int | None = None,
    max_skulls: int | None = None,
) -> dict[str, Any]:
    """Write a dataset of new defects on the test split's complete skulls of a source dataset.

    Layout under ``out_root`` (see :func:`derived_layout`): ``testing/complete_skull/NNN.nrrd``
    (the source file, copied byte for byte), ``testing/defective_skull/<location>/NNN.nrrd`` and
    ``testing/implant/<location>/NNN.nrrd``, on the source case's header and grid; case ids are
    the source's. Also ``generation.json`` (every defect drawn) and ``README.md``.

    Args:
        per_skull: locations per skull, taken in turn from ``locations`` (skull i gets
            ``locations[i * per_skull % n]``, ...); None: every location on every skull.
        max_skulls: use only the first this many test skulls (by id); None: all of them.

    Raises:
        DatasetError: a test case of the source has no complete skull.
    """
    for loc in locations:
        _direction(loc, np.random.default_rng(0))  # an unknown location fails before any work
    for shp in shapes:
        if shp not in SHAPES:
            raise ValueError(f"unknown defect shape {shp!r}; expected one of {list(SHAPES)}")
    if not locations or not shapes:
        raise ValueError("a derived dataset needs at least one location and one shape")
    skulls: dict[str, Path] = {}
    for case in list_cases(source_root, source_layout, "test"):
        if case.complete is None:
            raise DatasetError(f"{case.defective}: test case {case.name} has no complete skull to cut new defects from")
        skulls[case.case_id] = case.complete
    ids = sorted(skulls)[: max_skulls if max_skulls is not None else None]
    n_loc = per_skull if per_skull is not None else len(locations)

    out = Path(out_root) / DERIVED_SPLIT
    records = []
    for i, case_id in enumerate(ids):
        vol = read_volume(skulls[case_id])
        complete = vol.array.astype(bool)
        centre = cranial_centre(complete, vol.affine)
        (out / "complete_skull").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(skulls[case_id], out / "complete_skull" / f"{case_id}.nrrd")
        for j in range(n_loc):
            loc = locations[(i * n_loc + j) % len(locations)]
            rng = np.random.default_rng([seed, _stable_id(case_id), _stable_id(loc)])
            shape = str(rng.choice(list(shapes)))
            implant, info = cut_defect(complete, vol.affine, loc, shape, size_mm, rng, centre=centre)
            write_volume(out / "defective_skull" / loc / f"{case_id}.nrrd", complete & ~implant, like=vol)
            write_volume(out / "implant" / loc / f"{case_id}.nrrd", implant, like=vol)
            records.append({"id": case_id, "source": str(skulls[case_id]), **info})
            print(f"{loc}_{case_id}: {info}")
    summary = {"source_root": str(source_root), "split": "test", "locations": list(locations),
               "shapes": list(shapes), "size_mm": [float(s) for s in size_mm], "seed": int(seed),
               "per_skull": per_skull, "max_skulls": max_skulls, "cases": records}
    Path(out_root).mkdir(parents=True, exist_ok=True)
    (Path(out_root) / "generation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (Path(out_root) / "README.md").write_text(_readme(summary))
    return summary


def _readme(s: dict[str, Any]) -> str:
    fracs = [c["defect_fraction"] for c in s["cases"]]
    return f"""# Generalisation dataset: new defects on the test skulls of {s['source_root']}

Made by `skullrecon.defects.derive_dataset`: {len({c['id'] for c in s['cases']})} complete test skulls of the source,
{len(s['cases'])} defects at {s['locations']} of shapes {s['shapes']} with semi-axes of {s['size_mm']} mm
(seed {s['seed']}). No training skull is used. The implant is the removed bone; within a case
defective | implant == complete and defective & implant == 0, on the source file's header.
Removed bone: {min(fracs, default=0):.3f}-{max(fracs, default=0):.3f} of the skull's voxels.

Layout: {DERIVED_SPLIT}/complete_skull/NNN.nrrd, {DERIVED_SPLIT}/defective_skull/<location>/NNN.nrrd,
{DERIVED_SPLIT}/implant/<location>/NNN.nrrd. Every defect drawn is in generation.json.
"""
