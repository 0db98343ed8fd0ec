"""Tests of the evaluation metrics: fast vs whole-volume reference, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter, generate_binary_structure

from skullrecon import metrics as M
from skullrecon.io import VolumeError, write_volume

SHAPE = (64, 64, 64)
SPACINGS = [(1.0, 1.0, 1.0), (0.4, 0.4, 0.4), (0.8, 1.3, 2.1)]


def smooth_blobs(seed: int, shape=SHAPE, sigma: float = 4.0, fraction: float = 0.3) -> np.ndarray:
    """Smooth random shapes filling ``fraction`` of the volume: thresholded Gaussian-filtered
    noise (they touch the volume border)."""
    field = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return (field > np.quantile(field, 1 - fraction)).astype(np.uint8)


def perturbed(seed: int, amount: float, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A ground truth and a prediction that overlaps it mostly (same field plus some noise)."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), 4.0)
    noise = gaussian_filter(rng.standard_normal(shape), 2.0)
    gt = (field > 0.03).astype(np.uint8)
    pred = (field + amount * noise > 0.03).astype(np.uint8)
    return pred, gt


def away_from_border(a: np.ndarray, width: int = 3) -> np.ndarray:
    out = np.zeros_like(a)
    inner = (slice(width, -width),) * 3
    out[inner] = a[inner]
    return out


def assert_same_metrics(pred, gt, defective, spacing, margin_mm=10.0):
    fast = M.evaluate_case(pred, gt, defective, spacing, margin_mm)
    ref = M.reference_evaluate_case(pred, gt, defective, spacing, margin_mm)
    assert fast["empty_prediction"] == ref["empty_prediction"]
    for key in ("dsc", "bdsc", "hd95"):
        assert fast[key] == pytest.approx(ref[key], abs=1e-12, nan_ok=True), key
    # the single-metric entry points are the same code paths
    assert M.dice(pred, gt) == pytest.approx(M.reference_dice(pred, gt), abs=1e-6)
    return fast, ref


# ------------------------------------------------------------------------------------------
# fast == reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("touch_border", [True, False])
@pytest.mark.parametrize("margin_mm", [3.0, 10.0])
def test_fast_matches_reference_on_random_blobs(spacing, touch_border, margin_mm):
    pred, gt = perturbed(seed=7, amount=0.2)
    if not touch_border:
        pred, gt = away_from_border(pred), away_from_border(gt)
    else:
        assert gt[0].any() and pred[:, :, -1].any()
    defective = smooth_blobs(seed=11, fraction=0.1) & ~gt & ~pred
    fast, _ = assert_same_metrics(pred, gt, defective, spacing, margin_mm)
    # a meaningful case: partial overlap and clearly nonzero surface distances
    assert 0.5 < fast["dsc"] < 0.8
    assert fast["hd95"] > 2 * min(spacing)
    if margin_mm == 3.0:
        assert fast["bdsc"] != fast["dsc"]  # the band really cuts the implants


@pytest.mark.parametrize("spacing", SPACINGS)
def test_fast_matches_reference_on_small_far_apart_shapes(spacing):
    """Small, mostly disjoint objects: large distances, boxes far from the whole volume."""
    pred = away_from_border(smooth_blobs(seed=1, fraction=0.01), 1)
    gt = smooth_blobs(seed=2, fraction=0.01)
    assert gt[[0, -1]].any() or gt[:, [0, -1]].any() or gt[:, :, [0, -1]].any()  # touches the border
    defective = smooth_blobs(seed=3, fraction=0.3) & ~pred & ~gt
    for margin in (2.0, 10.0):
        fast, _ = assert_same_metrics(pred, gt, defective, spacing, margin)
        assert fast["hd95"] > 10 * max(spacing)


def test_fast_matches_reference_with_non_binary_values_and_bool():
    pred, gt = perturbed(seed=5, amount=0.05)
    defective = smooth_blobs(seed=6)
    assert_same_metrics(pred.astype(bool), (gt * 3).astype(np.uint16), defective, (1.0, 0.5, 2.0))


def test_surface_matches_scipy_erosion_at_volume_border():
    """The fast surface (zero padded crop) equals MedPy's object ^ erosion, border included."""
    cross = generate_binary_structure(3, 1)
    for seed in range(3):
        a = smooth_blobs(seed=seed, shape=(24, 20, 28), sigma=2.0).astype(bool)
        assert a[0].any() and a[:, :, -1].any()  # really touches the border
        box = M._bbox(a)
        expected = (a ^ binary_erosion(a, structure=cross, iterations=1))[M._slices(box)]
        np.testing.assert_array_equal(M._surface(M._padded_crop(a, box)), expected)


