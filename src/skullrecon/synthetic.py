"""A synthetic stand-in for SkullBreak and SkullFix, written in their exact folder layouts.

The real data sets cannot be downloaded where this pipeline is tested, so every step runs on
skulls built here from implicit functions on a millimetre grid. They are not anatomy, but they
have the properties the reconstruction methods depend on:

* a closed cranial vault: an ellipsoidal shell (per subject: about 180-200 mm anterior-posterior,
  140-160 mm left-right, 120-140 mm superior-inferior) warped by a smooth random displacement
  and slightly rotated, with a bone thickness of about 4-8 mm that varies smoothly over the head
  and is never thinner than 2.5 voxels (so it survives a 2x downsampling);
* a skull base: a tilted plate (higher in front, lower at the back) that closes the vault from
  below, pierced only by the foramen magnum at its posterior part, so the cranial cavity is
  enclosed except through that hole;
* a facial skeleton: a curved plate in front of and below the vault, joined to it, with two
  orbits and a nasal aperture cut through it.

The skull is scaled so its bounding box fills 70-85 % of the field of view along the tightest
axis and is placed with a random offset. Coordinates follow the NRRD files' LPS space: array
axis 0 runs to the patient's left, axis 1 to posterior (the face is at low indices), axis 2 to
superior (the vertex is at high indices).

Defects follow the two data sets. SkullBreak's types ("bilateral", "frontoorbital",
"parietotemporal", "random_1", "random_2") are smooth irregular caps: every bone voxel seen from
the vault centre within an elliptical cone whose angular radius is modulated by low-frequency
noise, so the cut goes cleanly through the whole thickness of the bone (a hole, not a dent).
SkullFix's ("skullfix") is a sharp-edged cube or cylinder cut through the upper vault. The
removed bone is reduced to its largest connected component (fragments go back into the defective
skull) and is sized to about 3-15 % of the skull's voxels.

Everything is deterministic: each skull and each defect draws from its own
``numpy.random.default_rng([seed, split, case, type])``, so a case does not depend on which other
cases were generated or in which order.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .io import write_volume
from .morphology import largest_component

__all__ = [
    "SKULLBREAK_DEFECT_TYPES",
    "DEFECT_KINDS",
    "make_skull",
    "make_defect",
    "make_case",
    "estimate_vault",
    "generate_dataset",
]

SKULLBREAK_DEFECT_TYPES = ["bilateral", "frontoorbital", "parietotemporal", "random_1", "random_2"]
DEFECT_KINDS = [*SKULLBREAK_DEFECT_TYPES, "skullfix"]

# bounds on the removed bone as a fraction of the skull's voxels
MIN_DEFECT_FRACTION = 0.03
MAX_DEFECT_FRACTION = 0.15
# a shell thinner than this many voxels (along the coarsest axis) is thickened
MIN_THICKNESS_VOXELS = 2.5

_SPLIT_IDS = {"training": 0, "testing": 1, "training_set": 0, "test_set": 1}


# --------------------------------------------------------------------------------------------
# helpers


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix with each Euler angle uniform in +-max_deg."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _SmoothField:
    """A smooth random scalar field: a sum of products of 1-D sines, values within [-1, 1].

    Separable terms let the field be evaluated on a whole grid from 1-D axes (one full-size
    multiply and add per term) or at scattered points.
    """

    def __init__(self, rng: np.random.Generator, n_terms: int, wavelength: tuple[float, float]):
        lo, hi = wavelength
        self.k = 2 * np.pi / rng.uniform(lo, hi, (n_terms, 3))
        self.phase = rng.uniform(0, 2 * np.pi, (n_terms, 3))
        amp = rng.uniform(0.5, 1.0, n_terms)
        self.amp = amp / amp.sum()

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = None
        for k, ph, a in zip(self.k, self.phase, self.amp):
            sx = (a * np.sin(k[0] * x + ph[0])).astype(np.float32)
            term = (sx * np.sin(k[1] * y + ph[1]).astype(np.float32)) * np.sin(k[2] * z + ph[2]).astype(np.float32)
            out = term if out is None else out + term
        return out


def _ellipsoid_sdf(x, y, z, a, b, c):
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    k1 = np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2 + (z / c**2) ** 2)
    return k0 * (k0 - 1) / np.maximum(k1, 1e-6)


def _largest_component(mask: np.ndarray, connectivity: int = 6) -> np.ndarray:
    return largest_component(mask, connectivity)


# --------------------------------------------------------------------------------------------
# skull


def make_skull(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Build one synthetic skull on a grid.

    Args:
        shape: grid size in voxels (axis 0 left, axis 1 posterior, axis 2 superior).
        spacing: voxel size in mm per axis (may be anisotropic).
        rng: the random generator; the skull is a function of its state only.
        return_info: also return landmarks (vault centre and radii in mm from voxel (0,0,0),
            rotation, thickness, foramen magnum) that :func:`make_defect` can use.

    Returns:
        bool array of ``shape`` (one 6-connected component), and with ``return_info`` a dict.
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, float)
    fov = np.asarray(shape) * spacing

    # natural anatomy in mm: vault semi-axes, skull base heights below the vault centre
    a = rng.uniform(140, 160) / 2  # left-right
    b = rng.uniform(180, 200) / 2  # anterior-posterior
    base_front = rng.uniform(0.35, 0.45)  # skull base depth below the centre at the front (x c)
    base_back = rng.uniform(0.65, 0.8)  # and at the back (posterior fossa)
    # the vault's height, vertex to skull base at mid-length, is 120-140 mm
    c = rng.uniform(120, 140) / (1 + (base_front + base_back) / 2)  # superior-inferior
    t0 = rng.uniform(4.0, 8.0)  # mean bone thickness
    z_front = -base_front * c
    face_r = np.array([rng.uniform(0.78, 0.86) * a, rng.uniform(0.46, 0.52) * b, rng.uniform(38, 46)])
    face_c = np.array([0.0, -1.02 * b + face_r[1], z_front - rng.uniform(22, 28)])
    deform_amp = rng.uniform(3.0, 7.0)
    rot = _rotation(rng, 4.0)

    # local bounding box (natural mm), rotated, fitted to the field of view
    lo = np.array([-a, face_c[1] - face_r[1], face_c[2] - face_r[2]])
    hi = np.array([a, b, c])
    half = np.abs(rot) @ ((hi - lo) / 2)
    fill = rng.uniform(0.76, 0.88)
    scale = float(np.min(fill * fov / (2 * half)))
    # centre of the bounding box in the grid, randomly offset within the free margin
    slack = np.maximum(fov / 2 - half * scale, 0)
    box_centre = fov / 2 - spacing / 2 + rng.uniform(-0.5, 0.5, 3) * slack
    centre = box_centre - rot @ ((lo + hi) / 2 * scale)  # vault centre, mm from voxel (0,0,0)

    t_min = MIN_THICKNESS_VOXELS * float(spacing.max()) / scale  # in natural mm
    thick_field = _SmoothField(rng, 4, (80.0, 200.0))
    warp = [_SmoothField(rng, 3, (90.0, 250.0)) for _ in range(3)]
    fm_r = (rng.uniform(13, 16), rng.uniform(16, 19))  # foramen magnum LR, AP radii
    fm_y = rng.uniform(0.22, 0.32) * b
    orbit_x = rng.uniform(0.40, 0.46) * face_r[0]
    orbit_z = z_front - rng.uniform(14, 18)
    orbit_r = (rng.uniform(18, 21), rng.uniform(16, 19))
    nasal_z = z_front - rng.uniform(46, 52)
    nasal_r = (rng.uniform(9, 12), rng.uniform(13, 17))
    # grid coordinates (world mm, relative to the vault centre), evaluated separably
    xs = (np.arange(shape[0]) * spacing[0] - centre[0]).astype(np.float32)[:, None, None]
    ys = (np.arange(shape[1]) * spacing[1] - centre[1]).astype(np.float32)[None, :, None]
    zs = (np.arange(shape[2]) * spacing[2] - centre[2]).astype(np.float32)[None, None, :]
    rt = (rot.T / scale).astype(np.float32)  # world offset -> natural local mm
    nat = [xs / scale, ys / scale, zs / scale]
    local = []
    for i in range(3):
        v = (rt[i, 0] * xs + rt[i, 1] * ys) + rt[i, 2] * zs
        v += np.float32(deform_amp) * warp[i](*nat)
        local.append(v)
    x, y, z = local

    # vault: ellipsoid cut from below by the tilted skull base plane
    slope = (base_back - base_front) * c / (2 * b)  # dz/dy of the plane (drops towards posterior)
    z_base0 = -(base_front + base_back) / 2 * c  # height of the base plane at y = 0
    plane = ((z_base0 - slope * y) - z) / np.float32(np.sqrt(1 + slope**2))
    outer = np.maximum(_ellipsoid_sdf(x, y, z, a, b, c), plane)
    thick = np.maximum(np.float32(t0) * (1 + np.float32(0.3) * thick_field(*nat)), np.float32(t_min))
    skull = (outer <= 0) & (outer > -thick)
    cavity = outer <= -thick

    # foramen magnum through the posterior skull base
    fm = ((x / fm_r[0]) ** 2 + ((y - fm_y) / fm_r[1]) ** 2 < 1) & (plane > -2 * thick - 4)
    skull &= ~fm

    # facial skeleton: the anterior half of a smaller ellipsoidal shell, kept out of the cavity
    fsdf = _ellipsoid_sdf(x - face_c[0], y - face_c[1], z - face_c[2], *face_r)
    t_face = np.maximum(np.float32(0.85) * thick, np.float32(t_min))
    face = (fsdf <= 0) & (fsdf > -t_face) & (y < face_c[1] + 0.15 * face_r[1]) & ~cavity
    front = y < face_c[1] - 0.2 * face_r[1]
    for sx in (-1, 1):
        face &= ~((((x - sx * orbit_x) / orbit_r[0]) ** 2 + ((z - orbit_z) / orbit_r[1]) ** 2 < 1) & front)
    face &= ~(((x / nasal_r[0]) ** 2 + ((z - nasal_z) / nasal_r[1]) ** 2 < 1) & front)
    skull |= face
    skull = _largest_component(skull, 6)

    if not return_info:
        return skull
    info = {
        "centre_mm": centre.tolist(),
        "rotation": rot.tolist(),
        "scale": scale,
        "radii_mm": (np.array([a, b, c]) * scale).tolist(),
        "thickness_mm": float(max(t0, t_min) * scale),
        "min_thickness_mm": float(t_min * scale),
        "foramen_centre_mm": (centre + rot @ (np.array([0.0, fm_y, z_base0 - slope * fm_y]) * scale)).tolist(),
        "foramen_radii_mm": [fm_r[0] * scale, fm_r[1] * scale],
        "fill": fill,
    }
    return skull, info


def estimate_vault(skull: np.ndarray, spacing) -> dict:
    """Vault centre and semi-axes (mm) of a skull without landmarks.

    The cranial cavity is taken as what filling each axial slice's holes adds, largest
    component; if that is too small (e.g. a skull cut open in every slice), the bone's bounding
    box is used instead. Orientation is assumed to be this module's (no rotation).
    """
    spacing = np.asarray(spacing, float)
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    inside = ndimage.binary_fill_holes(skull, structure=structure) & ~skull
    inside = _largest_component(inside, 6)
    if inside.sum() > 0.01 * skull.size:
        idx = np.nonzero(inside)
        lo = np.array([i.min() for i in idx]) * spacing
        hi = np.array([i.max() for i in idx]) * spacing
        centre = np.array([i.mean() for i in idx]) * spacing
        radii = np.maximum(hi - centre, centre - lo) + 2 * spacing.max()
    else:
        idx = np.nonzero(skull)
        lo = np.array([i.min() for i in idx]) * spacing
        hi = np.array([i.max() for i in idx]) * spacing
        centre = (lo + hi) / 2
        radii = (hi - lo) / 2
    return {"centre_mm": centre.tolist(), "radii_mm": radii.tolist(), "rotation": np.eye(3).tolist()}


# --------------------------------------------------------------------------------------------
# defects


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _frame(d: np.ndarray, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to d; e1 as close as possible to ``hint``."""
    e1 = hint - (hint @ d) * d
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([1.0, 0, 0]) - d[0] * d
    e1 = _unit(e1)
    return e1, np.cross(d, e1)


