"""New defects on complete skulls (the generalisation dataset): where, what, exact and repeatable."""

from __future__ import annotations

import json

import nrrd
import numpy as np
import pytest

from skullrecon.datasets import DatasetError, Layout, list_cases, validate_cases
from skullrecon.defects import LOCATIONS, cranial_centre, cut_defect, derive_dataset, derived_layout
from skullrecon.io import read_volume
from skullrecon.synthetic import make_skull

from conftest import real_file

SOURCE_LAYOUT = Layout(train="training_set", test="test_set")
SIZE = (15.0, 45.0)


@pytest.fixture(scope="module")
def skull():
    spacing = (2.4, 2.4, 3.0)
    complete = make_skull((80, 80, 64), spacing, np.random.default_rng(7))
    affine = np.diag([*spacing, 1.0])
    return complete, affine


def _centroid_offset(implant: np.ndarray, affine: np.ndarray, centre: np.ndarray) -> np.ndarray:
    world = np.argwhere(implant) @ affine[:3, :3].T + affine[:3, 3]
    return world.mean(axis=0) - centre


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("shape", ["ellipsoid", "blob"])
def test_defect_is_where_asked(skull, location, shape):
    """Patient space is LPS: +x left, +y posterior, +z superior."""
    complete, affine = skull
    centre = cranial_centre(complete, affine)
    for seed in range(3):
        implant, info = cut_defect(complete, affine, location, shape, SIZE, np.random.default_rng(seed))
        assert implant.any() and not (implant & ~complete).any()
        v = _centroid_offset(implant, affine, centre)
        u = v / np.linalg.norm(v)
        if location == "frontal":
            assert u[1] < -0.6, u  # anterior
        elif location == "temporal":
            assert abs(u[0]) > 0.7 and abs(u[2]) < 0.5, u  # one side, not the top
        elif location == "parietal":
            assert u[2] > 0.3 and abs(u[0]) > 0.3, u  # up and to one side
        elif location == "bilateral":
            assert u[2] > 0.7, u  # the vertex, open on both sides of the midline
            x = (np.argwhere(implant) @ affine[:3, :3].T)[:, 0] + affine[0, 3] - centre[0]
            assert x.min() < -10 and x.max() > 10
        else:
            assert u[2] > -0.1, u  # the upper skull
        assert all(SIZE[0] <= a <= SIZE[1] for a in info["semi_axes_mm"])
        world = np.argwhere(implant) @ affine[:3, :3].T
        extent = world.max(0) - world.min(0)
        assert extent.max() <= 2 * SIZE[1] * 1.35 + 3.0  # the blob's outline reaches at most +35 %
        assert extent.min() >= 2.0  # a hole, not a speck