def test_full_volume_object_has_its_outer_layer_as_surface():
    # outside the volume counts as background: a filled 5^3 volume has 5^3 - 3^3 surface voxels
    a = np.ones((5, 5, 5), bool)
    surface = M._surface(M._padded_crop(a, M._bbox(a)))
    assert surface.sum() == 125 - 27
    assert not surface[2, 2, 2]


# ------------------------------------------------------------------------------------------
# hand-computed values
# ------------------------------------------------------------------------------------------


def test_offset_cubes():
    """3^3 cube A and the same cube B shifted by one voxel along axis 0, spacing (2, 1, 1) mm.

    DSC: overlap 2 * 9 = 18 voxels, 2 * 18 / (27 + 27) = 2/3.
    Surfaces: all voxels but the centre (26 each). A -> B: A's layer x=0 (9 voxels) lies outside
    B; nearest B surface is B's layer x=1, 2 mm away. A's layer x=1 (8 surface voxels) and x=2 are
    in B's surface (distance 0), except A(2,1,1), which is B's centre: nearest B surface is a y/z
    neighbour at 1 mm. So A -> B = nine 2's, one 1, sixteen 0's; B -> A is the mirror image.
    Pooled (52 values): 32 zeros, 2 ones, 18 twos; percentile position 0.95 * 51 = 48.45 lies
    among the twos -> HD95 = 2.0 mm.
    """
    a = np.zeros((8, 6, 6), np.uint8)
    b = np.zeros_like(a)
    a[2:5, 1:4, 1:4] = 1
    b[3:6, 1:4, 1:4] = 1
    spacing = (2.0, 1.0, 1.0)
    assert M.dice(a, b) == pytest.approx(2 / 3)
    assert M.hd95(a, b, spacing) == pytest.approx(2.0)
    assert M.reference_hd95(a, b, spacing) == pytest.approx(2.0)


def test_hd95_pools_both_directions_like_medpy():
    """One-voxel-thick plates (every voxel is surface), spacing (2, 0.5, 1) mm.

    A: plane x=0, y in [0, 10), z in [0, 10). B: plane x=1, y in [0, 12), z in [0, 10).
    A -> B: each of the 100 voxels faces a B voxel 2 mm away -> 100 x 2.
    B -> A: y < 10: 100 x 2; y = 10: 10 x sqrt(2^2 + 0.5^2) = sqrt(4.25); y = 11: 10 x
    sqrt(2^2 + 1^2) = sqrt(5).
    Pooled (220): 200 x 2, 10 x sqrt(4.25), 10 x sqrt(5); position 0.95 * 219 = 208.05 lies
    between indices 208 and 209, both sqrt(4.25) -> HD95 = sqrt(4.25) = 2.0616 mm.
    MONAI's max of directed 95th percentiles would give sqrt(5) (B -> A: position 113.05 of
    120 values lands in the sqrt(5) group), so this case tells the two conventions apart.
    """
    a = np.zeros((4, 14, 12), np.uint8)
    b = np.zeros_like(a)
    a[1, 0:10, 1:11] = 1
    b[2, 0:12, 1:11] = 1
    spacing = (2.0, 0.5, 1.0)
    assert M.hd95(a, b, spacing) == pytest.approx(math.sqrt(4.25))
    assert M.hd95(b, a, spacing) == pytest.approx(math.sqrt(4.25))  # symmetric
    assert M.reference_hd95(a, b, spacing) == pytest.approx(math.sqrt(4.25))
    assert M.hd95(a, b, spacing) != pytest.approx(math.sqrt(5.0))


def test_identical_volumes():
    pred, _ = perturbed(seed=3, amount=0.0)
    defective = smooth_blobs(seed=4)
    result = M.evaluate_case(pred, pred.copy(), defective, (0.5, 0.5, 1.0))
    assert result["dsc"] == 1.0
    assert result["hd95"] == 0.0
    assert result["bdsc"] == 1.0
    assert result["empty_prediction"] is False