def _defect_shape(kind: str, rng: np.random.Generator, radii: np.ndarray):
    """Direction (local, normalised vault space), frame, angular radii and noise level."""
    x_hat, y_hat, z_hat = np.eye(3)
    if kind == "bilateral":
        d = _unit([rng.normal(0, 0.05), rng.uniform(-0.35, 0.15), 1.0])
        e1, e2 = _frame(d, x_hat)
        th = (rng.uniform(0.85, 1.0), rng.uniform(0.5, 0.65))
    elif kind == "frontoorbital":
        d = _unit([rng.normal(0, 0.1), -1.0, rng.uniform(0.25, 0.5)])
        e1, e2 = _frame(d, x_hat)
        th = (rng.uniform(0.55, 0.7), rng.uniform(0.32, 0.42))
    elif kind == "parietotemporal":
        d = _unit([rng.choice([-1.0, 1.0]), rng.uniform(-0.2, 0.4), rng.uniform(0.05, 0.35)])
        e1, e2 = _frame(d, y_hat)
        th = (rng.uniform(0.55, 0.75), rng.uniform(0.4, 0.55))
    elif kind in ("random_1", "random_2"):
        az = rng.uniform(0, 2 * np.pi)
        sz = rng.uniform(-0.05, 0.95)
        d = _unit([np.sqrt(1 - sz**2) * np.cos(az), np.sqrt(1 - sz**2) * np.sin(az), sz])
        e1, e2 = _frame(d, _unit(rng.normal(size=3)))
        th = (rng.uniform(0.3, 0.65), rng.uniform(0.3, 0.65))
    elif kind == "skullfix":
        az = rng.uniform(0, 2 * np.pi)
        el = np.deg2rad(rng.uniform(25, 85))
        d = _unit([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        e1, e2 = _frame(d, _unit(rng.normal(size=3)))
        half = rng.uniform(25, 40) * float(np.mean(radii)) / 70.0  # mm, scaled with the head
        th = (half, half)
    else:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    return d, e1, e2, th


def make_defect(
    skull: np.ndarray,
    spacing,
    kind: str,
    rng: np.random.Generator,
    info: dict | None = None,
) -> np.ndarray:
    """The bone removed by one synthetic defect (bool, a subset of ``skull``, one piece).

    Args:
        skull: bool skull volume.
        spacing: voxel size in mm.
        kind: a SkullBreak type ("bilateral", "frontoorbital", "parietotemporal", "random_1",
            "random_2") for a smooth irregular cap, or "skullfix" for a sharp cube/cylinder cut.
        rng: random generator.
        info: landmarks from ``make_skull(..., return_info=True)``; estimated from the bone
            with :func:`estimate_vault` when missing.

    The implant is ``skull & mask`` (equal to the mask) and the defective skull ``skull & ~mask``.
    """
    skull = np.asarray(skull, bool)
    spacing = np.asarray(spacing, float)
    if info is None:
        info = estimate_vault(skull, spacing)
    centre = np.asarray(info["centre_mm"], float)
    radii = np.asarray(info["radii_mm"], float)
    rot = np.asarray(info["rotation"], float)
    d, e1, e2, th = _defect_shape(kind, rng, radii)

    idx = np.nonzero(skull)
    pts = (np.stack(idx, axis=1) * spacing - centre).astype(np.float32)
    v = pts @ rot.astype(np.float32)  # local mm (rows: rot.T @ p)
    q = v / radii.astype(np.float32)  # normalised vault space
    rad = np.linalg.norm(q, axis=1)
    band = (rad > 0.45) & (rad < 1.7)

    if kind == "skullfix":
        along = v @ d
        a1, a2 = v @ e1, v @ e2
        if rng.random() < 0.5:  # cube
            rho = np.maximum(np.abs(a1), np.abs(a2)) / th[0]
        else:  # cylinder
            rho = np.hypot(a1, a2) / th[0]
        limit = np.ones_like(rho)
        front = along > 0
    else:
        u = q / np.maximum(rad, 1e-6)[:, None]
        cd = u @ d
        rho = np.hypot(np.arctan2(u @ e1, cd) / th[0], np.arctan2(u @ e2, cd) / th[1])
        noise = _SmoothField(rng, 4, (1.2, 3.0))
        limit = 1 + 0.28 * noise(u[:, 0], u[:, 1], u[:, 2])
        front = cd > 0

    n_skull = len(rad)
    candidate = band & front
    # size the defect into the target range by scaling its outline
    chosen = 1.0
    for g in (1.0, 1.15, 0.87, 1.3, 0.75, 1.5, 0.62, 1.75, 0.5, 2.0):
        frac = np.count_nonzero(candidate & (rho < g * limit)) / n_skull
        if MIN_DEFECT_FRACTION * 1.1 <= frac <= MAX_DEFECT_FRACTION * 0.95:
            chosen = g
            break
    sel = candidate & (rho < chosen * limit)
    mask = np.zeros(skull.shape, bool)
    mask[tuple(i[sel] for i in idx)] = True
    return _largest_component(mask, 26)


def make_case(shape, spacing, seed: int, case: int, kinds, split: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """One subject's complete skull and the removed-bone mask of each defect kind."""
    skull, info = make_skull(shape, spacing, np.random.default_rng([seed, split, case]), return_info=True)
    masks = {
        k: make_defect(skull, spacing, k, np.random.default_rng([seed, split, case, _kind_id(k)]), info)
        for k in kinds
    }
    return skull, masks, info


def _kind_id(kind: str) -> int:
    """A stable number per defect kind, so a defect does not depend on the list it came in."""
    return 1 + zlib.crc32(kind.encode()) % 1_000_000


# --------------------------------------------------------------------------------------------
# data set


def generate_dataset(
    root,
    dataset: str,
    n_train: int,
    n_test: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    seed: int,
    defect_types: list[str] | None = None,
    n_test_skulls: int | None = None,
) -> dict:
    """Write a synthetic SkullBreak- or SkullFix-like data set under ``root``.

    Layouts (NNN = 000, 001, ...):

    * ``skullbreak``: ``training/complete_skull/NNN.nrrd``,
      ``training/{defective_skull,implant}/<type>/NNN.nrrd`` for ``n_train`` skulls and every
      type in ``defect_types`` (default the five SkullBreak types); ``testing/`` likewise for
      ``n_test_skulls`` skulls (default ``n_test``) times every type.
    * ``skullfix``: ``training_set/{complete_skull,defective_skull,implant}/NNN.nrrd`` and
      ``test_set/...``, one sharp-edged defect per skull, ``n_train`` and ``n_test`` skulls.

    All volumes are uint8 0/1 NRRD with ``spacing`` and the same header within a triplet.
    Also writes ``README.md`` and ``generation.json``. Returns the summary that
    ``generation.json`` holds (paths relative to ``root``).
    """
    t_start = time.perf_counter()
    root = Path(root)
    _check_numbers(n_train, n_test, n_test_skulls, shape, spacing)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if dataset == "skullbreak":
        types = list(defect_types) if defect_types is not None else list(SKULLBREAK_DEFECT_TYPES)
        splits = [("training", n_train), ("testing", n_test_skulls if n_test_skulls is not None else n_test)]
    elif dataset == "skullfix":
        types = ["skullfix"]
        splits = [("training_set", n_train), ("test_set", n_test)]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'skullbreak' or 'skullfix'")
    for k in types:
        if k not in DEFECT_KINDS:
            raise ValueError(f"unknown defect type {k!r}; expected some of {DEFECT_KINDS}")
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be three sizes of at least 16 voxels, got {shape}")
    _clear_own_dataset(root)  # refuses a folder holding anything this generator did not write
    fov = np.asarray(shape) * np.asarray(spacing)
    origin = tuple(float(o) for o in -(fov / 2) + np.asarray(spacing) / 2)

    summary: dict[str, Any] = {
        "synthetic": True,
        "dataset": dataset,
        "seed": int(seed),
        "shape": list(shape),
        "spacing": list(spacing),
        "origin": list(origin),
        "defect_types": types if dataset == "skullbreak" else [],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "n_test_skulls": None if n_test_skulls is None else int(n_test_skulls),
        "generator": "skullrecon.synthetic",
        "splits": {},
    }
    for split_name, n_skulls in splits:
        split_id = _SPLIT_IDS[split_name]
        cases = []
        for i in range(int(n_skulls)):
            name = f"{i:03d}.nrrd"
            skull, masks, info = make_case(shape, spacing, seed, i, types, split_id)
            complete_rel = f"{split_name}/complete_skull/{name}"
            write_volume(root / complete_rel, skull.astype(np.uint8), spacing=spacing, origin=origin)
            for k in types:
                implant = masks[k]
                defective = skull & ~implant
                sub = f"{k}/" if dataset == "skullbreak" else ""
                d_rel = f"{split_name}/defective_skull/{sub}{name}"
                i_rel = f"{split_name}/implant/{sub}{name}"
                write_volume(root / d_rel, defective.astype(np.uint8), spacing=spacing, origin=origin)
                write_volume(root / i_rel, implant.astype(np.uint8), spacing=spacing, origin=origin)
                cases.append({
                    "id": f"{i:03d}",
                    "type": k if dataset == "skullbreak" else None,
                    "complete": complete_rel,
                    "defective": d_rel,
                    "implant": i_rel,
                    "skull_voxels": int(skull.sum()),
                    "implant_voxels": int(implant.sum()),
                    "defect_fraction": round(float(implant.sum() / skull.sum()), 4),
                })
        summary["splits"][split_name] = {"n_skulls": int(n_skulls), "n_cases": len(cases), "cases": cases}
    summary["seconds"] = round(time.perf_counter() - t_start, 2)

    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(_readme(summary))
    (root / "generation.json").write_text(json.dumps(summary, indent=1) + "\n")  # last: marks the set finished
    return summary


def _check_numbers(n_train, n_test, n_test_skulls, shape, spacing) -> None:
    """Counts are whole numbers >= 0 and spacings lie in the range every reader accepts, so a
    dataset is never written that cannot be read back."""
    from .io import SPACING_RANGE_MM

    for name, n in (("n_train", n_train), ("n_test", n_test), ("n_test_skulls", n_test_skulls)):
        if n is None and name == "n_test_skulls":
            continue
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {n!r}")
    values = np.asarray(spacing, dtype=float).reshape(-1)
    lo, hi = SPACING_RANGE_MM
    if values.shape != (3,) or not np.all(np.isfinite(values)) or not np.all((values >= lo) & (values <= hi)):
        raise ValueError(f"spacing must be three voxel sizes from {lo} to {hi} mm, got {list(spacing)}")
    if len(tuple(shape)) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shape):
        raise ValueError(f"shape must be three whole numbers of voxels, got {list(shape)}")


def _clear_own_dataset(root: Path) -> None:
    """Make ``root`` ready for a new dataset without touching anything this generator did not write.

    An absent or empty folder is used as it is. A folder whose ``generation.json`` (written last
    by an earlier run) lists every file in it is an earlier synthetic dataset: its files are
    removed, so no stale case of a larger earlier run remains. Anything else (a real dataset, a
    half-written one, any other file) is refused with the first foreign file named.
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"{root}: exists and is not a folder")
    present = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    if not present:
        return
    listed: set[str] = set()
    try:
        summary = json.loads((root / "generation.json").read_text())
        if summary.get("generator") == "skullrecon.synthetic":
            listed = {"generation.json", "README.md"}
            for split in summary["splits"].values():
                for c in split["cases"]:
                    listed.update((c["complete"], c["defective"], c["implant"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = set()
    foreign = [p for p in present if p.relative_to(root).as_posix() not in listed]
    if foreign:
        raise ValueError(
            f"{foreign[0]}: {root} already holds files that skullrecon synthetic did not write "
            f"({len(foreign)} in all); refusing to write a dataset over them - choose an empty or new folder"
        )
    (root / "generation.json").unlink()  # first: a run killed from here on leaves no finished-looking dataset
    for p in present:
        p.unlink(missing_ok=True)


def _readme(s: dict) -> str:
    counts = ", ".join(f"{k}: {v['n_skulls']} skulls / {v['n_cases']} cases" for k, v in s["splits"].items())
    fracs = [c["defect_fraction"] for v in s["splits"].values() for c in v["cases"]]
    layout = (
        "training|testing/complete_skull/NNN.nrrd, .../defective_skull/<type>/NNN.nrrd, .../implant/<type>/NNN.nrrd"
        if s["dataset"] == "skullbreak"
        else "training_set|test_set/{complete_skull,defective_skull,implant}/NNN.nrrd"
    )
    return f"""# Synthetic {s['dataset']} data set (NOT real patient data)

Generated by `skullrecon.synthetic.generate_dataset` because the real SkullBreak/SkullFix
data could not be used here. The skulls are built from implicit functions (an ellipsoidal
vault warped by a smooth random displacement, a tilted skull base with a foramen magnum, and a
facial plate with orbits and a nasal aperture); defects are
{'smooth irregular caps cut through the bone (SkullBreak-like)' if s['dataset'] == 'skullbreak' else 'sharp-edged cube or cylinder cuts (SkullFix-like)'}.
Results on these data say nothing about clinical performance.

Layout: {layout}

Parameters:

- seed: {s['seed']}
- shape: {s['shape']} voxels, spacing: {s['spacing']} mm, origin: {[round(o, 3) for o in s['origin']]} mm (LPS)
- defect types: {s['defect_types'] or ['skullfix']}
- n_train: {s['n_train']}, n_test: {s['n_test']}, n_test_skulls: {s['n_test_skulls']}
- {counts}
- removed bone: {min(fracs, default=0):.3f}-{max(fracs, default=0):.3f} of skull voxels

Every volume is uint8 0/1 NRRD; within a case defective | implant == complete and
defective & implant == 0. Per-case details are in generation.json.
"""
