"""Surface meshes of implants for 3-D printing (binary STL, millimetres, the input's physical space)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skullrecon.io import Volume, atomic_path

__all__ = ["implant_mesh", "write_stl"]


def implant_mesh(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (mm, physical space of ``affine``) and triangles of the mask's boundary.

    The mask is padded by one voxel before marching cubes, so the surface is closed
    (watertight) even where the implant touches the edge of the volume.
    """
    from skimage.measure import marching_cubes

    if not mask.any():
        raise ValueError("cannot mesh an empty implant")
    padded = np.pad(mask.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    verts -= 1.0  # undo the padding: back to voxel indices of the input
    physical = verts @ affine[:3, :3].T + affine[:3, 3]
    if np.linalg.det(affine[:3, :3]) < 0:  # a mirroring affine flips the winding; keep normals outward
        faces = faces[:, ::-1]
    return physical, faces


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
