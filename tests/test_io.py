from __future__ import annotations

import gzip

import nibabel as nib
import nrrd
import numpy as np
import pytest

from skullrecon import io
from skullrecon.io import VolumeError, read_volume, write_volume

from conftest import real_file


def _oblique_header():
    return {
        "space": "left-posterior-superior",
        "space directions": np.array([[0.45, 0, 0], [0, 0.44, -0.07], [0, 0.1, 0.62]]),
        "space origin": np.array([-120.2, -127.85, -10.22]),
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }


def test_nrrd_roundtrip_keeps_oblique_header_and_int32(tmp_path):
    data = np.zeros((12, 10, 8), np.int32)
    data[3:6, 2:7, 1:4] = 1
    src = tmp_path / "in.nrrd"
    nrrd.write(str(src), data, _oblique_header())
    vol = read_volume(src)
    assert vol.array.dtype == np.uint8 and vol.array.sum() == data.sum()
    np.testing.assert_allclose(vol.spacing, np.linalg.norm(_oblique_header()["space directions"], axis=1))
    out = write_volume(tmp_path / "out.nrrd", vol.array, like=vol)
    back, header = nrrd.read(str(out))
    _, original = nrrd.read(str(src))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, data)
    for key in ("space", "space directions", "space origin", "type", "encoding"):
        assert np.array_equal(np.asarray(header[key]), np.asarray(original[key])), key


def test_nifti_roundtrip_keeps_affine(tmp_path):
    affine = np.diag([-0.8, 0.8, 1.2, 1.0])
    affine[:3, 3] = (10, -20, 5)
    data = np.zeros((9, 9, 9), np.uint8)
    data[2:5, 2:5, 2:5] = 1
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "in.nii.gz")
    vol = read_volume(tmp_path / "in.nii.gz")
    write_volume(tmp_path / "out.nii.gz", vol.array, like=vol)
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)


def test_truncated_nrrd_names_the_file(tmp_path):
    path = tmp_path / "truncated.nrrd"
    data = np.ones((20, 20, 20), np.uint8)
    nrrd.write(str(path), data, {"encoding": "gzip"})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(VolumeError, match="truncated.nrrd"):
        read_volume(path)


@pytest.mark.parametrize(
    "values, match",
    [(np.array([0, 1, 2]), "not binary"), (np.array([0.0, np.nan, 1.0]), "NaN")],
)
def test_non_binary_and_nan_volumes_are_rejected(tmp_path, values, match):
    data = np.zeros((6, 6, 6), values.dtype)
    data.flat[: len(values)] = values
    path = tmp_path / "bad.nrrd"
    nrrd.write(str(path), data, {"space": "left-posterior-superior", "space directions": np.eye(3)})
    with pytest.raises(VolumeError, match=match) as err:
        read_volume(path)
    assert "bad.nrrd" in str(err.value)


def test_wrong_dimensionality_and_spacing(tmp_path):
    nrrd.write(str(tmp_path / "flat.nrrd"), np.zeros((5, 5), np.uint8))
    with pytest.raises(VolumeError, match="3-D"):
        read_volume(tmp_path / "flat.nrrd")
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.0, 1.0, 1.0])}
    nrrd.write(str(tmp_path / "zero.nrrd"), np.zeros((4, 4, 4), np.uint8), header)
    with pytest.raises(VolumeError, match="spacing"):
        read_volume(tmp_path / "zero.nrrd")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(VolumeError, match="not found"):
        read_volume(tmp_path / "absent.nrrd")
    (tmp_path / "x.mha").write_text("")
    with pytest.raises(VolumeError, match="unknown volume format"):
        read_volume(tmp_path / "x.mha")


def test_real_skullfix_case_reads_with_oblique_geometry():
    vol = read_volume(real_file("real/aimaster_training_set_complete_skull_000.nrrd"))
    assert vol.shape == (512, 512, 237)
    np.testing.assert_allclose(vol.spacing, [0.451172, 0.451172, 0.633], atol=1e-3)
    assert vol.meta["dtype"] == "int32"


def test_real_oblique_skullfix_result_keeps_the_input_header(tmp_path):
    """A result written like a real oblique SkullFix case overlays it: same header, same int32 storage."""
    src = real_file("skullfix/training_set/defective_skull/000.nrrd")
    vol = read_volume(src)
    directions = np.asarray(vol.header["space directions"], float)
    assert np.count_nonzero(directions - np.diag(np.diag(directions))) > 0, "case 000 should be oblique"
    result = np.zeros(vol.shape, np.uint8)
    result[100:200, 100:200, 50:100] = 1
    out = write_volume(tmp_path / "implant.nrrd", result, like=vol)
    header = nrrd.read_header(str(out))
    reference = nrrd.read_header(str(src))
    assert set(header) == set(reference)
    for key in reference:
        assert np.array_equal(np.asarray(header[key]), np.asarray(reference[key])), key
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, result)
    np.testing.assert_allclose(back.affine, vol.affine)


def _gzip_nrrd_of_zeros(path, sizes) -> None:
    """A gzip NRRD whose data truly expand to prod(sizes) bytes (zeros compress ~1000:1)."""
    import zlib

    n = int(np.prod(sizes))
    header = (f"NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: {' '.join(map(str, sizes))}\n"
              "space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nencoding: gzip\n\n")
    comp = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 22)
    with open(path, "wb") as fh:
        fh.write(header.encode())
        for _ in range(n // len(block)):
            fh.write(comp.compress(block))
        fh.write(comp.compress(bytes(n % len(block))) + comp.flush())


def test_declared_size_is_capped_before_decompressing(tmp_path, monkeypatch):
    """A 1 MB gzip NRRD that expands to 1024^3 voxels (1 GiB) is refused from its header, with
    no more than a few MB allocated; the cap is configurable and also applies to NIfTI."""
    import tracemalloc

    import nibabel as nib

    bomb = tmp_path / "bomb.nrrd"
    _gzip_nrrd_of_zeros(bomb, (1024, 1024, 1024))
    assert bomb.stat().st_size < 8 * 2**20
    tracemalloc.start()
    with pytest.raises(VolumeError, match=r"bomb\.nrrd: the header declares 1024 x 1024 x 1024 = 1073741824 voxels"):
        read_volume(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32 * 2**20
    # a real-sized 512 x 512 x 600 volume is under the default cap
    assert 512 * 512 * 600 <= io.DEFAULT_MAX_VOXELS
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(small))
    assert read_volume(small).shape == (10, 10, 10)
    monkeypatch.setenv("SKULLRECON_MAX_VOXELS", "999")
    with pytest.raises(VolumeError, match=r"small\.nii\.gz: .*1000 voxels, over the limit of 999"):
        read_volume(small)


@pytest.mark.parametrize("header, match", [
    ({}, "no voxel geometry"),
    ({"space": "left-posterior-superior", "space directions": [[np.nan] * 3, [0, 1, 0], [0, 0, 1]]}, "axis 0"),
    ({"space": "left-posterior-superior", "space directions": np.diag([1e-9, 1e-9, 1e-9])}, "implausible voxel spacing"),
    ({"spacings": [1.0, np.nan, 1.0]}, "spacings"),
])
def test_missing_or_broken_geometry_is_an_error(tmp_path, header, match):
    """Never silently 1 mm isotropic: the file is named and the bad field said."""
    path = tmp_path / "nogeo.nrrd"
    nrrd.write(str(path), np.zeros((4, 4, 4), np.uint8), header)
    with pytest.raises(VolumeError, match=match) as err:
        read_volume(path)
    assert "nogeo.nrrd" in str(err.value)
