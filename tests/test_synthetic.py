"""The synthetic SkullBreak/SkullFix generator: layout, headers, identities, determinism, anatomy."""

from __future__ import annotations

import json

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from skullrecon.io import read_volume
from skullrecon.synthetic import (
    DEFECT_KINDS,
    SKULLBREAK_DEFECT_TYPES,
    generate_dataset,
    make_case,
    make_defect,
    make_skull,
)

SMALL = (64, 64, 64)
SMALL_SPACING = (3.6, 3.6, 3.6)  # the pipeline's grid: ~230 mm field of view
DEMO = (128, 128, 128)
DEMO_SPACING = (1.8, 1.8, 1.8)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.nrrd"))


def _check_triplet(complete_path, defective_path, implant_path, spacing):
    vols = [read_volume(p) for p in (complete_path, defective_path, implant_path)]
    for v in vols:
        assert v.array.dtype == np.uint8
        assert set(np.unique(v.array).tolist()) <= {0, 1}
        assert v.meta["dtype"] == "uint8"
        np.testing.assert_allclose(v.spacing, spacing)
        np.testing.assert_array_equal(v.affine, vols[0].affine)
    complete, defective, implant = (v.array.astype(bool) for v in vols)
    assert implant.any()
    assert not (defective & implant).any()
    np.testing.assert_array_equal(defective | implant, complete)
    return complete, defective, implant


def _plug(skull, info, spacing):
    """A cylinder that closes the foramen magnum (and nothing else of the skull base)."""
    spacing = np.asarray(spacing, float)
    c = np.asarray(info["foramen_centre_mm"])
    rot = np.asarray(info["rotation"])
    r = max(info["foramen_radii_mm"]) + 2 * spacing.max()
    half = 2 * info["thickness_mm"] + 3 * spacing.max()
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(skull.shape, spacing)], indexing="ij"), -1)
    v = (grid - c) @ rot  # local frame, axis 2 = superior
    return (np.hypot(v[..., 0], v[..., 1]) < r) & (np.abs(v[..., 2]) < half)


def _cavity_volume(bone):
    """Voxels that filling the holes of ``bone`` adds: the enclosed cavity."""
    return int(np.count_nonzero(ndimage.binary_fill_holes(bone) & ~bone))


# --------------------------------------------------------------------------------------------
# layout and headers


def test_skullbreak_layout_headers_and_identities(tmp_path):
    types = ["bilateral", "random_1"]
    summary = generate_dataset(tmp_path, "skullbreak", n_train=2, n_test=1, shape=SMALL,
                               spacing=SMALL_SPACING, seed=3, defect_types=types)
    expected = []
    for split, n in (("training", 2), ("testing", 1)):
        for i in range(n):
            expected.append(f"{split}/complete_skull/{i:03d}.nrrd")
            for t in types:
                expected += [f"{split}/defective_skull/{t}/{i:03d}.nrrd", f"{split}/implant/{t}/{i:03d}.nrrd"]
    assert _files(tmp_path) == sorted(expected)
    assert (tmp_path / "README.md").read_text().lower().count("synthetic") >= 1
    meta = json.loads((tmp_path / "generation.json").read_text())
    assert meta["seed"] == 3 and meta["dataset"] == "skullbreak" and meta["synthetic"] is True
    assert meta["splits"]["training"]["n_cases"] == 4 and meta["splits"]["testing"]["n_cases"] == 2
    assert summary["splits"] == meta["splits"]
    for split, n in (("training", 2), ("testing", 1)):
        for i in range(n):
            for t in types:
                _check_triplet(tmp_path / f"{split}/complete_skull/{i:03d}.nrrd",
                               tmp_path / f"{split}/defective_skull/{t}/{i:03d}.nrrd",
                               tmp_path / f"{split}/implant/{t}/{i:03d}.nrrd", SMALL_SPACING)


def test_skullbreak_default_types_and_test_skulls(tmp_path):
    generate_dataset(tmp_path, "skullbreak", n_train=1, n_test=4, shape=(48, 48, 48),
                     spacing=(4.8, 4.8, 4.8), seed=0, n_test_skulls=1)
    files = _files(tmp_path)
    assert [f for f in files if f.startswith("testing/complete_skull")] == ["testing/complete_skull/000.nrrd"]
    for t in SKULLBREAK_DEFECT_TYPES:
        assert f"testing/implant/{t}/000.nrrd" in files
        assert f"training/defective_skull/{t}/000.nrrd" in files
    assert len(files) == 2 * (1 + 2 * len(SKULLBREAK_DEFECT_TYPES))