def test_boundary_dice_band_by_hand():
    """Defective skull = plane x=0; gt = slab x in [0, 30), pred = slab x in [0, 20).

    Spacing 0.5 mm along x: voxel x lies 0.5 x mm from the skull, so the 10 mm band is
    x in [0, 20] (x = 20 is exactly 10 mm away: in; x = 0 is the skull itself: in).
    gt in band: 21 layers; pred in band: 20 layers, all shared: bDSC = 2 * 20 / 41 = 40/41.
    (Leaving out the skull layer would give 38/39, leaving out the 10 mm layer 1.0.)
    Plain DSC = 2 * 20 / 50 = 0.8.
    """
    shape = (40, 6, 7)
    defective = np.zeros(shape, np.uint8)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    defective[0] = 1
    gt[0:30] = 1
    pred[0:20] = 1
    spacing = (0.5, 1.0, 1.0)
    assert M.boundary_dice(pred, gt, defective, spacing) == pytest.approx(40 / 41)
    assert M.reference_boundary_dice(pred, gt, defective, spacing) == pytest.approx(40 / 41)
    assert M.dice(pred, gt) == pytest.approx(0.8)
    # with a 5 mm band (x <= 10) pred and gt agree inside it
    assert M.boundary_dice(pred, gt, defective, spacing, margin_mm=5.0) == 1.0


def test_boundary_dice_exact_margin_with_anisotropic_spacing():
    """Skull = one voxel; voxels at (3, 4, 0) offsets with spacing (1.2, 0.9, 1) are sqrt(3.6^2 +
    3.6^2) = 5.09 mm away. With margin 5 mm the voxel 4 x 1.2 = 4.8 mm along x is in, the voxel
    5 x 1.2 = 6.0 mm is out; along y 5 x 0.9 = 4.5 mm is in, 6 x 0.9 = 5.4 mm out."""
    shape = (12, 14, 3)
    defective = np.zeros(shape, np.uint8)
    defective[0, 0, 0] = 1
    gt = np.zeros(shape, np.uint8)
    gt[4, 0, 0] = gt[5, 0, 0] = gt[0, 5, 0] = gt[0, 6, 0] = gt[3, 4, 0] = 1
    pred = np.zeros(shape, np.uint8)
    pred[4, 0, 0] = 1  # in band
    pred[5, 0, 0] = 1  # out of band, ignored
    spacing = (1.2, 0.9, 1.0)
    # gt in band: (4,0,0), (0,5,0) -> 2 voxels; pred in band: (4,0,0) -> 1; shared 1: 2/3
    assert M.boundary_dice(pred, gt, defective, spacing, 5.0) == pytest.approx(2 / 3)
    assert M.reference_boundary_dice(pred, gt, defective, spacing, 5.0) == pytest.approx(2 / 3)


def test_boundary_dice_band_missing_both_implants_is_zero():
    """Defective skull more than 10 mm from both implants: both restricted sets are empty.

    Convention (MedPy dc of the challenge era): 0/0 -> 0.0, i.e. a failure.
    """
    shape = (60, 10, 10)
    defective = np.zeros(shape, np.uint8)
    defective[0:3] = 1
    gt = np.zeros(shape, np.uint8)
    gt[30:40, 2:8, 2:8] = 1  # nearest skull layer x=2: at least 28 voxels = 28 mm away at 1 mm
    pred = gt.copy()
    assert M.dice(pred, gt) == 1.0
    assert M.boundary_dice(pred, gt, defective, (1.0, 1.0, 1.0)) == 0.0
    assert M.reference_boundary_dice(pred, gt, defective, (1.0, 1.0, 1.0)) == 0.0
    # no defective skull at all: the band is empty too
    empty = np.zeros(shape, np.uint8)
    assert M.boundary_dice(pred, gt, empty, (1.0, 1.0, 1.0)) == 0.0
    assert M.reference_boundary_dice(pred, gt, empty, (1.0, 1.0, 1.0)) == 0.0
    # at 0.3 mm along x the nearest implant layer is 8.4 mm away: inside the band (pred == gt)
    assert M.boundary_dice(pred, gt, defective, (0.3, 1.0, 1.0)) == 1.0


def test_dice_empty_conventions():
    empty = np.zeros((5, 5, 5), np.uint8)
    one = empty.copy()
    one[2, 2, 2] = 1
    assert M.dice(empty, empty) == 1.0
    assert M.reference_dice(empty, empty) == 1.0
    assert M.dice(one, empty) == 0.0
    assert M.dice(empty, one) == 0.0


