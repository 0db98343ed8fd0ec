"""Tests of the random patch masks (skullrecon.masking) on synthetic ellipsoidal skull shells."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from skullrecon.masking import (
    MaskConfig,
    _bspline_weights,
    _displacement,
    _warped_patch,
    apply_mask,
    make_mask,
    make_mask_with_patches,
    masking_examples,
)

SEMI_AXES_MM = (85.0, 70.0, 65.0)


@functools.lru_cache(maxsize=None)
def _shell_cached(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                  thickness_mm: float) -> np.ndarray:
    coords = [(np.arange(n) - (n - 1) / 2) * sp for n, sp in zip(shape, spacing)]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
    a, b, c = SEMI_AXES_MM
    t = thickness_mm
    outer = (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1
    inner = (x / (a - t)) ** 2 + (y / (b - t)) ** 2 + (z / (c - t)) ** 2 <= 1
    out = (outer & ~inner).astype(np.uint8)
    out.setflags(write=False)
    return out


def shell(n: int | tuple[int, int, int], spacing: float | tuple[float, float, float],
          thickness_mm: float = 6.0) -> np.ndarray:
    """Ellipsoidal skull-like shell (semi-axes in mm fixed) on an n^3 grid of the given spacing."""
    shape = (n, n, n) if isinstance(n, int) else tuple(n)
    sp = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(map(float, spacing))
    return _shell_cached(shape, sp, thickness_mm)


def removed_fraction(skull: np.ndarray, mask: np.ndarray) -> float:
    return np.count_nonzero(mask & (skull != 0)) / np.count_nonzero(skull)


def axis_aligned_normal_fraction(mask: np.ndarray) -> float:
    """Fraction of boundary voxels whose surface normal is within 10 degrees of an axis."""
    g = np.stack(np.gradient(ndi.gaussian_filter(mask.astype(np.float32), 1.0)))
    boundary = mask & ~ndi.binary_erosion(mask)
    n = g[:, boundary]
    norm = np.linalg.norm(n, axis=0)
    n = n[:, norm > 1e-6] / norm[norm > 1e-6]
    return float(np.mean(np.abs(n).max(axis=0) > np.cos(np.deg2rad(10.0))))


# --- config -------------------------------------------------------------------------------------


def test_from_dict_builds_config_and_rejects_unknown_key():
    cfg = MaskConfig.from_dict({"deform": False, "n_patches": [2, 3], "patch_size_mm": [20, 40]})
    assert cfg.deform is False
    assert cfg.n_patches == (2, 3)
    assert cfg.patch_size_mm == (20.0, 40.0)
    assert MaskConfig.from_dict({}) == MaskConfig()
    with pytest.raises(ValueError, match="patch_size\\b"):
        MaskConfig.from_dict({"patch_size": [20, 40]})


@pytest.mark.parametrize(
    "kw",
    [
        {"n_patches": (0, 2)},
        {"n_patches": (3, 2)},
        {"patch_size_mm": (50.0, 20.0)},
        {"elastic_magnitude": 0.5},
        {"elastic_control_points": 1},
        {"max_removed_fraction": 0.0},
        {"elastic_interpolation": "quadratic"},
        {"centre_min_height": 1.0},
        {"centre_min_height": -0.1},
    ],
)
def test_config_rejects_invalid_values(kw):
    with pytest.raises(ValueError):
        MaskConfig(**kw)


def test_empty_skull_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        make_mask(np.zeros((16, 16, 16), np.uint8), 4.0, MaskConfig(), np.random.default_rng(0))


# --- removed fraction and patches ---------------------------------------------------------------


@pytest.mark.parametrize("deform", [True, False])
def test_removed_fraction_positive_and_capped(deform):
    skull = shell(64, 3.0)
    for cap in (0.35, 0.05):
        cfg = MaskConfig(deform=deform, max_removed_fraction=cap)
        for seed in range(25):
            mask = make_mask(skull, 3.0, cfg, np.random.default_rng(seed))
            assert mask.dtype == bool and mask.shape == skull.shape
            frac = removed_fraction(skull, mask)
            assert 0.0 < frac <= cap, (cap, seed, frac)


def test_cap_drops_patches_but_keeps_one():
    skull = shell(64, 3.0)
    base = MaskConfig(n_patches=(4, 4), patch_size_mm=(60.0, 80.0), max_removed_fraction=1.0)
    tight = MaskConfig(n_patches=(4, 4), patch_size_mm=(60.0, 80.0), max_removed_fraction=0.04)
    kept_base, kept_tight = [], []
    for seed in range(10):
        _, pb = make_mask_with_patches(skull, 3.0, base, np.random.default_rng(seed))
        _, pt = make_mask_with_patches(skull, 3.0, tight, np.random.default_rng(seed))
        kept_base.append(len(pb))
        kept_tight.append(len(pt))
    assert all(k == 4 for k in kept_base)
    assert all(k >= 1 for k in kept_tight)
    assert np.mean(kept_tight) < 3.0


def test_single_patch_larger_than_cap_is_shrunk():
    skull = shell(64, 3.0)
    cfg = MaskConfig(n_patches=(1, 1), patch_size_mm=(80.0, 80.0), max_removed_fraction=0.01)
    mask, patches = make_mask_with_patches(skull, 3.0, cfg, np.random.default_rng(0))
    assert len(patches) == 1 and patches[0].size_mm < 80.0
    assert 0.0 < removed_fraction(skull, mask) <= 0.01


@pytest.mark.parametrize("deform", [True, False])
def test_every_patch_is_centred_on_skull_and_removes_skull(deform):
    skull = shell(64, 3.0)
    cfg = MaskConfig(deform=deform)
    for seed in range(25):
        mask, patches = make_mask_with_patches(skull, 3.0, cfg, np.random.default_rng(seed))
        for p in patches:
            assert skull[p.center] != 0 and mask[p.center]
        labels, n = ndi.label(mask)
        hit = np.unique(labels[(skull != 0) & mask])
        assert set(hit.tolist()) - {0} == set(range(1, n + 1)), seed  # no component misses bone


@pytest.mark.parametrize("deform", [True, False])
def test_number_of_connected_patches_within_range(deform):
    skull = shell(64, 3.0)
    cfg = MaskConfig(deform=deform, n_patches=(2, 4), max_removed_fraction=1.0)
    counts = []
    for seed in range(30):
        _, n = ndi.label(make_mask(skull, 3.0, cfg, np.random.default_rng(seed)))
        assert 1 <= n <= 4, (seed, n)  # overlapping patches may merge
        counts.append(n)
    assert max(counts) >= 3  # patches are separate defects when they do not overlap
    single = MaskConfig(deform=deform, n_patches=(1, 1))
    for seed in range(30):
        _, n = ndi.label(make_mask(skull, 3.0, single, np.random.default_rng(seed)))
        assert n == 1, seed  # a deformed patch does not shed fragments


# --- shape of D versus ND -----------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_nd_patch_is_box_and_d_patch_is_irregular(interpolation):
    skull = shell(96, 2.0)
    fills = {True: [], False: []}
    aligned = {True: [], False: []}
    for deform in (True, False):
        cfg = MaskConfig(deform=deform, n_patches=(1, 1), elastic_interpolation=interpolation)
        for seed in range(10):
            mask = make_mask(skull, 2.0, cfg, np.random.default_rng(seed))
            labels, n = ndi.label(mask)
            assert n == 1
            (bbox,) = ndi.find_objects(labels)
            fills[deform].append(mask[bbox].mean())
            aligned[deform].append(axis_aligned_normal_fraction(mask))
    # ND: every component is exactly its bounding box; faces dominate, normals axis-aligned.
    assert all(f == 1.0 for f in fills[False])
    assert min(aligned[False]) > 0.6
    # D: the warped patch fills clearly less than its bounding box, normals are not axis-aligned
    # (the B-spline field is a smoothed version of the trilinear one, so it deforms a little less).
    assert max(fills[True]) < 0.8
    assert max(aligned[True]) < min(aligned[False]) - 0.05
    assert np.mean(aligned[True]) < (0.3 if interpolation == "linear" else 0.55)


def test_bspline_weights_are_the_cubic_bspline_normalised():
    from scipy.interpolate import BSpline

    kernel = BSpline.basis_element(np.arange(-2.0, 3.0), extrapolate=False)
    n, k = 23, 4
    pos = np.arange(n) * (k - 1) / (n - 1)
    ref = np.nan_to_num(kernel(pos[:, None] - np.arange(k)))
    ref /= ref.sum(axis=1, keepdims=True)
    assert np.allclose(_bspline_weights(n, k).numpy(), ref, atol=1e-6)


def test_cubic_field_is_smooth_where_trilinear_has_kinks():
    ctrl = torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (3, 4, 4, 4)).astype(np.float32))
    shape = (61, 61, 61)
    lin = _displacement(ctrl, shape, "linear")
    cub = _displacement(ctrl, shape, "cubic")
    # bounded by the control values (a convex combination), so the crop margin still holds
    assert float(cub.abs().max()) <= float(ctrl.abs().max()) + 1e-6
    # second differences along axis 0: spikes at the trilinear kinks, small everywhere for cubic
    d2_lin = (lin[:, 2:] - 2 * lin[:, 1:-1] + lin[:, :-2]).abs()
    d2_cub = (cub[:, 2:] - 2 * cub[:, 1:-1] + cub[:, :-2]).abs()
    assert float(d2_cub.max()) < 0.25 * float(d2_lin.max())
    # the trilinear field is piecewise linear: zero curvature between kinks, all of it at them
    assert float(d2_lin[:, 5:15].max()) < 1e-5
    assert float(d2_cub[:, 5:15].max()) > 1e-5


def test_centres_only_in_the_upper_part_when_asked():
    skull = shell(64, 3.0)
    zs = np.flatnonzero(skull.any(axis=(0, 1)))
    lo, hi = zs[0], zs[-1]
    for min_height, deform in ((0.0, True), (0.6, True), (0.6, False)):
        cfg = MaskConfig(deform=deform, n_patches=(3, 3), max_removed_fraction=1.0,
                         centre_min_height=min_height)
        heights = []
        for seed in range(20):
            _, patches = make_mask_with_patches(skull, 3.0, cfg, np.random.default_rng(seed))
            heights += [(p.center[2] - lo) / (hi - lo) for p in patches]
        if min_height:
            assert min(heights) >= min_height - 1e-9
        else:
            assert min(heights) < 0.3  # uniform over the skull reaches its lower part


def test_fast_warp_matches_grid_sample_reference():
    ctrl = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (3, 4, 4, 4)).astype(np.float32))
    ref = F.interpolate(ctrl[None], size=(37, 41, 29), mode="trilinear", align_corners=True)[0]
    assert torch.allclose(_displacement(ctrl, (37, 41, 29)), ref, atol=1e-5)

    rng = np.random.default_rng(2)
    shape = (80, 80, 80)
    for _ in range(3):
        centre = rng.uniform(30, 50, 3)
        half = np.full(3, rng.uniform(8, 15))
        control = rng.uniform(-1, 1, (3, 4, 4, 4))
        disp = 0.25 * 2 * half
        sl_a, fast = _warped_patch(centre, half, disp, control, shape, method="analytic")
        sl_b, ref_m = _warped_patch(centre, half, disp, control, shape, method="grid_sample")
        assert sl_a == sl_b
        iou = np.count_nonzero(fast & ref_m) / np.count_nonzero(fast | ref_m)
        assert iou > 0.98, iou
        # and the warp really moved it: far from the undeformed cube
        cube = np.zeros(fast.shape, bool)
        lo = np.ceil(centre - half - np.array([s.start for s in sl_a])).astype(int)
        hi = np.floor(centre + half - np.array([s.start for s in sl_a])).astype(int) + 1
        cube[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        assert np.count_nonzero(fast & cube) / np.count_nonzero(fast | cube) < iou


def test_d_without_displacement_is_the_nd_cube():
    skull = shell(64, 3.0)
    for seed in range(10):
        d = make_mask(skull, 3.0, MaskConfig(deform=True, elastic_magnitude=0.0),
                      np.random.default_rng(seed))
        nd = make_mask(skull, 3.0, MaskConfig(deform=False), np.random.default_rng(seed))
        assert np.array_equal(d, nd), seed


# --- reproducibility and physical units ---------------------------------------------------------


@pytest.mark.parametrize("deform", [True, False])
def test_same_seed_same_mask_different_seed_different(deform):
    skull = shell(64, 3.0)
    cfg = MaskConfig(deform=deform)
    a = make_mask(skull, 3.0, cfg, np.random.default_rng(7))
    b = make_mask(skull, 3.0, cfg, np.random.default_rng(7))
    assert np.array_equal(a, b)
    others = [make_mask(skull, 3.0, cfg, np.random.default_rng(s)) for s in (8, 9, 10)]
    assert all(not np.array_equal(a, o) for o in others)


def test_sizes_are_in_mm_fraction_independent_of_grid():
    coarse, fine = shell(48, 4.0), shell(96, 2.0)
    cfg = MaskConfig(max_removed_fraction=1.0)
    fc = [removed_fraction(coarse, make_mask(coarse, 4.0, cfg, np.random.default_rng(s)))
          for s in range(30)]
    ff = [removed_fraction(fine, make_mask(fine, 2.0, cfg, np.random.default_rng(s)))
          for s in range(30)]
    # Were sizes taken in voxels, the coarse grid's patches would cover 2x the mm per edge
    # (~4x the shell area); in mm the averages agree within noise.
    ratio = np.mean(fc) / np.mean(ff)
    assert 0.75 < ratio < 1.33, (np.mean(fc), np.mean(ff))


def test_anisotropic_spacing_scales_patch_extent():
    sp = (1.5, 3.0, 6.0)
    skull = shell((128, 64, 32), sp)
    cfg = MaskConfig(deform=False, n_patches=(1, 1), patch_size_mm=(45.0, 45.0))
    ext = []
    for seed in range(10):
        mask = make_mask(skull, sp, cfg, np.random.default_rng(seed))
        (bbox,) = ndi.find_objects(mask.astype(np.uint8))
        e = [s.stop - s.start for s in bbox]
        if all(s.start > 0 and s.stop < n for s, n in zip(bbox, mask.shape)):  # not clipped
            ext.append(e)
    assert ext
    # 45 mm edge = half-extent 15 / 7.5 / 3.75 voxels around an integer centre -> 31, 15, 7 voxels
    assert all(e == [31, 15, 7] for e in ext), ext


# --- apply_mask and picture ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, bool])
def test_apply_mask_removes_exactly_the_mask(dtype):
    skull = shell(48, 4.0).astype(dtype)
    before = skull.copy()
    mask = make_mask(skull, 4.0, MaskConfig(), np.random.default_rng(3))
    out = apply_mask(skull, mask)
    assert out.dtype == skull.dtype and out.shape == skull.shape
    assert np.array_equal(skull, before)  # input untouched
    assert not np.any(out[mask])
    assert np.array_equal(out[~mask], skull[~mask])
    assert np.count_nonzero(out) < np.count_nonzero(skull)


def test_masking_examples_writes_png_with_red_overlay(tmp_path):
    import matplotlib.image as mpimg

    skulls = [shell(48, 4.0), shell(48, 4.0, thickness_mm=8.0)]
    out = tmp_path / "sub" / "masking_examples.png"
    masking_examples(skulls, 4.0, MaskConfig(deform=True), MaskConfig(deform=False), out, seed=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.2) & (img[..., 2] < 0.2)
    assert red.sum() > 50  # removed bone is drawn
