"""Surface meshes of implants for 3-D printing (binary STL, millimetres, the input's physical space)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skullrecon.io import Volume, atomic_path

__all__ = ["implant_mesh", "write_stl"]


def implant_mesh(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (mm, physical space of ``affine``) and triangles of the mask's boundary.

    Marching cubes runs on the mask's bounding box padded by one voxel, so the surface is closed
    (watertight) even where the implant touches the edge of the volume, and a small implant in a
    512^3 scan costs only its own box. Triangles are wound counter-clockwise seen from outside
    (normals point out of the implant) in physical space, also under a mirroring affine.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("cannot mesh an empty implant")
    lo = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]) for ax in range(3)]
    hi = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 1 for ax in range(3)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    padded = np.pad(mask[box].astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    verts = verts.astype(np.float64) + (np.asarray(lo, float) - 1.0)  # back to voxel indices of the input
    faces = np.ascontiguousarray(faces)
    # skimage's winding convention has changed between releases: orient by the sign of the
    # enclosed volume in index space (positive for outward normals), then follow the affine.
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    if np.linalg.det(affine[:3, :3]) < 0:  # a mirroring affine flips the winding
        faces = faces[:, ::-1]
    physical = verts @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    return physical, np.ascontiguousarray(faces)


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume of a closed triangle mesh (divergence theorem); negative if wound inward."""
    tri = verts[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def write_stl(path: str | Path, mask: np.ndarray, like: Volume) -> Path:
    """Write the implant's surface as a binary STL in millimetres (atomic)."""
    verts, faces = implant_mesh(mask, like.affine)
    tri = verts[faces].astype(np.float32)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norms = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norms, out=np.zeros_like(normals), where=norms > 0)
    record = np.zeros(len(faces), dtype=[("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])
    record["normal"], record["vertices"] = normals, tri
    header = b"skullrecon implant, units mm".ljust(80, b" ")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        fh.write(np.uint32(len(faces)).tobytes())
        fh.write(record.tobytes())
    return Path(path)
