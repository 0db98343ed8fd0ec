"""Post-processing: millimetre morphology against scipy, and implant extraction for both tasks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from skullrecon.postprocess import (
    PostprocessConfig,
    closing,
    dilate,
    erode,
    extract_implant,
    largest_component,
    locate_implant,
    opening,
)

from conftest import shell


def ball(radius_mm: float, spacing) -> np.ndarray:
    """Structuring element: every voxel offset whose length in mm is <= radius (an ellipsoid in voxels)."""
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    offsets = np.indices([2 * h + 1 for h in half]).astype(float)
    d2 = sum(((o - h) * s) ** 2 for o, h, s in zip(offsets, half, spacing))
    return d2 <= radius_mm**2


def blobs(shape=(40, 36, 30), seed=0, pad=0) -> np.ndarray:
    """Random smooth blobs (they touch the array border unless padded)."""
    rng = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(rng.random(shape), 2) > 0.52
    return np.pad(mask, pad)


def _dsc(a, b) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


SPACINGS = [(1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (1.0, 1.0, 2.0), (0.45, 0.45, 0.63)]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("radius", [1.0, 1.5, 2.0, 3.0])
def test_morphology_matches_scipy_with_a_ball(spacing, radius):
    se = ball(radius, spacing)
    if len(set(spacing)) > 1:  # anisotropic voxels: the ball is an ellipsoid in voxels
        assert len(set(se.shape)) > 1
    mask = blobs(seed=int(radius * 10))
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(dilate(mask, radius, spacing), ndi.binary_dilation(mask, se))
    np.testing.assert_array_equal(erode(mask, radius, spacing), ndi.binary_erosion(mask, se))
    np.testing.assert_array_equal(opening(mask, radius, spacing), ndi.binary_opening(mask, se))
    # away from the border scipy's closing contains the mask, and ours is the same set
    inner = blobs(seed=1, pad=se.shape[0])
    np.testing.assert_array_equal(closing(inner, radius, spacing), ndi.binary_closing(inner, se))
    # at the border ours keeps the mask (scipy erodes it there)
    np.testing.assert_array_equal(closing(mask, radius, spacing), ndi.binary_closing(mask, se) | mask)


def test_ball_shapes_used_above():
    """The reference structuring elements themselves: a cross at 1 mm, an ellipsoid for 1x1x2 mm."""
    np.testing.assert_array_equal(ball(1.0, (1, 1, 1)), ndi.generate_binary_structure(3, 1))
    assert ball(2.0, (1.0, 1.0, 2.0)).shape == (5, 5, 3)
    assert ball(2.0, (1.0, 1.0, 2.0)).sum() == 13 + 2  # a disc of 13 in the middle slice, +-2 mm along axis 2


def test_zero_radius_and_empty_masks_are_identity():
    mask = blobs()
    for op in (dilate, erode, closing, opening):
        np.testing.assert_array_equal(op(mask, 0.0, (1, 1, 1)), mask)
        assert not op(np.zeros((8, 8, 8), bool), 2.0, (1, 1, 1)).any()
    assert not largest_component(np.zeros((8, 8, 8), bool)).any()


@pytest.fixture(scope="module")
def skull_case():
    """An ellipsoidal shell, 4 mm thick at 1 mm voxels, with the top cap as the implant."""
    skull = shell((64, 64, 64), (28, 26, 24), 4)
    implant = skull & (np.indices(skull.shape)[2] >= 44)
    return skull, implant, skull & ~implant


def test_reconstruction_equal_to_the_complete_skull(skull_case):
    skull, implant, defective = skull_case
    spacing = (1.0, 1.0, 1.0)
    # without morphology the implant is exactly complete minus defective
    raw = extract_implant(skull, defective, spacing, "reconstruct", PostprocessConfig(closing_mm=0, opening_mm=0))
    np.testing.assert_array_equal(raw.astype(bool), implant)

    # the 2 mm closing only adds: it keeps every implant voxel and fills notches of the voxelised
    # surface; the few voxels it adds touch the implant
    closed = extract_implant(skull, defective, spacing, "reconstruct", PostprocessConfig(opening_mm=0)).astype(bool)
    extra = closed & ~implant
    assert not (implant & ~closed).any()
    assert extra.sum() <= 0.01 * implant.sum()
    assert ndi.distance_transform_edt(~implant)[extra].max() <= 1.0

    # the default 1 mm opening also removes single voxels sticking out of the implant's surface
    out = extract_implant(skull, defective, spacing, "reconstruct").astype(bool)
    lost = implant & ~out
    assert ndi.distance_transform_edt(implant)[lost].max() <= 1.0  # only surface voxels
    assert _dsc(out, implant) >= 0.97
    # and is exactly the scipy pipeline: closing, minus the defective skull, opening, largest component
    se2, se1 = ball(2.0, spacing), ball(1.0, spacing)
    reference = ndi.binary_opening(ndi.binary_closing(skull, se2) & ~defective, se1)
    labels, n = ndi.label(reference, np.ones((3, 3, 3)))
    reference = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    np.testing.assert_array_equal(out, reference)


def test_thicker_reconstruction_leaves_no_slivers(skull_case):
    """A reconstruction one voxel thicker than the skull everywhere: the difference from the
    defective skull is the implant plus a one-voxel sliver over all the remaining bone."""
    skull, implant, defective = skull_case
    spacing = (1.0, 1.0, 1.0)
    thick = ndi.binary_dilation(skull, ndi.generate_binary_structure(3, 1))
    far = ndi.distance_transform_edt(~implant) > 2.0  # more than 2 mm from the true implant
    assert (thick & ~defective & far).sum() > implant.sum()  # the slivers to be removed

    no_opening = extract_implant(thick, defective, spacing, "reconstruct", PostprocessConfig(opening_mm=0))
    assert (no_opening.astype(bool) & far).sum() > implant.sum()  # kept when the opening is off
    out = extract_implant(thick, defective, spacing, "reconstruct").astype(bool)
    assert not (out & far).any()
    assert (out & implant).sum() >= 0.97 * implant.sum()
    labels, n = ndi.label(out, np.ones((3, 3, 3)))
    assert n == 1


def test_largest_component_keeps_the_implant(skull_case):
    skull, implant, defective = skull_case
    prediction = implant.copy()
    prediction[5:9, 5:9, 5:9] = True  # a stray blob away from the skull
    out = extract_implant(prediction, defective, (1.0, 1.0, 1.0), "implant", PostprocessConfig(opening_mm=0))
    np.testing.assert_array_equal(out.astype(bool), implant)
    kept = extract_implant(prediction, defective, (1.0, 1.0, 1.0), "implant",
                           PostprocessConfig(opening_mm=0, largest_component=False))
    assert kept[5:9, 5:9, 5:9].all()


def test_implant_task_subtracts_the_defective_skull(skull_case):
    skull, implant, defective = skull_case
    spacing = (1.0, 1.0, 1.0)
    prediction = implant | defective  # a network that also paints the existing bone
    out = extract_implant(prediction, defective, spacing, "implant", PostprocessConfig(opening_mm=0))
    np.testing.assert_array_equal(out.astype(bool), implant)
    assert out.dtype == np.uint8
    # no closing in the implant task: a hole in the predicted implant stays a hole
    holed = implant.copy()
    holed[30:33, 30:33, :] = False
    out = extract_implant(holed, defective, spacing, "implant", PostprocessConfig(opening_mm=0))
    assert out.astype(bool)[implant].sum() == holed.sum()


def test_empty_prediction_gives_an_empty_implant(skull_case):
    skull, implant, defective = skull_case
    slotted = skull.copy()
    slotted[30:32, :, 40:] = False  # a 2 mm slot, which a 2 mm closing of the bone alone would fill
    empty = np.zeros_like(skull)
    for task in ("reconstruct", "implant"):
        for cfg in (PostprocessConfig(), PostprocessConfig(opening_mm=0)):
            out = extract_implant(empty, slotted, (1.0, 1.0, 1.0), task, cfg)
            assert out.shape == skull.shape and out.dtype == np.uint8 and not out.any()


def test_bad_arguments():
    a = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        extract_implant(a, a[:-1], (1, 1, 1), "implant")
    with pytest.raises(ValueError, match="task"):
        extract_implant(a, a, (1, 1, 1), "segment")
    with pytest.raises(ValueError, match="unknown post-processing"):
        PostprocessConfig.from_dict({"closing": 2})


def test_locate_implant_with_two_pieces_one_coarse_voxel_apart():
    """The demo case that stopped ``extract_implants`` under cc3d 4.1.1: the thick part of the
    difference is two single coarse voxels in a row, a (1, 1, 3) boolean array for cc3d."""
    prediction = np.zeros((20, 20, 20), np.uint8)
    for centre in ((10, 10, 6), (10, 10, 10)):  # coarse voxels (5, 5, 3) and (5, 5, 5)
        c = np.array(centre)
        for d in [(0, 0, 0), (2, 0, 0), (-2, 0, 0), (0, 2, 0), (0, -2, 0), (0, 0, 2), (0, 0, -2)]:
            prediction[tuple(c + d)] = 1
    box = locate_implant(prediction, np.zeros_like(prediction), share=0.5)
    assert box == (slice(10, 13), slice(10, 13), slice(6, 13))  # both pieces, one coarse voxel of margin
