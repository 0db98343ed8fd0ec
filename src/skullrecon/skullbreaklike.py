"""A SkullBreak-like dataset made from real complete skulls: SkullBreak's five defect kinds.

SkullBreak (Kodym, Li et al., Data in Brief 35 (2021) 106902) gives every complete skull five
synthetic defects: ``bilateral``, ``frontoorbital``, ``parietotemporal``, ``random_1`` and
``random_2``. This module cuts the same five kinds into other complete skulls (the real SkullFix
skulls, both CQ500 like SkullBreak's) and writes them in SkullBreak's own layout, so that the
SkullBreak adapter (:mod:`skullrecon.datasets`, ``config.yaml``'s ``datasets.skullbreak.layout``)
reads them as it reads the downloaded dataset::

    <root>/training/complete_skull/NNN.nrrd
    <root>/training/defective_skull/<kind>/NNN.nrrd
    <root>/training/implant/<kind>/NNN.nrrd
    <root>/evaluation/...                                (the test split, the same)

What is known of SkullBreak's method and what is assumed here is in docs/datasets.md ("A
SkullBreak-like dataset from real skulls"). In short, the defect *shape* follows the dataset
author's public defect generator (O. Kodym, ``BUT_autoimplant_public``,
``dataset_generation/generate_defects.py``, read, not copied): a primary sphere of random radius,
a random number (0-7) of smaller secondary spheres centred on its surface, their union, a small
random elastic deformation, intersected with the skull; the generator's voxel sizes are taken at
SkullBreak's 0.4 mm voxels, the three named kinds' primary sphere larger (calibrated on the one real
SkullBreak parieto-temporal skull we have, bench/skullbreaklike_stats.py). The *placement* per kind is this module's reading of the kind names
(the generator itself places every defect at a random bone voxel):

* ``bilateral``: the vertex, on the midline, with two secondary spheres forced to its left and
  right so the defect opens both parietal sides;
* ``frontoorbital``: the forehead low down, so the cut reaches the supra-orbital rim and roof;
* ``parietotemporal``: one side (drawn), at and above the level of the cavity's centre, a little
  behind it;
* ``random_1``, ``random_2``: anywhere on the upper skull (a direction drawn over the upper
  hemisphere and a random offset, as the generator's random bone voxel plus jitter).

Positions are found from the cranial cavity's centre by a ray in patient space (LPS: +x left,
+y posterior, +z superior, read through each file's affine, so oblique headers are fine), as
:mod:`skullrecon.defects` does. The implant is the cut bone's largest 26-connected piece and the
defective skull is the complete skull minus it: ``defective | implant == complete``, no overlap.
Each defect draws from ``numpy.random.default_rng([seed, case, kind])``: a case depends on no other.
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from skullrecon.datasets import Layout, list_healthy
from skullrecon.defects import _world, cranial_centre, surface_point
from skullrecon.io import read_volume, write_volume
from skullrecon.morphology import largest_component

__all__ = ["KINDS", "FOLDERS", "layout", "cut_kind", "generate_dataset", "implant_stats"]

KINDS = ("bilateral", "frontoorbital", "parietotemporal", "random_1", "random_2")
# SkullBreak's split folders as extracted from its archives (config.yaml, datasets.skullbreak.layout)
FOLDERS = {"train": "training", "test": "evaluation"}

# The author's generator in SkullBreak's 0.4 mm voxels: primary radius N(70, 20) voxels, secondary
# N(40, 10) voxels, 0-7 secondary spheres, placed at a bone voxel +-32 voxels, elastic deformation
# of about 2 mm. In mm:
PRIMARY_MM = (28.0, 8.0)
# The named kinds are larger in SkullBreak: the one real parieto-temporal skull we have shows a
# through-hole of 29 cm^2 (70 x 52 mm) from the side, which the generator's primary of 28 mm leaves
# at a sixth (bench/skullbreaklike_stats.py). Their primary radius is set to match it (an assumption).
NAMED_PRIMARY_MM = (40.0, 6.0)
SECONDARY_MM = (16.0, 4.0)
N_SECONDARY = (0, 7)
JITTER_MM = 12.8
WOBBLE_MM = 2.0
_PRIMARY_CLIP = (14.0, 48.0)  # keeps a rare draw from a dent or from half the head
_SECONDARY_CLIP = (6.0, 28.0)


def layout(kinds: Sequence[str] = KINDS) -> dict[str, Any]:
    """The dataset's layout as the config writes it (``datasets.<name>.layout``)."""
    return {"train": FOLDERS["train"], "test": FOLDERS["test"], "types": list(kinds)}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _direction(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Direction (LPS) from the cavity's centre to where a kind's defect sits."""
    if kind == "bilateral":
        return _unit([rng.normal(0, 0.03), rng.uniform(-0.3, 0.3), 1.0])
    if kind == "frontoorbital":
        return _unit([rng.normal(0, 0.1), -1.0, rng.uniform(-0.05, 0.25)])
    if kind == "parietotemporal":
        side = rng.choice([-1.0, 1.0])
        return _unit([side, rng.uniform(0.0, 0.45), rng.uniform(0.1, 0.55)])
    if kind in ("random_1", "random_2"):
        az, sz = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.95)
        return np.array([np.sqrt(1 - sz**2) * np.cos(az), np.sqrt(1 - sz**2) * np.sin(az), sz])
    raise ValueError(f"unknown SkullBreak defect kind {kind!r}; expected one of {list(KINDS)}")


def _wobble(rng: np.random.Generator, n_terms: int = 4):
    """A smooth random displacement field (mm -> mm), about WOBBLE_MM, wavelengths 20-60 mm."""
    k = rng.normal(size=(n_terms, 3))
    k *= (2 * np.pi / rng.uniform(20.0, 60.0, n_terms) / np.linalg.norm(k, axis=1))[:, None]
    phase = rng.uniform(0, 2 * np.pi, n_terms)
    amp = rng.normal(size=(n_terms, 3)) * WOBBLE_MM / np.sqrt(n_terms)
    return lambda p: np.sin(p @ k.T + phase) @ amp


def _clipped(rng, mean_sd, clip) -> float:
    return float(np.clip(rng.normal(*mean_sd), *clip))


def cut_kind(
    complete: np.ndarray,
    affine: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    centre: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The bone one SkullBreak-kind defect removes from a complete skull.

    Returns the implant (bool, a subset of ``complete``, one 26-connected piece) and what was
    drawn (sphere centres and radii in mm, the direction, the implant's size).
    """
    skull = np.asarray(complete, bool)
    affine = np.asarray(affine, float)
    _direction(kind, np.random.default_rng(0))  # an unknown kind fails here, before any work
    centre = cranial_centre(skull, affine) if centre is None else np.asarray(centre, float)
    point, d = surface_point(skull, affine, centre, lambda: _direction(kind, rng), kind)

    # the frame at the point: d outward, e1 horizontal (left-right for the vertex), e2 = d x e1
    e1 = np.cross([0.0, 1.0, 0.0], d) if kind == "bilateral" else np.cross([0.0, 0.0, 1.0], d)
    e1 = _unit(e1) if np.linalg.norm(e1) > 1e-3 else np.array([1.0, 0.0, 0.0])
    e2 = np.cross(d, e1)
    if kind == "bilateral":  # stays on the midline: jitter only front-back and in depth
        jitter = rng.uniform(-1, 1) * JITTER_MM * e2 + rng.uniform(-0.5, 0.5) * JITTER_MM * d
    elif kind == "frontoorbital":  # keeps its lower edge at the orbits: no upward jitter
        jitter = rng.uniform(-0.5, 0.5) * JITTER_MM * e1 - abs(rng.uniform(-0.5, 0.5)) * JITTER_MM * e2
    else:
        jitter = rng.uniform(-1, 1, 3) * JITTER_MM
    c0 = point + jitter
    r1 = _clipped(rng, PRIMARY_MM if kind.startswith("random") else NAMED_PRIMARY_MM, _PRIMARY_CLIP)
    n_sec = int(rng.integers(N_SECONDARY[0], N_SECONDARY[1] + 1))
    u = rng.normal(size=(n_sec, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    if kind == "bilateral":  # one sphere over each side at least
        u = np.vstack([u, e1, -e1])
    centres = np.vstack([c0, c0 + r1 * u])
    radii = np.array([r1] + [_clipped(rng, SECONDARY_MM, _SECONDARY_CLIP) for _ in range(len(u))])
    wobble = _wobble(rng)

    # voxel-exact inside the box that can hold the union
    reach = radii[:, None] + 2 * WOBBLE_MM
    lo_mm, hi_mm = (centres - reach).min(0), (centres + reach).max(0)
    corners = np.array([[a[0], b[1], c[2]] for a in (lo_mm, hi_mm) for b in (lo_mm, hi_mm) for c in (lo_mm, hi_mm)])
    ijk = (corners - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    lo_i = np.clip(np.floor(ijk.min(0)).astype(int), 0, skull.shape)
    hi_i = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, skull.shape)
    box = tuple(slice(a, b) for a, b in zip(lo_i, hi_i))
    idx = np.argwhere(skull[box])
    p = _world(idx + lo_i, affine)
    q = p + wobble(p)
    inside = np.zeros(len(q), bool)
    for c, r in zip(centres, radii):
        inside |= ((q - c) ** 2).sum(1) < r * r
    cut = np.zeros(skull[box].shape, bool)
    cut[tuple(idx[inside].T)] = True
    implant = np.zeros(skull.shape, bool)
    implant[box] = largest_component(cut, connectivity=26)
    if not implant.any():
        raise ValueError(f"the {kind} defect at {c0.round(1)} mm removed no bone")
    info = {
        "kind": kind,
        "direction": d.round(4).tolist(),
        "cavity_centre_mm": centre.round(2).tolist(),
        "sphere_centres_mm": centres.round(2).tolist(),
        "sphere_radii_mm": radii.round(2).tolist(),
        **implant_stats(implant, affine, centre),
        "defect_fraction": round(float(implant.sum() / skull.sum()), 4),
    }
    return implant, info


def implant_stats(implant: np.ndarray, affine: np.ndarray, centre: np.ndarray | None = None) -> dict[str, Any]:
    """Size of an implant: voxels, volume (cm^3), extent of its bounding box along LPS (mm),
    and its centre relative to ``centre`` (mm, LPS) where given."""
    affine = np.asarray(affine, float)
    idx = np.argwhere(implant)
    out: dict[str, Any] = {"implant_voxels": int(len(idx)),
                           "volume_cm3": round(len(idx) * abs(np.linalg.det(affine[:3, :3])) / 1000, 2)}
    if len(idx):
        corners = np.stack([idx.min(0), idx.max(0)])
        w = _world(idx[:: max(1, len(idx) // 200_000)].astype(float), affine)  # a sample, for speed
        out["extent_mm"] = (w.max(0) - w.min(0) + np.linalg.norm(affine[:3, :3], axis=0)).round(1).tolist()
        out["voxel_box"] = corners.tolist()
        if centre is not None:
            out["centre_rel_mm"] = (w.mean(0) - np.asarray(centre, float)).round(1).tolist()
    return out


def _kind_id(kind: str) -> int:
    return zlib.crc32(kind.encode())


def generate_dataset(
    source_root: str | Path,
    source_layout: Layout,
    out_root: str | Path,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    max_skulls: int | None = None,
    splits: Sequence[str] = ("train", "test"),
) -> dict[str, Any]:
    """Write the SkullBreak-like dataset of ``source_root``'s complete skulls under ``out_root``.

    Every complete skull of the source's ``train`` split goes to ``training/``, of its ``test``
    split to ``evaluation/`` (the source's ``test_ids`` decide, so no test skull is trained on),
    copied byte for byte to ``complete_skull/NNN.nrrd`` with, per kind, ``defective_skull/<kind>/``
    and ``implant/<kind>/`` on its header and grid. Case ids are the source's. Also writes
    ``generation.json`` (every defect drawn) and ``README.md``.

    Args:
        max_skulls: the first this many skulls (by id) of each split; None: all of them.
    """
    kinds = list(kinds)
    if not kinds:
        raise ValueError("a SkullBreak-like dataset needs at least one defect kind")
    for kind in kinds:
        _direction(kind, np.random.default_rng(0))  # an unknown kind fails before any work
    out_root = Path(out_root)
    records = []
    for split in splits:
        skulls = sorted(list_healthy(source_root, source_layout, split))[: max_skulls]
        base = out_root / FOLDERS[split]
        for case_id, path in skulls:
            t0 = time.perf_counter()
            vol = read_volume(path)
            complete = vol.array.astype(bool)
            centre = cranial_centre(complete, vol.affine)
            (base / "complete_skull").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, base / "complete_skull" / f"{case_id}.nrrd")
            for kind in kinds:
                rng = np.random.default_rng([int(seed), int(case_id), _kind_id(kind)])
                implant, info = cut_kind(complete, vol.affine, kind, rng, centre=centre)
                write_volume(base / "defective_skull" / kind / f"{case_id}.nrrd", complete & ~implant, like=vol)
                write_volume(base / "implant" / kind / f"{case_id}.nrrd", implant, like=vol)
                records.append({"split": split, "id": case_id, "source": str(path), **info})
                print(f"{FOLDERS[split]} {kind}_{case_id}: {info['volume_cm3']} cm3, extent {info['extent_mm']} mm")
            print(f"{FOLDERS[split]} {case_id}: {time.perf_counter() - t0:.1f} s for {len(kinds)} defects")
    summary = {"source_root": str(source_root), "layout": layout(kinds), "kinds": kinds, "seed": int(seed),
               "max_skulls": max_skulls, "shape_mm": {"primary": PRIMARY_MM, "named_primary": NAMED_PRIMARY_MM, "secondary": SECONDARY_MM,
               "n_secondary": N_SECONDARY, "jitter": JITTER_MM, "wobble": WOBBLE_MM}, "cases": records}
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "generation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_root / "README.md").write_text(_readme(summary))
    return summary


def _readme(s: dict[str, Any]) -> str:
    n = {split: len({c["id"] for c in s["cases"] if c["split"] == split}) for split in FOLDERS}
    vols = [c["volume_cm3"] for c in s["cases"]]
    return f"""# A SkullBreak-like dataset: SkullBreak's five defect kinds cut into the complete skulls of {s['source_root']}

Made by `skullrecon.skullbreaklike.generate_dataset` (seed {s['seed']}): {n['train']} training skulls in
{FOLDERS['train']}/, {n['test']} test skulls in {FOLDERS['test']}/ (the source's own split), each with the kinds
{s['kinds']}. Implants {min(vols, default=0):.1f}-{max(vols, default=0):.1f} cm^3. Within a case
defective | implant == complete and defective & implant == 0, on the source file's header; the complete
skull is the source file, byte for byte. Every defect drawn is in generation.json; the method and its
sources are in the skullrecon repository's docs/datasets.md.

The source skulls are CQ500-derived (SkullFix) and CC BY-NC-SA 4.0, and so is this derivative: cite
Kodym, Li et al., Data in Brief 35 (2021) 106902 and Chilamkurthy et al., The Lancet 392 (2018).
"""
