"""Implant surface meshes: closed, outward-wound, in millimetres where the voxels are."""

from __future__ import annotations

import numpy as np
import pytest

from skullrecon.io import Volume
from skullrecon.mesh import implant_mesh, write_stl

from conftest import shell


def read_stl(path) -> tuple[np.ndarray, np.ndarray]:
    """(triangles (n, 3, 3), stored normals (n, 3)) of a binary STL, parsed independently."""
    data = open(path, "rb").read()
    n = int(np.frombuffer(data, "<u4", count=1, offset=80)[0])
    assert len(data) == 84 + 50 * n, "STL size does not match its triangle count"
    rec = np.frombuffer(data, dtype=[("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")], count=n, offset=84)
    return rec["v"].astype(np.float64), rec["normal"].astype(np.float64)


def check_closed_mesh(tri: np.ndarray) -> float:
    """Assert a triangle soup is watertight and consistently wound; return its enclosed volume.

    Identical vertices are merged; then every undirected edge must be used by exactly two
    triangles, in opposite directions (consistent orientation), and no triangle may be degenerate.
    """
    flat = tri.reshape(-1, 3)
    _, idx = np.unique(np.round(flat, 4), axis=0, return_inverse=True)
    faces = idx.reshape(-1, 3)
    assert np.all(faces[:, 0] != faces[:, 1]) and np.all(faces[:, 1] != faces[:, 2]) and np.all(faces[:, 0] != faces[:, 2])
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    # each directed edge exactly once, and its reverse exactly once: closed, manifold, oriented
    d_unique, d_count = np.unique(directed, axis=0, return_counts=True)
    assert d_count.max() == 1, "a directed edge is used twice: inconsistent orientation or non-manifold"
    undirected = np.sort(directed, axis=1)
    _, u_count = np.unique(undirected, axis=0, return_counts=True)
    assert np.all(u_count == 2), f"edges not shared by exactly two triangles: {np.bincount(u_count)}"
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def _volume(mask, affine) -> Volume:
    return Volume(mask.astype(np.uint8), affine, None, None, "nrrd")


def voxel_bounds_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centres = np.argwhere(mask) @ affine[:3, :3].T + affine[:3, 3]
    return centres.min(0), centres.max(0)


@pytest.mark.parametrize("affine", [
    np.diag([1.5, 1.5, 2.0, 1.0]),
    np.diag([-0.5, 0.8, 1.2, 1.0]),  # mirroring affine: the winding must follow
])
def test_cube_is_closed_with_known_bounds_and_volume(tmp_path, affine):
    affine = affine.copy()
    affine[:3, 3] = (10.0, -20.0, 5.0)
    mask = np.zeros((30, 30, 30), np.uint8)
    mask[5:25, 8:18, 10:22] = 1  # 20 x 10 x 12 voxels
    path = write_stl(tmp_path / "cube.stl", mask, _volume(mask, affine))
    tri, normals = read_stl(path)
    volume = check_closed_mesh(tri)
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    # the surface runs half a voxel outside the boundary centres, minus the chamfered edges/corners
    assert volume > 0
    assert volume == pytest.approx(mask.sum() * voxel_mm3, rel=0.1)
    lo, hi = voxel_bounds_mm(mask, affine)
    half = np.abs(affine[:3, :3]).sum(1) / 2  # half a voxel along each physical axis
    np.testing.assert_allclose(tri.reshape(-1, 3).min(0), np.minimum(lo, hi) - half, atol=1e-4)
    np.testing.assert_allclose(tri.reshape(-1, 3).max(0), np.maximum(lo, hi) + half, atol=1e-4)
    # stored normals are unit and point outward (agree with the winding)
    wound = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    wound /= np.linalg.norm(wound, axis=1, keepdims=True)
    np.testing.assert_allclose(normals, wound, atol=1e-4)