def test_bad_location_or_shape_is_an_error(skull):
    complete, affine = skull
    with pytest.raises(ValueError, match="unknown defect location 'occipital'"):
        cut_defect(complete, affine, "occipital", "ellipsoid", SIZE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown defect shape 'cube'"):
        cut_defect(complete, affine, "frontal", "cube", SIZE, np.random.default_rng(0))


def _volumes(root, layout, case):
    return [read_volume(p) for p in (case.complete, case.defective, case.implant)]


def test_derived_dataset_is_exact_and_in_the_layout(synthetic_root, tmp_path):
    out = tmp_path / "derived"
    summary = derive_dataset(synthetic_root, SOURCE_LAYOUT, out, locations=["frontal", "temporal", "bilateral"],
                             shapes=["ellipsoid", "blob"], size_mm=SIZE, seed=4)
    layout = Layout.from_dict(derived_layout(["frontal", "temporal", "bilateral"]))
    cases = list_cases(out, layout, "test")
    validate_cases(cases)  # readable, binary, same grid within each case, ground truth present
    source_ids = sorted({c.case_id for c in list_cases(synthetic_root, SOURCE_LAYOUT, "test")})
    train_ids = {c.case_id for c in list_cases(synthetic_root, SOURCE_LAYOUT, "train")}
    assert sorted({c.case_id for c in cases}) == source_ids and len(cases) == 3 * len(source_ids)
    assert len(summary["cases"]) == len(cases)
    for case in cases:
        source = synthetic_root / "test_set" / "complete_skull" / f"{case.case_id}.nrrd"
        assert case.complete.read_bytes() == source.read_bytes()  # the test skull itself, no training skull
        complete, defective, implant = _volumes(out, layout, case)
        c, d, i = (v.array.astype(bool) for v in (complete, defective, implant))
        assert i.any() and d.any()
        assert not (d & ~c).any()  # the defective skull is a subset of the complete one
        np.testing.assert_array_equal(i, c & ~d)  # implant = complete minus defective, exactly
        assert not (d & i).any()
        for vol in (defective, implant):
            np.testing.assert_array_equal(vol.affine, complete.affine)
    assert train_ids  # the source has training skulls, and none of them was read
    record = json.loads((out / "generation.json").read_text())
    assert all("training_set" not in c["source"] for c in record["cases"])


def test_derived_dataset_is_deterministic_and_per_case(synthetic_root, tmp_path):
    kw = dict(locations=["parietal", "random"], shapes=["blob"], size_mm=SIZE, per_skull=1)
    derive_dataset(synthetic_root, SOURCE_LAYOUT, tmp_path / "a", seed=1, **kw)
    derive_dataset(synthetic_root, SOURCE_LAYOUT, tmp_path / "b", seed=1, **kw)
    derive_dataset(synthetic_root, SOURCE_LAYOUT, tmp_path / "c", seed=2, **kw)
    derive_dataset(synthetic_root, SOURCE_LAYOUT, tmp_path / "d", seed=1, max_skulls=1, **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nrrd"))
    # one location per skull, in turn: 000 parietal, 001 random
    assert [str(p) for p in files if "implant" in str(p)] == ["testing/implant/parietal/000.nrrd",
                                                             "testing/implant/random/001.nrrd"]
    for rel in files:
        a = read_volume(tmp_path / "a" / rel).array
        np.testing.assert_array_equal(a, read_volume(tmp_path / "b" / rel).array)
        if "implant" in str(rel):
            assert not np.array_equal(a, read_volume(tmp_path / "c" / rel).array)  # another seed, another cut
    # a case does not depend on which other cases were made
    rel = "testing/implant/parietal/000.nrrd"
    np.testing.assert_array_equal(read_volume(tmp_path / "a" / rel).array, read_volume(tmp_path / "d" / rel).array)
    assert not (tmp_path / "d" / "testing" / "implant" / "random").exists()


def test_header_and_storage_type_are_kept(tmp_path):
    """An oblique int32 source keeps its exact header (gantry tilt, origin, type) in the derived files."""
    spacing = (2.4, 2.4, 3.0)
    complete = make_skull((80, 80, 64), spacing, np.random.default_rng(3)).astype(np.int32)
    directions = np.array([[2.4, 0.0, 0.0], [0.0, 2.37, -0.38], [0.0, 0.47, 2.96]])  # rows: axis directions
    header = {"space": "left-posterior-superior", "space directions": directions,
              "space origin": np.array([-90.0, -80.5, 12.25]), "kinds": ["domain"] * 3, "encoding": "gzip"}
    src = tmp_path / "src" / "test_set"
    for kind in ("complete_skull", "defective_skull", "implant"):
        (src / kind).mkdir(parents=True)
    nrrd.write(str(src / "complete_skull" / "005.nrrd"), complete, header)
    nrrd.write(str(src / "defective_skull" / "005.nrrd"), complete, header)  # the source's own defect: irrelevant
    nrrd.write(str(src / "implant" / "005.nrrd"), np.zeros_like(complete), header)
    derive_dataset(tmp_path / "src", SOURCE_LAYOUT, tmp_path / "out", locations=["frontal"], seed=0)
    ref_data, ref = nrrd.read(str(src / "complete_skull" / "005.nrrd"))
    for kind in ("defective_skull", "implant"):
        data, got = nrrd.read(str(tmp_path / "out" / "testing" / kind / "frontal" / "005.nrrd"))
        assert data.dtype == np.int32 and data.shape == ref_data.shape
        np.testing.assert_allclose(got["space directions"], ref["space directions"])
        np.testing.assert_allclose(got["space origin"], ref["space origin"])
        assert got["space"] == ref["space"]


def test_source_case_without_complete_skull_is_an_error(synthetic_root, tmp_path):
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(synthetic_root, copy)
    (copy / "test_set" / "complete_skull" / "001.nrrd").unlink()
    with pytest.raises(DatasetError, match="001.nrrd: test case 001 has no complete skull"):
        derive_dataset(copy, SOURCE_LAYOUT, tmp_path / "out", locations=["frontal"])
    with pytest.raises(ValueError, match="unknown defect location 'occipital'"):
        derive_dataset(copy, SOURCE_LAYOUT, tmp_path / "out", locations=["occipital"])


def test_frontal_defect_on_a_real_oblique_skull(tmp_path):
    """SkullFix case 000 has a gantry-tilted header; the forehead is found in patient space."""
    vol = read_volume(real_file("skullfix/training_set/complete_skull/000.nrrd"))
    assert not np.allclose(vol.affine[:3, :3], np.diag(np.diag(vol.affine[:3, :3])))  # oblique
    complete = vol.array.astype(bool)
    centre = cranial_centre(complete, vol.affine)
    implant, info = cut_defect(complete, vol.affine, "frontal", "ellipsoid", SIZE, np.random.default_rng(0),
                               centre=centre)
    u = _centroid_offset(implant, vol.affine, centre)
    assert u[1] / np.linalg.norm(u) < -0.6
    assert 0.005 < info["defect_fraction"] < 0.15 and not (implant & ~complete).any()
