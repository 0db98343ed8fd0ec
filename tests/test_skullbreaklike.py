"""The SkullBreak-like dataset (skullrecon.skullbreaklike): SkullBreak's five kinds on complete skulls."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
from scipy import ndimage

from conftest import real_file
from skullrecon.datasets import Layout, list_cases, list_healthy, validate_cases
from skullrecon.defects import cranial_centre
from skullrecon.io import read_volume
from skullrecon.skullbreaklike import KINDS, cut_kind, generate_dataset, layout
from skullrecon.synthetic import make_skull

SOURCE_LAYOUT = Layout.from_dict({"train": "training_set", "test": "test_set", "types": None})
SPACING = (2.4, 2.4, 3.0)


@pytest.fixture(scope="module")
def skull():
    complete = make_skull((80, 80, 64), SPACING, np.random.default_rng(7))
    affine = np.diag([*SPACING, 1.0])
    return complete, affine, cranial_centre(complete, affine)


@pytest.fixture(scope="module")
def generated(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("skullbreaklike")
    summary = generate_dataset(synthetic_root, SOURCE_LAYOUT, out, seed=5)
    return out, summary


def _centre_of(implant, affine):
    return np.argwhere(implant).mean(0) * np.diag(affine)[:3]


def test_each_kind_is_one_piece_of_the_skull(skull):
    complete, affine, centre = skull
    for kind in KINDS:
        implant, info = cut_kind(complete, affine, kind, np.random.default_rng([0, 1, len(kind)]), centre)
        assert implant.any() and not (implant & ~complete).any(), kind
        _, n = ndimage.label(implant, structure=np.ones((3, 3, 3)))
        assert n == 1, kind
        assert info["implant_voxels"] == int(implant.sum())
        assert 0.005 < info["defect_fraction"] < 0.4, (kind, info["defect_fraction"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_kind_in_its_place(skull, seed):
    """LPS: +x left, +y posterior, +z superior; positions relative to the cavity's centre (mm)."""
    complete, affine, centre = skull
    rel = {}
    for kind in ("bilateral", "frontoorbital", "parietotemporal"):
        implant, _ = cut_kind(complete, affine, kind, np.random.default_rng([seed, 3, len(kind)]), centre)
        rel[kind] = _centre_of(implant, affine) - centre
        if kind == "bilateral":  # across the midline at the top: bone on both sides of it
            x = np.argwhere(implant)[:, 0] * SPACING[0] - centre[0]
            assert (x < -10).any() and (x > 10).any()
    assert rel["bilateral"][2] > 40 and abs(rel["bilateral"][0]) < 10  # the vertex, on the midline
    fo, pt = rel["frontoorbital"], rel["parietotemporal"]
    assert fo[1] < -40 and abs(fo[0]) < 15  # the front, on the midline
    assert fo[2] < rel["bilateral"][2] - 30  # low: towards the orbits
    assert abs(pt[0]) > 35 and abs(pt[0]) > abs(pt[1])  # one side


def test_unknown_kind_fails(skull):
    complete, affine, centre = skull
    with pytest.raises(ValueError, match="unknown SkullBreak defect kind"):
        cut_kind(complete, affine, "occipital", np.random.default_rng(0), centre)


def test_layout_is_read_by_the_skullbreak_adapter(synthetic_root, generated):
    out, summary = generated
    lay = Layout.from_dict(layout())
    assert layout() == {"train": "training", "test": "evaluation", "types": list(KINDS)}
    train, test = list_cases(out, lay, "train"), list_cases(out, lay, "test")
    src_train = [i for i, _ in list_healthy(synthetic_root, SOURCE_LAYOUT, "train")]
    src_test = [i for i, _ in list_healthy(synthetic_root, SOURCE_LAYOUT, "test")]
    assert sorted({c.case_id for c in train}) == src_train and sorted({c.case_id for c in test}) == src_test
    assert len(train) == 5 * len(src_train) and len(test) == 5 * len(src_test)
    assert {c.defect_type for c in test} == set(KINDS)
    assert all(c.implant is not None and c.complete is not None for c in train + test)
    assert [i for i, _ in list_healthy(out, lay, "train")] == src_train
    validate_cases(train + test)
    for case in test:  # the complete skull is the source's file, byte for byte
        assert filecmp.cmp(case.complete, synthetic_root / "test_set" / "complete_skull" / f"{case.case_id}.nrrd", shallow=False)
    assert len(summary["cases"]) == len(train) + len(test)
    assert (out / "generation.json").is_file() and (out / "README.md").is_file()


def test_written_triplets_are_exact_on_the_source_header(generated):
    out, _ = generated
    for case in list_cases(out, Layout.from_dict(layout()), "test"):
        d, i, c = (read_volume(p) for p in (case.defective, case.implant, case.complete))
        assert np.array_equal(d.array | i.array, c.array) and not (d.array & i.array).any()
        assert np.allclose(d.affine, c.affine) and np.allclose(i.affine, c.affine)


def test_deterministic_and_per_case(synthetic_root, generated, tmp_path):
    out, _ = generated
    generate_dataset(synthetic_root, SOURCE_LAYOUT, tmp_path / "again", seed=5, max_skulls=1, splits=["test"])
    first = list_healthy(synthetic_root, SOURCE_LAYOUT, "test")[0][0]
    for kind in KINDS:  # one skull alone gives the same defects as among all the others
        rel = f"evaluation/implant/{kind}/{first}.nrrd"
        assert np.array_equal(read_volume(tmp_path / "again" / rel).array, read_volume(out / rel).array)
    generate_dataset(synthetic_root, SOURCE_LAYOUT, tmp_path / "other", seed=6, max_skulls=1, splits=["test"])
    rel = f"evaluation/implant/random_1/{first}.nrrd"
    assert not np.array_equal(read_volume(tmp_path / "other" / rel).array, read_volume(out / rel).array)


def test_on_a_real_skull():
    """Five kinds on the real SkullFix skull 007 (512 x 512 x 256): sizes of SkullBreak's order."""
    vol = read_volume(real_file("real/aimaster_training_set_complete_skull_007.nrrd"))
    complete = vol.array.astype(bool)
    centre = cranial_centre(complete, vol.affine)
    for kind in KINDS:
        implant, info = cut_kind(complete, vol.affine, kind, np.random.default_rng([0, 7, len(kind)]), centre)
        assert not (implant & ~complete).any()
        assert 3.0 < info["volume_cm3"] < 150.0, (kind, info["volume_cm3"])
        assert max(info["extent_mm"]) < 200.0, (kind, info["extent_mm"])
        if kind == "frontoorbital":
            assert info["centre_rel_mm"][1] < -50  # at the front
        if kind == "bilateral":
            assert info["centre_rel_mm"][2] > 40 and abs(info["centre_rel_mm"][0]) < 15
