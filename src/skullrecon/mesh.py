"""Surface meshes of implants for 3-D printing (binary STL, millimetres, the input's physical space)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from skullrecon.io import Volume, atomic_path
from skullrecon.morphology import box_spans

__all__ = ["implant_mesh", "write_stl"]


def implant_mesh(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (mm, physical space of ``affine``) and triangles of the mask's boundary.

    Marching cubes runs on the mask's bounding box padded by one voxel, so the surface is closed
    (watertight) even where the implant touches the edge of the volume, and a small implant in a
    512^3 scan costs only its own box; inside the box only the cubes that touch the implant are
    visited. Triangles are wound counter-clockwise seen from outside (normals point out of the
    implant) in physical space, also under a mirroring affine.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask.shape}")
    spans = box_spans(mask)
    if spans is None:
        raise ValueError("cannot mesh an empty implant")
    inside = np.zeros([b - a + 2 for a, b in spans], bool)  # C order, as skimage needs it
    inside[1:-1, 1:-1, 1:-1] = mask[tuple(slice(a, b) for a, b in spans)]
    verts, faces, _, _ = marching_cubes(inside.astype(np.float32), level=0.5, mask=_cubes_at(inside))
    verts = verts.astype(np.float64) + (np.asarray([a for a, _ in spans], float) - 1.0)
    faces = np.ascontiguousarray(faces)
    # skimage's winding convention has changed between releases: orient as it winds a one-voxel
    # mesh (the sign of its enclosed volume in index space), then follow the affine.
    if _skimage_winds_inward():
        faces = faces[:, ::-1]
    if np.linalg.det(affine[:3, :3]) < 0:  # a mirroring affine flips the winding
        faces = faces[:, ::-1]
    physical = verts @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    return physical, np.ascontiguousarray(faces)


def _cubes_at(inside: np.ndarray) -> np.ndarray:
    """Where skimage's marching cubes must look: voxels ``v`` with a foreground voxel in ``v - {0, 1}^3``."""
    out = inside.copy()
    for ax in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[ax], hi[ax] = slice(1, None), slice(0, -1)
        out[tuple(lo)] |= out[tuple(hi)]
    return out


@lru_cache(maxsize=1)
def _skimage_winds_inward() -> bool:
    """Whether marching cubes, called as above, winds a binary mask's surface inward (consistent per release)."""
    from skimage.measure import marching_cubes

    voxel = np.zeros((3, 3, 3), bool)
    voxel[1, 1, 1] = True
    verts, faces, _, _ = marching_cubes(voxel.astype(np.float32), level=0.5, mask=_cubes_at(voxel))
    return _signed_volume(verts.astype(np.float64), faces) < 0


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume of a closed triangle mesh (divergence theorem); negative if wound inward."""
    centred = verts - verts.mean(axis=0)  # small numbers: the sum is exact enough in float64
    tri = centred[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def write_stl(path: str | Path, mask: np.ndarray, like: Volume) -> Path:
    """Write the implant's surface as a binary STL in millimetres (atomic)."""
    verts, faces = implant_mesh(mask, like.affine)
    tri = verts.astype(np.float32)[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norms = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norms, out=np.zeros_like(normals), where=norms > 0)
    record = np.zeros(len(faces), dtype=[("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])
    record["normal"], record["vertices"] = normals, tri
    header = b"skullrecon implant, units mm".ljust(80, b" ")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        fh.write(np.uint32(len(faces)).tobytes())
        fh.write(memoryview(record).cast("B"))
    return Path(path)