def test_skullfix_layout_anisotropic(tmp_path):
    spacing = (1.6, 1.6, 2.4)
    shape = (96, 96, 64)
    generate_dataset(tmp_path, "skullfix", n_train=2, n_test=1, shape=shape, spacing=spacing, seed=1)
    expected = [f"{split}/{kind}/{i:03d}.nrrd" for split, n in (("training_set", 2), ("test_set", 1))
                for i in range(n) for kind in ("complete_skull", "defective_skull", "implant")]
    assert _files(tmp_path) == sorted(expected)
    for split, n in (("training_set", 2), ("test_set", 1)):
        for i in range(n):
            complete, _, implant = _check_triplet(*(tmp_path / f"{split}/{k}/{i:03d}.nrrd"
                                                    for k in ("complete_skull", "defective_skull", "implant")), spacing)
            assert complete.shape == shape
            assert 0.02 < implant.sum() / complete.sum() < 0.2


def test_unknown_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        generate_dataset(tmp_path, "skullbroke", 1, 1, SMALL, SMALL_SPACING, 0)
    with pytest.raises(ValueError, match="defect type"):
        generate_dataset(tmp_path, "skullbreak", 1, 1, SMALL, SMALL_SPACING, 0, defect_types=["lateral"])
    skull = make_skull(SMALL, SMALL_SPACING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="defect kind"):
        make_defect(skull, SMALL_SPACING, "lateral", np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_arrays_other_seed_different(tmp_path):
    a_skull, a_masks, _ = make_case(SMALL, SMALL_SPACING, 5, 0, DEFECT_KINDS)
    b_skull, b_masks, _ = make_case(SMALL, SMALL_SPACING, 5, 0, DEFECT_KINDS)
    c_skull, c_masks, _ = make_case(SMALL, SMALL_SPACING, 6, 0, DEFECT_KINDS)
    np.testing.assert_array_equal(a_skull, b_skull)
    for k in DEFECT_KINDS:
        np.testing.assert_array_equal(a_masks[k], b_masks[k])
        assert not np.array_equal(a_masks[k], c_masks[k])
    assert not np.array_equal(a_skull, c_skull)
    assert not np.array_equal(a_masks["random_1"], a_masks["random_2"])
    # a case does not depend on the other types generated alongside it
    _, only, _ = make_case(SMALL, SMALL_SPACING, 5, 0, ["random_2"])
    np.testing.assert_array_equal(only["random_2"], a_masks["random_2"])

    # and the written files are byte-identical arrays
    for d in ("x", "y"):
        generate_dataset(tmp_path / d, "skullbreak", 1, 0, SMALL, SMALL_SPACING, seed=5, defect_types=["random_1"])
    for rel in _files(tmp_path / "x"):
        np.testing.assert_array_equal(read_volume(tmp_path / "x" / rel).array, read_volume(tmp_path / "y" / rel).array)
    # training and testing subjects differ
    generate_dataset(tmp_path / "z", "skullbreak", 1, 1, SMALL, SMALL_SPACING, seed=5, defect_types=["random_1"])
    assert not np.array_equal(read_volume(tmp_path / "z/training/complete_skull/000.nrrd").array,
                              read_volume(tmp_path / "z/testing/complete_skull/000.nrrd").array)


# --------------------------------------------------------------------------------------------
# anatomy


@pytest.fixture(scope="module")
def demo_cases():
    return [make_case(DEMO, DEMO_SPACING, seed, 0, DEFECT_KINDS) for seed in (0, 1)]


def test_skull_is_one_piece_with_a_cavity_open_only_through_the_foramen(demo_cases):
    for skull, masks, info in demo_cases:
        assert cc3d.connected_components(skull, connectivity=6).max() == 1
        n = int(skull.sum())
        # the foramen magnum opens the cavity: filling holes adds (almost) nothing
        assert _cavity_volume(skull) < 0.01 * n
        # with the foramen closed the cavity is enclosed, and several times the bone volume
        plugged = skull | _plug(skull, info, DEMO_SPACING)
        cavity = _cavity_volume(plugged)
        assert cavity > 2 * n
        # the plug is small next to the cavity: it closes a hole, it does not build the base
        assert np.count_nonzero(plugged & ~skull) < 0.05 * cavity


def test_skull_fills_the_field_of_view_without_touching_the_border(demo_cases):
    for skull, _, _ in demo_cases:
        idx = np.nonzero(skull)
        lo = np.array([i.min() for i in idx])
        hi = np.array([i.max() for i in idx])
        assert lo.min() >= 2 and (np.array(DEMO) - 1 - hi).min() >= 2
        fill = ((hi - lo + 1) / np.array(DEMO)).max()
        assert 0.65 <= fill <= 0.92


def test_defects_are_holes_through_the_bone(demo_cases):
    spacing = np.asarray(DEMO_SPACING)
    for skull, masks, info in demo_cases:
        centre = np.asarray(info["centre_mm"])
        plug = _plug(skull, info, DEMO_SPACING)
        for kind, implant in masks.items():
            frac = implant.sum() / skull.sum()
            assert 0.025 <= frac <= 0.16, (kind, frac)
            assert implant.any() and not (implant & ~skull).any()
            assert cc3d.connected_components(implant, connectivity=26).max() == 1
            defective = skull & ~implant
            # along the ray from the vault centre through the implant there is bone in the complete
            # skull (at least 2 voxels of it) and none at all in the defective one
            direction = np.array(np.nonzero(implant)).mean(1) * spacing - centre
            direction /= np.linalg.norm(direction)
            ts = np.arange(0, 400, 0.25 * spacing.min())
            pts = np.round((centre + ts[:, None] * direction) / spacing).astype(int)
            pts = pts[np.all((pts >= 0) & (pts < np.array(DEMO)), axis=1)]
            along = tuple(pts.T)
            assert 0.25 * spacing.min() * np.count_nonzero(skull[along]) >= 2 * spacing.max(), kind
            assert not defective[along].any(), kind
            # the hole opens the cavity even with the foramen magnum closed
            assert _cavity_volume(defective | plug) < 0.01 * skull.sum(), kind


def test_defect_without_landmarks_is_still_a_hole():
    skull, info = make_skull(DEMO, DEMO_SPACING, np.random.default_rng(11), return_info=True)
    plug = _plug(skull, info, DEMO_SPACING)
    for kind in ("bilateral", "parietotemporal", "skullfix"):
        mask = make_defect(skull, DEMO_SPACING, kind, np.random.default_rng(2))
        assert 0.025 <= mask.sum() / skull.sum() <= 0.16
        assert _cavity_volume((skull & ~mask) | plug) < 0.01 * skull.sum()


def test_shell_survives_2x_downsampling(demo_cases):
    for skull, _, info in demo_cases:
        plug = _plug(skull, info, DEMO_SPACING)

        def half(v):
            s = np.array(v.shape) // 2
            return v[: 2 * s[0], : 2 * s[1], : 2 * s[2]].reshape(s[0], 2, s[1], 2, s[2], 2).mean((1, 3, 5)) >= 0.5

        small = half(skull)
        largest = cc3d.largest_k(small, k=1, connectivity=6) > 0
        assert largest.sum() >= 0.97 * small.sum()
        assert small.sum() >= 0.6 * skull.sum() / 8
        # still a closed shell: with the foramen closed the cavity is enclosed at half size
        assert _cavity_volume(small | half(plug)) > 2 * small.sum()


def test_anisotropic_skull_is_closed():
    spacing = (1.6, 1.6, 2.4)
    skull, info = make_skull((128, 128, 80), spacing, np.random.default_rng(4), return_info=True)
    assert cc3d.connected_components(skull, connectivity=6).max() == 1
    assert _cavity_volume(skull | _plug(skull, info, spacing)) > 2 * skull.sum()


# --------------------------------------------------------------------------------------------
# safety with the user's files


def test_never_writes_over_files_it_did_not_write(tmp_path):
    """A folder holding a real dataset (here one NRRD) is refused and left byte-identical; an
    earlier synthetic dataset is replaced whole, with no stale case of a larger run left."""
    real = tmp_path / "data" / "training" / "complete_skull" / "000.nrrd"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"a real skull")
    with pytest.raises(ValueError, match=r"000\.nrrd: .* did not write"):
        generate_dataset(tmp_path / "data", "skullbreak", 1, 0, SMALL, SMALL_SPACING, 0, defect_types=["random_1"])
    assert real.read_bytes() == b"a real skull"
    assert sorted(p.name for p in (tmp_path / "data").rglob("*") if p.is_file()) == ["000.nrrd"]

    ours = tmp_path / "ours"
    generate_dataset(ours, "skullbreak", 2, 0, SMALL, SMALL_SPACING, 0, defect_types=["random_1"])
    generate_dataset(ours, "skullbreak", 1, 0, SMALL, SMALL_SPACING, 1, defect_types=["random_1"])
    assert not (ours / "training" / "complete_skull" / "001.nrrd").exists()
    (ours / "notes.txt").write_text("mine")  # a file of the user's in our folder: refused again
    with pytest.raises(ValueError, match="notes.txt"):
        generate_dataset(ours, "skullbreak", 1, 0, SMALL, SMALL_SPACING, 2, defect_types=["random_1"])
    assert (ours / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs, match", [
    ({"spacing": (0.0, 1.0, 1.0)}, "spacing"),
    ({"spacing": (float("nan"), 1.0, 1.0)}, "spacing"),
    ({"spacing": (-2.0, 1.0, 1.0)}, "spacing"),
    ({"n_train": -1}, "n_train"),
    ({"n_test": -3}, "n_test"),
])
def test_numbers_that_would_give_an_unreadable_dataset_are_refused(tmp_path, kwargs, match):
    args = {"n_train": 1, "n_test": 0, "shape": SMALL, "spacing": SMALL_SPACING, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path / "d", "skullbreak", defect_types=["random_1"], **args)
    assert not (tmp_path / "d").exists()
