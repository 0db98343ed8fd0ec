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
    "memory_order",
    "write_volume",
    "atomic_path",
    "volume_format",
    "max_voxels",
    "same_grid",
]

#: Voxel spacing outside this range (mm) is refused: no head CT is finer than 10 micrometres or
#: coarser than 5 cm, and such values come from broken headers.
SPACING_RANGE_MM = (0.01, 50.0)
#: Default cap on a volume's voxel count, checked from the header before any data is read: 2^28 =
#: 512 x 512 x 1024, twice the largest SkullBreak/SkullFix scan. ``SKULLRECON_MAX_VOXELS`` changes it.
DEFAULT_MAX_VOXELS = 2**28


def max_voxels() -> int:
    """The voxel-count cap: ``SKULLRECON_MAX_VOXELS`` if set, else :data:`DEFAULT_MAX_VOXELS`."""
    value = os.environ.get("SKULLRECON_MAX_VOXELS")
    if value is None:
        return DEFAULT_MAX_VOXELS
    try:
        cap = int(value)
    except ValueError:
        raise ValueError(f"SKULLRECON_MAX_VOXELS={value!r} is not a whole number of voxels") from None
    if cap <= 0:
        raise ValueError(f"SKULLRECON_MAX_VOXELS={value!r} must be positive")
    return cap


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


def _nrrd_affine(header: dict, path: Path) -> np.ndarray:
    """Index -> mm from 'space directions' (or 'spacings'); a header without either is an error.

    Assuming 1 mm isotropic voxels would silently put every distance (band, HD95, morphology) on
    the wrong scale, so a skull without geometry is refused rather than guessed.
    """
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        if len(directions) != 3:
            raise VolumeError(f"{path}: 'space directions' has {len(directions)} rows, expected 3")
        for axis, d in enumerate(directions):
            vec = None if d is None else np.asarray(d, float)
            if vec is None or vec.shape != (3,) or not np.all(np.isfinite(vec)):
                raise VolumeError(
                    f"{path}: NRRD 'space directions' of axis {axis} is {'none' if d is None else vec.tolist()}: "
                    "every axis of a skull volume needs a finite spatial direction"
                )
        affine[:3, :3] = np.stack([np.asarray(d, float) for d in directions], axis=1)  # column j = axis j
    elif "spacings" in header:
        spacings = np.asarray(header["spacings"], float)
        if spacings.shape != (3,) or not np.all(np.isfinite(spacings)):
            raise VolumeError(f"{path}: NRRD 'spacings' {spacings.tolist()} are not 3 finite voxel sizes")
        affine[:3, :3] = np.diag(spacings)
    else:
        raise VolumeError(
            f"{path}: NRRD header has no voxel geometry ('space directions' or 'spacings'); refusing to "
            "assume 1 mm voxels - add the spacing to the header (e.g. save it from 3D Slicer)"
        )
    origin = header.get("space origin")
    if origin is not None:
        origin = np.asarray(origin, float)
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            raise VolumeError(f"{path}: NRRD 'space origin' {origin.tolist()} is not a finite 3-D point")
        affine[:3, 3] = origin
    return affine


def _check_size(path: Path, shape: tuple[int, ...], cap: int | None) -> None:
    cap = max_voxels() if cap is None else cap
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > cap:
        raise VolumeError(
            f"{path}: the header declares {' x '.join(str(int(s)) for s in shape)} = {n} voxels, over the limit "
            f"of {cap} (set SKULLRECON_MAX_VOXELS to allow more); nothing was decompressed"
        )


def read_volume(path: str | os.PathLike, binary: bool = True, voxel_limit: int | None = None) -> Volume:
    """Read an NRRD or NIfTI volume and check it can be used.

    Args:
        path: the file.
        binary: require values in {0, 1} and return uint8 (default). With ``False`` the data
            are returned as stored (still checked for NaN and dimensionality).
        voxel_limit: most voxels the header may declare (default :func:`max_voxels`); checked
            before the data are read, so a small compressed file cannot expand to gigabytes.

    Raises:
        VolumeError: unreadable or truncated file, too many voxels, not 3-D, NaN values, a
            non-binary volume where a binary one is required, no or non-finite geometry (NRRD),
            or a voxel spacing outside :data:`SPACING_RANGE_MM`. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: file not found")
    fmt = volume_format(path)
    try:
        if fmt == "nrrd":
            import nrrd

            _check_size(path, tuple(nrrd.read_header(str(path)).get("sizes", ())), voxel_limit)
            array, header = nrrd.read(str(path))
        else:
            import nibabel as nib

            img = nib.load(str(path))
            _check_size(path, img.shape, voxel_limit)
            array = np.asanyarray(img.dataobj)
            header, affine = img.header, np.asarray(img.affine, float)
    except VolumeError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise VolumeError(f"{path}: cannot read {fmt.upper()} file ({type(err).__name__}: {err})") from err

    if array.ndim != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise VolumeError(f"{path}: volume contains NaN values")
    if fmt == "nrrd":
        affine = _nrrd_affine(header, path)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    lo, hi = SPACING_RANGE_MM
    if not np.all(np.isfinite(affine)) or not np.all((spacing >= lo) & (spacing <= hi)):
        raise VolumeError(
            f"{path}: implausible voxel spacing {spacing.tolist()} mm (expected {lo} to {hi} mm per axis)"
        )
    stored_dtype = str(array.dtype)
    if binary:
        array = as_binary(array, path)
    return Volume(array, affine, header, path, fmt, {"dtype": stored_dtype})


def _lps_affine(vol: Volume) -> np.ndarray:
    """The volume's affine in LPS (NIfTI stores RAS: x and y flip)."""
    affine = np.asarray(vol.affine, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine if vol.format == "nifti" else affine


def same_grid(a: Volume, b: Volume, tol_mm: float = 1e-3) -> str | None:
    """None when ``a`` and ``b`` share shape, spacing, direction and origin (within ``tol_mm``);
    otherwise what differs, in words."""
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    fa, fb = _lps_affine(a), _lps_affine(b)
    if not np.allclose(a.spacing, b.spacing, rtol=0, atol=tol_mm):
        return f"spacing {np.round(a.spacing, 4).tolist()} vs {np.round(b.spacing, 4).tolist()} mm"
    if not np.allclose(fa[:3, :3] / a.spacing, fb[:3, :3] / b.spacing, rtol=0, atol=1e-4):
        return "direction (axis orientation) differs"
    if not np.allclose(fa[:3, 3], fb[:3, 3], rtol=0, atol=tol_mm):
        return f"origin {np.round(fa[:3, 3], 3).tolist()} vs {np.round(fb[:3, 3], 3).tolist()} mm"
    return None


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


def memory_order(array: np.ndarray) -> str:
    """"F" for a Fortran-ordered array (NIfTI and NRRD readers give them), else "C": the order in which to build
    a volume that is combined element-wise with it (mixing orders at 512^3 is several times slower)."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


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


NRRD_GZIP_LEVEL = 1


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
    # gzip level 1 (nibabel's default for .nii.gz) instead of pynrrd's 9: reconstruct's two volumes of a
    # real 512x512x237 skull took 2.3 s instead of 9.5 s here, files 3-4x larger; the voxels are the same
    nrrd.write(str(tmp), data, header, compression_level=NRRD_GZIP_LEVEL)


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
