"""Bit-packed ball morphology equals the distance-transform morphology voxel for voxel.

The post-processing's dilation, erosion and closing run bit-packed for small balls
(:mod:`skullrecon.morphology`); the distance-transform versions (``edt_*``) are the reference. Compared
on random shapes that touch the array's sides, in both memory orders, at isotropic and anisotropic
spacings (including float32 spacings where a ball's radius falls exactly on a voxel), and on the
shared real skulls at the paper's 2 mm closing.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import real_file
from skullrecon import morphology
from skullrecon.io import read_volume
from skullrecon.postprocess import closing, dilate, edt_closing, edt_dilate, edt_erode, erode

F32 = float(np.float32(0.4))  # how a 0.4 mm spacing stored as float32 reads back: 5 voxels are exactly 2 mm


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_equal_the_distance_transform(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 36, 3))
    mask = ndi.gaussian_filter(rng.random(shape), 1.5) > rng.uniform(0.45, 0.55)
    if seed % 2:
        mask = np.asfortranarray(mask)
    spacing = [float(rng.choice([F32, 0.45, 0.5, 0.63, 1.0, 2.0, 0.3])) for _ in range(3)]
    for radius in (0.8, 1.0, 1.6, 2.0, 3.0):
        assert morphology.fits(radius, spacing)
        for fast, reference in ((dilate, edt_dilate), (erode, edt_erode), (closing, edt_closing)):
            got = fast(mask, radius, spacing)
            assert got.shape == mask.shape and got.dtype == bool
            np.testing.assert_array_equal(got, reference(mask, radius, spacing),
                                          err_msg=f"{fast.__name__} r={radius} spacing={spacing}")


def test_the_ball_is_the_distance_transforms_ball_at_exact_radii():
    """At 0.4 mm (float32) a 2 mm ball reaches 5 voxels along each axis, as edt's float32 distances say."""
    point = np.zeros((15, 15, 15), bool)
    point[7, 7, 7] = True
    ball = dilate(point, 2.0, [F32] * 3)
    assert ball[7, 7, 2] and ball[7, 7, 12] and not ball[7, 7, 1]
    np.testing.assert_array_equal(ball, edt_dilate(point, 2.0, [F32] * 3))
    assert len(morphology.ball_segments(2.0, [F32] * 3)) == int(ball.any(axis=0).sum())


def test_empty_full_and_single_voxel_volumes():
    spacing = (0.5, 0.5, 0.5)
    for mask in (np.zeros((9, 9, 9), bool), np.ones((9, 9, 9), bool), np.ones((1, 1, 1), bool)):
        for fast, reference in ((dilate, edt_dilate), (erode, edt_erode), (closing, edt_closing)):
            np.testing.assert_array_equal(fast(mask, 1.0, spacing), reference(mask, 1.0, spacing))


def test_large_balls_fall_back_to_the_distance_transform():
    assert not morphology.fits(40.0, (0.4, 0.4, 0.4))  # 100 voxels: past one 64-bit word
    mask = np.zeros((12, 12, 12), bool)
    mask[6, 6, 6] = True
    assert dilate(mask, 40.0, (0.4,) * 3).all()  # 16 mm from the centre at most: all inside the ball


@pytest.mark.parametrize("name, radius", [
    ("real/autoimplantpipe_skullbreak_parietotemporal_001.nii.gz", 2.0),  # 512^3 at 0.4 mm
    ("real/aimaster_training_set_defective_skull_000.nrrd", 3.0),        # SkullFix, anisotropic
])
def test_closing_of_a_real_skull_equals_the_distance_transform(name, radius):
    vol = read_volume(real_file(name))
    skull = vol.array.astype(bool)
    np.testing.assert_array_equal(closing(skull, radius, vol.spacing), edt_closing(skull, radius, vol.spacing))


# connected-components-3d 4.1.1 raises "maximum length exception" on these boolean arrays at
# connectivity 26 (docs/upstream/cc3d-bool-26.md); skullrecon labels through one helper that is
# right whichever cc3d is installed.
@pytest.mark.parametrize("shape", [(1, 3, 1), (1, 1, 3), (3, 1, 1)])
def test_two_voxels_one_apart_are_two_components(shape):
    mask = np.zeros(shape, bool)
    mask.flat[0] = mask.flat[2] = True
    assert morphology.label_components(mask, connectivity=26).ravel().tolist() == [1, 0, 2]
    assert morphology.largest_component(mask, connectivity=26).sum() == 1


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_labels_equal_scipy_on_thin_random_masks(connectivity):
    rng = np.random.default_rng(connectivity)
    structure = ndi.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    for _ in range(300):
        mask = rng.random(tuple(int(n) for n in rng.integers(1, 6, 3))) < 0.5
        labels = morphology.label_components(mask, connectivity)
        reference, n = ndi.label(mask, structure)
        assert labels.max() == n
        # the same partition: each reference component maps to exactly one label
        pairs = {(int(a), int(b)) for a, b in zip(reference.ravel(), labels.ravel())}
        assert len(pairs) == len(np.unique(reference))