def test_empty_prediction_is_a_result():
    _, gt = perturbed(seed=2, amount=0.0)
    defective = smooth_blobs(seed=9)
    empty = np.zeros_like(gt)
    result = M.evaluate_case(empty, gt, defective, (1.0, 1.0, 1.0))
    assert result["empty_prediction"] is True
    assert result["dsc"] == 0.0 and result["bdsc"] == 0.0
    assert math.isnan(result["hd95"])
    assert math.isnan(M.hd95(empty, gt, (1.0, 1.0, 1.0)))
    assert math.isnan(M.hd95(gt, empty, (1.0, 1.0, 1.0)))  # empty ground truth
    ref = M.reference_evaluate_case(empty, gt, defective, (1.0, 1.0, 1.0))
    assert ref["empty_prediction"] is True and math.isnan(ref["hd95"])
    # empty ground truth but a prediction: not an empty prediction, hd95 NaN
    result = M.evaluate_case(gt, empty, defective, (1.0, 1.0, 1.0))
    assert result["empty_prediction"] is False
    assert result["dsc"] == 0.0 and result["bdsc"] == 0.0 and math.isnan(result["hd95"])


# ------------------------------------------------------------------------------------------
# argument checks and files
# ------------------------------------------------------------------------------------------


def test_shape_mismatch_names_the_shapes():
    a = np.zeros((4, 5, 6), np.uint8)
    b = np.zeros((4, 5, 7), np.uint8)
    with pytest.raises(ValueError, match=r"\(4, 5, 6\).*\(4, 5, 7\)"):
        M.dice(a, b)
    with pytest.raises(ValueError, match=r"\(4, 5, 7\)"):
        M.evaluate_case(a, a, b, (1, 1, 1))
    with pytest.raises(ValueError, match="3-D"):
        M.hd95(a[0], a[0], (1, 1, 1))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)])