def test_mask_touching_every_border_is_still_closed():
    mask = np.zeros((12, 14, 10), bool)
    mask[:, :, :4] = True  # a slab on the k=0 face, spanning the whole i and j range
    mask[0:3, 0:3, :] = True  # a pillar reaching the opposite face
    verts, faces = implant_mesh(mask, np.eye(4))
    volume = check_closed_mesh(verts[faces])
    assert volume == pytest.approx(mask.sum(), rel=0.05)
    np.testing.assert_allclose(verts.min(0), [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(verts.max(0), [11.5, 13.5, 9.5])


def test_full_volume_and_hollow_shell_are_closed():
    full = np.ones((5, 6, 7), bool)
    verts, faces = implant_mesh(full, np.eye(4))
    assert check_closed_mesh(verts[faces]) == pytest.approx(full.sum(), rel=0.15)
    hollow = shell((40, 40, 40), (18, 16, 14), 3)  # an inner and an outer surface, both oriented
    verts, faces = implant_mesh(hollow, np.diag([0.7, 0.7, 1.1, 1.0]))
    assert check_closed_mesh(verts[faces]) == pytest.approx(hollow.sum() * 0.7 * 0.7 * 1.1, rel=0.05)


def test_oblique_affine_bounds_follow_the_affine():
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.45, 0.45, 0.63])
    affine[:3, 3] = (-100.0, 40.0, 12.0)
    mask = np.zeros((20, 20, 20), bool)
    mask[4:12, 6:16, 3:9] = True
    verts, faces = implant_mesh(mask, affine)
    volume = check_closed_mesh(verts[faces])
    assert volume == pytest.approx(mask.sum() * 0.45 * 0.45 * 0.63, rel=0.15)
    # the 8 outer corners of the voxel box (index-space half-voxel offsets) give the exact bounds
    corners = np.array([[i, j, k] for i in (3.5, 11.5) for j in (5.5, 15.5) for k in (2.5, 8.5)])
    corners_mm = corners @ affine[:3, :3].T + affine[:3, 3]
    assert np.all(verts.min(0) >= corners_mm.min(0) - 1e-6) and np.all(verts.max(0) <= corners_mm.max(0) + 1e-6)
    np.testing.assert_allclose(verts.min(0), corners_mm.min(0), atol=0.5)
    np.testing.assert_allclose(verts.max(0), corners_mm.max(0), atol=0.5)


def test_empty_mask_is_an_error(tmp_path):
    empty = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="empty"):
        implant_mesh(empty, np.eye(4))
    with pytest.raises(ValueError, match="empty"):
        write_stl(tmp_path / "x.stl", empty, _volume(empty, np.eye(4)))
    assert not (tmp_path / "x.stl").exists()


def test_real_implant_mesh_is_every_cube_of_the_whole_box():
    """Visiting only the cubes that touch the implant loses no triangle: the same triangles, same order,
    as marching cubes over the implant's whole padded box, for a sliver-rich real implant (the 2 mm
    a thin shell over part of the real SkullBreak skull), in its Fortran order."""
    from skimage.measure import marching_cubes

    from conftest import real_file
    from skullrecon.io import read_volume
    from skullrecon.postprocess import dilate

    vol = read_volume(real_file("real/autoimplantpipe_skullbreak_parietotemporal_001.nii.gz"))
    skull = vol.array.astype(bool)
    part = skull[180:330, 150:300, 250:400]
    implant = np.asfortranarray(dilate(part, 0.4, vol.spacing) & ~part)  # one-voxel slivers all over
    assert implant.sum() > 10000
    verts, faces = implant_mesh(implant, np.eye(4))
    lo = [int(np.flatnonzero(implant.any(axis=tuple(a for a in range(3) if a != ax)))[0]) for ax in range(3)]
    hi = [int(np.flatnonzero(implant.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 1 for ax in range(3)]
    box = np.pad(implant[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32), 1)
    ref_verts, ref_faces, _, _ = marching_cubes(box, level=0.5)
    np.testing.assert_array_equal(verts, ref_verts + (np.asarray(lo) - 1.0))
    assert np.array_equal(faces, ref_faces) or np.array_equal(faces, ref_faces[:, ::-1])
