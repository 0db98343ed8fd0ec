"""Reading and writing binary skull volumes (NRRD and NIfTI) with their geometry.

A :class:`Volume` carries the voxel array together with the 4x4 affine that maps voxel indices to
millimetres and the file's own header, so a result can be written back onto the exact grid and
header of the input it came from (3D Slicer and ITK-SNAP then overlay the two).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Volume",
    "VolumeError",
    "read_volume",
    "write_volume",
    "atomic_path",
    "volume_format",
]


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file and what is wrong."""


@dataclass
class Volume:
    """A 3-D binary volume and its geometry.

    Args:
        array: voxel data indexed as in the file (i, j, k); binary volumes are uint8 0/1.
        affine: 4x4 matrix mapping (i, j, k, 1) to physical coordinates in mm, in the file's space
            (LPS for NRRD, RAS for NIfTI).
        header: the file's header (pynrrd dict or nibabel header), kept for writing results back.
        path: where it was read from, if anywhere.
    """

    array: np.ndarray
    affine: np.ndarray
    header: Any = None
    path: Path | None = None
    format: str = "nrrd"
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis (norm of each direction vector)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid and header holding other data (e.g. a prediction)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.affine.copy(), self.header, None, self.format, dict(self.meta))


def volume_format(path: str | os.PathLike) -> str:
    """'nrrd' or 'nifti' from the file name; anything else is an error naming the file."""
    name = str(path).lower()
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return "nrrd"
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    raise VolumeError(f"{path}: unknown volume format (expected .nrrd, .nii or .nii.gz)")


def _nrrd_affine(header: dict, ndim: int) -> np.ndarray:
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        rows = [np.asarray(d, float) for d in directions if d is not None and not _is_nan_vector(d)]
        if len(rows) == ndim:
            affine[:3, :3] = np.stack(rows, axis=1)  # column j = direction of array axis j
    elif "spacings" in header:
        affine[:3, :3] = np.diag(np.asarray(header["spacings"], float))
    origin = header.get("space origin")
    if origin is not None:
        affine[:3, 3] = np.asarray(origin, float)
    return affine


def _is_nan_vector(d: Any) -> bool:
    try:
        return bool(np.all(np.isnan(np.asarray(d, float))))
    except (TypeError, ValueError):
        return False


def read_volume(path: str | os.PathLike, binary: bool = True) -> Volume:
    """Read an NRRD or NIfTI volume and check it can be used.

    Args:
        path: the file.
        binary: require values in {0, 1} and return uint8 (default). With ``False`` the data
            are returned as stored (still checked for NaN and dimensionality).

    Raises:
        VolumeError: unreadable or truncated file, not 3-D, NaN values, a non-binary volume
            where a binary one is required, or a degenerate voxel spacing. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: file not found")
    fmt = volume_format(path)
    try:
        if fmt == "nrrd":
            import nrrd

            array, header = nrrd.read(str(path))
            affine = _nrrd_affine(header, array.ndim)
        else:
            import nibabel as nib

            img = nib.load(str(path))
            array = np.asanyarray(img.dataobj)
            header, affine = img.header, np.asarray(img.affine, float)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise VolumeError(f"{path}: cannot read {fmt.upper()} file ({type(err).__name__}: {err})") from err

    if array.ndim != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise VolumeError(f"{path}: volume contains NaN values")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or np.any(spacing > 50):
        raise VolumeError(f"{path}: implausible voxel spacing {spacing.round(4).tolist()} mm")
    stored_dtype = str(array.dtype)
    if binary:
        array = as_binary(array, path)
    return Volume(array, affine, header, path, fmt, {"dtype": stored_dtype})


def as_binary(array: np.ndarray, path: Any = "<array>") -> np.ndarray:
    """Return ``array`` as uint8 0/1, or raise if it holds any other value."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not ((array == 0) | (array == 1)).all():  # a sort (np.unique) only to report the values
        values = np.unique(array)
        shown = values[:6].tolist()
        raise VolumeError(
            f"{path}: volume is not binary: values {shown}{' ...' if len(values) > 6 else ''} "
            "(expected only 0 and 1)"
        )
    return array.astype(np.uint8, copy=False)


class atomic_path:
    """Context manager giving a temporary path beside ``path``, renamed onto it only on success.

    A killed job therefore never leaves a file that looks complete.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(self.path.suffixes) or ".tmp"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name.split('.')[0]}.", suffix=suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are shared like any file
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    like: Volume | None = None,
    spacing: tuple[float, float, float] | None = None,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """Write a binary volume as NRRD or NIfTI (chosen by the file name), atomically.

    Args:
        path: output file (.nrrd, .nii, .nii.gz).
        array: data on the grid of ``like`` (or on its own grid when ``like`` is None).
        like: the volume whose grid, header and storage type the output takes, so it overlays
            the input in any viewer. Must have the same shape as ``array``.
        spacing: voxel size in mm when there is no ``like`` (default 1 mm).
        origin: physical position of voxel (0, 0, 0) when there is no ``like``.
    """
    path = Path(path)
    fmt = volume_format(path)
    if like is not None and tuple(array.shape) != like.shape:
        raise ValueError(f"{path}: array shape {array.shape} differs from the reference grid {like.shape}")
    if like is not None:
        affine = like.affine
    else:
        affine = np.eye(4)
        affine[:3, :3] = np.diag(spacing if spacing is not None else (1.0, 1.0, 1.0))
        affine[:3, 3] = origin
    with atomic_path(path) as tmp:
        if fmt == "nrrd":
            _write_nrrd(tmp, array, affine, like)
        else:
            _write_nifti(tmp, array, affine, like)
    return path


def _write_nrrd(tmp: Path, array: np.ndarray, affine: np.ndarray, like: Volume | None) -> None:
    import nrrd

    if like is not None and like.format == "nrrd" and isinstance(like.header, dict):
        header = {k: v for k, v in like.header.items() if k not in ("sizes", "dimension")}
        data = array.astype(like.meta.get("dtype", "uint8"))
        header.pop("type", None)  # pynrrd writes the type of the data it is given
        header.pop("endian", None)
    else:
        header = {
            "space": "left-posterior-superior",
            "space directions": affine[:3, :3].T.copy(),
            "space origin": affine[:3, 3].copy(),
            "kinds": ["domain", "domain", "domain"],
            "encoding": "gzip",
        }
        data = array.astype(np.uint8)
    nrrd.write(str(tmp), data, header)


def _write_nifti(tmp: Path, array: np.ndarray, affine: np.ndarray, like: Volume | None) -> None:
    import nibabel as nib

    header = like.header.copy() if like is not None and like.format == "nifti" else None
    dtype = header.get_data_dtype() if header is not None else np.uint8
    img = nib.Nifti1Image(array.astype(dtype), affine, header)
    if header is not None:
        img.set_qform(like.header.get_qform(), code=int(like.header["qform_code"]))
        img.set_sform(like.header.get_sform(), code=int(like.header["sform_code"]))
    # nibabel picks the compression from the name, and tmp keeps the ".nii.gz" suffix
    nib.save(img, str(tmp))
