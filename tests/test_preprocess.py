from __future__ import annotations

import numpy as np
import pytest

from skullrecon.io import read_volume
from skullrecon.preprocess import Geometry, from_grid, plan_crop, to_grid

from conftest import real_file, shell


def _dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_crop_is_a_cube_in_mm_centred_on_the_skull():
    skull = np.zeros((90, 80, 60), bool)
    skull[20:60, 10:70, 5:45] = shell((40, 60, 40), (19, 29, 19), 3)
    spacing = (1.0, 1.0, 1.5)
    geom = plan_crop(skull, spacing, grid=32, margin=0.1)
    side = np.array(geom.box_size) * spacing
    assert side.max() - side.min() <= max(spacing) + 1e-9
    assert side.max() == pytest.approx(60 * 1.1, abs=1.5)
    centre = np.array(geom.box_start) + np.array(geom.box_size) / 2
    np.testing.assert_allclose(centre, [40, 40, 25], atol=1.0)


def test_roundtrip_on_anisotropic_shell_is_close():
    skull = shell((96, 96, 64), (44, 40, 28), 6)
    geom = plan_crop(skull, (1.0, 1.0, 1.5), grid=64)
    back = from_grid(to_grid(skull, geom), geom)
    assert back.shape == skull.shape
    assert _dice(back, skull) > 0.9


def test_geometry_json_roundtrip_and_shape_checks():
    skull = shell()
    geom = plan_crop(skull, (1, 1, 1), grid=32)
    assert Geometry.from_json(geom.to_json()) == geom
    with pytest.raises(ValueError, match="shape"):
        to_grid(skull[:-1], geom)
    with pytest.raises(ValueError, match="empty"):
        plan_crop(np.zeros((8, 8, 8), bool), (1, 1, 1), grid=32)


def test_real_skull_roundtrip_at_256_keeps_dsc_above_097():
    vol = read_volume(real_file("real/aimaster_training_set_complete_skull_007.nrrd"))
    geom = plan_crop(vol.array, vol.spacing, grid=256)
    back = from_grid(to_grid(vol.array, geom), geom)
    assert _dice(back, vol.array) >= 0.97


def test_case_files_round_trip_bit_packed_and_old_files_still_load(tmp_path):
    from skullrecon.preprocess import load_case, save_case

    rng = np.random.default_rng(0)
    geom = Geometry(shape=(20, 21, 22), spacing=(1.0, 1.0, 2.0), box_start=(0, 0, 0), box_size=(20, 21, 22), grid=17)
    skull = (rng.random((17, 17, 17)) < 0.3).astype(np.uint8)  # 17^3: not a whole number of bytes
    save_case(tmp_path / "new.npz", geom, complete=skull)
    arrays, back = load_case(tmp_path / "new.npz")
    assert back == geom and arrays["complete"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["complete"], skull)
    with open(tmp_path / "old.npz", "wb") as fh:  # the layout written before bit packing
        np.savez_compressed(fh, geometry=np.array(geom.to_json()), complete=skull)
    old, _ = load_case(tmp_path / "old.npz")
    np.testing.assert_array_equal(old["complete"], skull)