def test_bad_spacing(spacing):
    a = np.ones((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(a, a, spacing)


def test_bad_margin():
    a = np.ones((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="margin_mm"):
        M.boundary_dice(a, a, a, (1, 1, 1), margin_mm=-1.0)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_metrics_for_files_round_trip(tmp_path, suffix):
    pred, gt = perturbed(seed=12, amount=0.05, shape=(40, 36, 32))
    defective = smooth_blobs(seed=13, shape=(40, 36, 32)) & ~gt
    spacing = (0.5, 0.7, 1.25)
    paths = [tmp_path / f"{name}{suffix}" for name in ("pred", "gt", "defective")]
    write_volume(paths[0], pred, spacing=spacing)
    write_volume(paths[1], gt, spacing=spacing)
    write_volume(paths[2], defective, spacing=spacing)
    result = M.metrics_for_files(*paths)
    expected = M.reference_evaluate_case(pred, gt, defective, spacing)
    assert set(result) == {"dsc", "bdsc", "hd95", "empty_prediction"}
    for key in ("dsc", "bdsc", "hd95"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6)


@pytest.mark.parametrize("change", ["spacing", "origin", "direction"])
def test_metrics_for_files_refuses_a_prediction_on_another_grid(tmp_path, change):
    """Same shape, same voxels, another grid: scoring it voxel by voxel would give DSC 1.0."""
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[5:12, 6:14, 4:9] = 1
    defective = np.zeros_like(gt)
    defective[:, :, 2:4] = 1
    write_volume(tmp_path / "gt.nrrd", gt, spacing=(0.5, 0.5, 0.5))
    write_volume(tmp_path / "defective.nrrd", defective, spacing=(0.5, 0.5, 0.5))
    kwargs = {"spacing": (0.5, 0.5, 0.5)}
    if change == "spacing":
        kwargs["spacing"] = (2.0, 2.0, 2.0)
    elif change == "origin":
        kwargs["origin"] = (0.0, 0.0, 30.0)
    write_volume(tmp_path / "pred.nrrd", gt, **kwargs)
    if change == "direction":  # the same voxels, the x axis pointing the other way
        import nrrd

        data, header = nrrd.read(str(tmp_path / "pred.nrrd"))
        header["space directions"] = np.diag([-0.5, 0.5, 0.5])
        nrrd.write(str(tmp_path / "pred.nrrd"), data, header)
    with pytest.raises(VolumeError, match=rf"grid mismatch: .*pred\.nrrd.*gt\.nrrd.*{change}"):
        M.metrics_for_files(tmp_path / "pred.nrrd", tmp_path / "gt.nrrd", tmp_path / "defective.nrrd")
    write_volume(tmp_path / "pred.nrrd", gt, spacing=(0.5, 0.5, 0.5))  # the same grid: scored
    assert M.metrics_for_files(tmp_path / "pred.nrrd", tmp_path / "gt.nrrd", tmp_path / "defective.nrrd")["dsc"] == 1.0


def test_metrics_for_files_shape_mismatch(tmp_path):
    a = np.zeros((10, 10, 10), np.uint8)
    a[3:6, 3:6, 3:6] = 1
    b = np.zeros((10, 10, 12), np.uint8)
    b[3:6, 3:6, 3:6] = 1
    write_volume(tmp_path / "pred.nrrd", b)
    write_volume(tmp_path / "gt.nrrd", a)
    write_volume(tmp_path / "defective.nrrd", a)
    with pytest.raises(VolumeError, match=r"pred\.nrrd.*gt\.nrrd"):
        M.metrics_for_files(tmp_path / "pred.nrrd", tmp_path / "gt.nrrd", tmp_path / "defective.nrrd")


def _challenge_bdsc(pred, gt, defective, spacing, margin=10.0):
    """Independent whole-volume reference written from the challenge's convention: a voxel is out
    of the band when scipy's float64 distance of the defective skull's background is > margin."""
    from scipy.ndimage import distance_transform_edt

    out = distance_transform_edt(defective == 0, sampling=spacing) > margin
    p, g = (pred != 0) & ~out, (gt != 0) & ~out
    total = int(p.sum() + g.sum())
    return 0.0 if total == 0 else 2.0 * int((p & g).sum()) / total


def _tie_cases():
    """0.4 mm isotropic volumes whose implants cover voxels exactly 25 voxels (10 mm) from the skull.

    scipy's float64 arithmetic puts some of them at 10.0 mm (in the band) and some at
    10.000000000000002 mm, e.g. offset (0, 7, 24): 2.8000000000000003^2 + 9.600000000000001^2 (out).
    """
    idx = np.indices((61, 61, 61))
    point = np.zeros((61, 61, 61), np.uint8)
    point[30, 30, 30] = 1  # a one-voxel skull: the 10 mm sphere is all ties
    r = np.sqrt(((idx - 30) ** 2).sum(0))
    gt1 = ((r >= 23) & (r <= 27) & (idx[2] >= 30)).astype(np.uint8)
    pred1 = ((r >= 24) & (r <= 28) & (idx[2] >= 28)).astype(np.uint8)
    yield "point", point, pred1, gt1
    # a plate with a square hole (the defect), a slab implant filling it and a shifted prediction;
    # the voxels 25 layers above the plate and beside the rim hold both kinds of ties
    plate = np.zeros((70, 70, 40), np.uint8)
    plate[:, :, 5:7] = 1
    plate[20:50, 20:50, 5:7] = 0
    gt2 = np.zeros_like(plate)
    gt2[15:55, 15:55, 5:35] = 1
    gt2[plate == 1] = 0
    pred2 = np.zeros_like(plate)
    pred2[18:58, 13:53, 5:33] = 1
    pred2[plate == 1] = 0
    yield "plate", plate, pred2, gt2


@pytest.mark.parametrize("name", ["point", "plate"])
def test_boundary_dice_ties_at_10_mm_match_the_challenge_exactly(name):
    from scipy.ndimage import distance_transform_edt

    spacing = (0.4, 0.4, 0.4)
    defective, pred, gt = next((d, p, g) for n, d, p, g in _tie_cases() if n == name)
    dist = distance_transform_edt(defective == 0, sampling=spacing)
    covered = (pred | gt) != 0
    ties_out = covered & (dist > 10) & (dist < 10 + 1e-9)
    ties_in = covered & (dist == 10)
    assert ties_out.any() and ties_in.any()  # the case really has ties on both sides of the rule
    expected = _challenge_bdsc(pred, gt, defective, spacing)
    assert M.boundary_dice(pred, gt, defective, spacing) == expected
    assert M.reference_boundary_dice(pred, gt, defective, spacing) == expected
    assert M.evaluate_case(pred, gt, defective, spacing)["bdsc"] == expected
    # a tolerant band (<= 10 + 1e-4 mm, the old rule) scores the case differently
    tolerant = (dist <= 10 + 1e-4)
    p, g = (pred != 0) & tolerant, (gt != 0) & tolerant
    assert 2.0 * (p & g).sum() / (p.sum() + g.sum()) != expected


# ------------------------------------------------------------------------------------------
# the exact 10 mm decision without scipy's whole transform
# ------------------------------------------------------------------------------------------

# 0.4 mm (the paper's grid), SkullFix-like header spacings (FOV / 512), the same read back as
# float32 header values, and anisotropic CT grids
TIE_SPACINGS = [
    (0.4, 0.4, 0.4),
    (0.390625, 0.390625, 0.390625),
    (0.44921875, 0.44921875, 0.625),
    tuple(float(np.float32(s)) for s in (0.4, 0.4, 0.4)),
    tuple(float(np.float32(s)) for s in (0.4296875, 0.4296875, 1.25)),
    (0.8, 1.3, 2.1),
]


@pytest.mark.parametrize("spacing", TIE_SPACINGS)
def test_scipy_distance_is_bit_identical_to_scipy(spacing):
    from scipy.ndimage import distance_transform_edt

    skull = smooth_blobs(seed=21, shape=(40, 36, 30), fraction=0.05).astype(bool)
    dist, ft = distance_transform_edt(~skull, sampling=spacing, return_indices=True)
    offsets = np.moveaxis(ft - np.indices(skull.shape), 0, -1)
    mine = M._scipy_distance(offsets, np.asarray(spacing, np.float64))
    assert np.array_equal(mine, dist)  # bit for bit, not approximately


@pytest.mark.parametrize("spacing", TIE_SPACINGS)
def test_shell_offsets_are_all_offsets_in_the_shell(spacing):
    s = np.asarray(spacing, np.float64)
    lo, hi = 9.99, 10.01
    k, x = M._shell_offsets(s, lo, hi)
    r = [int(hi // v) + 1 for v in s]
    grid = np.stack(np.meshgrid(*(np.arange(-n, n + 1) for n in r), indexing="ij"), -1).reshape(-1, 3)
    d = M._scipy_distance(grid, s)
    expected = grid[(d >= lo) & (d <= hi)]
    assert len(k) == len(expected) > 0
    assert {tuple(v) for v in k} == {tuple(v) for v in expected}
    assert np.all(np.diff(x) >= 0)


@pytest.mark.parametrize("spacing", TIE_SPACINGS)
def test_edt_error_is_far_below_its_bound(spacing):
    """The fast path trusts edt's float32 distance wherever it is farther than the bound from the
    margin; measured errors must be orders of magnitude below it."""
    import edt
    from scipy.ndimage import distance_transform_edt

    skull = smooth_blobs(seed=22, shape=(80, 72, 64), fraction=0.03).astype(bool)
    exact = distance_transform_edt(~skull, sampling=spacing)
    fast = edt.edt(np.ascontiguousarray(~skull), anisotropy=spacing, black_border=False)
    near = exact <= 25.0
    err = np.max(np.abs(fast[near] - exact[near]))
    extent = max(n * v for n, v in zip(skull.shape, spacing))
    assert err < M._edt_error_bound(10.0, extent) / 100


def _margin_ties(spacing, seed, margin):
    """Skull = a few scattered voxels; implants = every voxel whose scipy distance is within 1e-6 mm
    of the margin (the ties) plus a random part of the rest, so the result hinges on the tie decisions."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(round(32 / v)) + 6 for v in spacing)
    skull = np.zeros(shape, bool)
    for _ in range(4):
        skull[tuple(rng.integers(n // 3, 2 * n // 3) for n in shape)] = True
    skull[tuple(n // 2 for n in shape)] = True
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~skull, sampling=spacing)
    ties = np.abs(dist - margin) <= 1e-6
    gt = ties | ((rng.random(shape) < 0.3) & (dist < 14))
    pred = (ties & (rng.random(shape) < 0.7)) | ((rng.random(shape) < 0.3) & (dist < 14))
    return pred.astype(np.uint8), gt.astype(np.uint8), skull.astype(np.uint8), dist


@pytest.mark.parametrize("spacing", TIE_SPACINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_dice_equals_scipy_at_margin_ties(spacing, seed):
    """The margin is set to the scipy distance of a voxel about 10 mm away along the last axis, so
    that at every spacing some voxels lie exactly on it (and others, with the same real distance,
    a rounding off it). Values must equal scipy's decision exactly."""
    s = np.asarray(spacing, np.float64)
    margin = float(M._scipy_distance(np.array([0, 0, int(round(10 / s[2]))]), s))
    pred, gt, skull, dist = _margin_ties(spacing, seed, margin)
    covered = (pred | gt) != 0
    assert (covered & (dist == margin)).any()  # exact ties in the implants
    expected = _challenge_bdsc(pred, gt, skull, spacing, margin)
    assert M.boundary_dice(pred, gt, skull, spacing, margin) == expected
    assert M.reference_boundary_dice(pred, gt, skull, spacing, margin) == expected


def test_ties_on_both_sides_of_the_margin_fall_back_to_scipy(monkeypatch):
    """A voxel whose two nearest skull voxels are both exactly 25 voxels away at 0.4 mm, one at
    scipy distance 10.0 (in) and one at 10.000000000000002 (out): which one scipy's transform
    picks decides, so the fast path must ask scipy's transform (on a crop) and agree with it."""
    from scipy import ndimage

    s = np.array([0.4, 0.4, 0.4])
    assert M._scipy_distance(np.array([0, 0, 25]), s) == 10.0
    assert M._scipy_distance(np.array([0, 7, 24]), s) > 10.0
    shape = (61, 61, 61)
    v = np.array([30, 20, 18])
    skull = np.zeros(shape, np.uint8)
    skull[tuple(v + [0, 0, 25])] = 1
    skull[tuple(v + [0, 7, 24])] = 1
    gt = np.zeros(shape, np.uint8)
    gt[tuple(v)] = 1
    gt[tuple(v + [0, 0, 5])] = 1  # 8 mm from the skull: in the band
    pred = gt.copy()
    pred[tuple(v)] = 0
    calls = []
    real = ndimage.distance_transform_edt
    monkeypatch.setattr(ndimage, "distance_transform_edt", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = M.boundary_dice(pred, gt, skull, s)
    assert calls  # the fallback ran
    monkeypatch.undo()
    assert fast == M.reference_boundary_dice(pred, gt, skull, s) == _challenge_bdsc(pred, gt, skull, s)


def test_ties_with_one_nearest_skull_voxel_need_no_scipy_transform(monkeypatch):
    """One-voxel skull at 0.4 mm: every tie has a single feature, so its scipy distance alone
    decides and scipy's transform is never run."""
    from scipy import ndimage

    defective, pred, gt = next((d, p, g) for n, d, p, g in _tie_cases() if n == "point")
    expected = _challenge_bdsc(pred, gt, defective, (0.4, 0.4, 0.4))

    def refuse(*args, **kwargs):
        raise AssertionError("scipy's transform was run")

    monkeypatch.setattr(ndimage, "distance_transform_edt", refuse)
    assert M.boundary_dice(pred, gt, defective, (0.4, 0.4, 0.4)) == expected


@pytest.mark.parametrize("dtype", [np.uint8, bool, np.int8, np.uint16, np.float32])
def test_bbox_of_every_type_matches_argwhere(dtype):
    rng = np.random.default_rng(4)
    for trial in range(4):
        a = np.zeros((17, 23, 19), dtype)
        pts = rng.integers(0, (17, 23, 19), size=(trial + 1, 3))
        a[tuple(pts.T)] = -1 if dtype in (np.int8, np.float32) else 1  # negative values count too
        nz = np.argwhere(a)
        expected = tuple((int(lo), int(hi) + 1) for lo, hi in zip(nz.min(0), nz.max(0)))
        assert M._bbox(a) == expected
        assert M._bbox(np.asfortranarray(a)) == expected  # the generic path
    assert M._bbox(np.zeros((4, 5, 6), dtype)) is None


@pytest.mark.parametrize("spacing", [(0.4, 0.4, 0.4), (0.8, 1.3, 2.1)])
def test_margin_zero_keeps_only_voxels_on_the_skull(spacing):
    pred, gt = perturbed(seed=8, amount=0.2)
    defective = smooth_blobs(seed=9, fraction=0.2)  # overlaps both implants
    fast = M.boundary_dice(pred, gt, defective, spacing, 0.0)
    d = defective != 0
    p, g = (pred != 0) & d, (gt != 0) & d
    assert fast == 2.0 * (p & g).sum() / (p.sum() + g.sum()) == M.reference_boundary_dice(pred, gt, defective, spacing, 0.0)
