"""Atomic writing of volumes exactly on a reference grid (NIfTI via nibabel, MHA/MHD/NRRD via SimpleITK).

Arrays here are 3D ``(X, Y, Z)`` in the *file's own voxel order* (no reorientation): index ``[i, j, k]``
is the voxel whose world position is ``affine @ [i, j, k, 1]``. Affines are 4x4 in RAS+ mm (NIfTI
convention); ITK-style files store LPS geometry, converted here with :data:`LPS_TO_RAS`.

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a crash never leaves a truncated file under the final name, and an existing file is
only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

__all__ = [
    "LPS_TO_RAS",
    "atomic_path",
    "atomic_write",
    "full_suffix",
    "is_nifti",
    "read_geometry",
    "itk_affine_ras",
    "read_volume",
    "write_like_reference",
]

# RAS <-> LPS: flip the sign of x and y (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SINGLE_FILE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def full_suffix(path: str | os.PathLike) -> str:
    """``sct.nii.gz`` -> ``.nii.gz``; ``CT_0001.dcm`` -> ``.dcm`` (libraries choose the format from it)."""
    path = Path(path)
    name = path.name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def _refuse_existing(path: Path) -> None:
    raise FileExistsError(f"{path} exists; pass overwrite=True / --overwrite to replace it")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); on success move it onto ``path``.

    Raises ``FileExistsError`` before anything is written if ``path`` exists and not ``overwrite``.
    If the body raises, the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        _refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared (planning systems, colleagues)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"writing {path} produced no data")
        if path.exists() and not overwrite:  # appeared while we were writing: still never clobber it
            _refuse_existing(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object], *, overwrite: bool = False) -> Path:
    """Call ``write_fn(tmp_path)`` then atomically move the result to ``path``; returns ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        write_fn(tmp)
    return Path(path)


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions beyond the third (NIfTI ``(X, Y, Z, 1)`` is a 3D volume)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def itk_affine_ras(image_or_reader) -> np.ndarray:
    """4x4 RAS affine from ITK LPS geometry (direction, spacing, origin). A 2-D image is embedded in
    3-D with a unit third axis; a 4-D one contributes its first three axes."""
    dim = image_or_reader.GetDimension()
    n = min(dim, 3)
    direction = np.eye(3)
    direction[:n, :n] = np.asarray(image_or_reader.GetDirection(), dtype=float).reshape(dim, dim)[:n, :n]
    spacing, origin = np.ones(3), np.zeros(3)
    spacing[:n] = image_or_reader.GetSpacing()[:n]
    origin[:n] = image_or_reader.GetOrigin()[:n]
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing  # column j = direction of axis j times its spacing
    affine_lps[:3, 3] = origin
    return LPS_TO_RAS @ affine_lps


def _require_3d(image_or_reader) -> None:
    if image_or_reader.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image_or_reader.GetDimension()}D")


def read_geometry(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of a NIfTI or ITK-readable image without loading its voxels.

    ``shape`` is in file voxel order ``(X, Y, Z)``; ``affine`` is 4x4 RAS+ in mm (nibabel's best affine
    for NIfTI, i.e. the sform when its code is set, else the qform).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if is_nifti(path):
        img = nib.load(path)
        return _spatial_shape(img.shape), np.asarray(img.affine, dtype=float)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    _require_3d(reader)
    return tuple(int(s) for s in reader.GetSize()), itk_affine_ras(reader)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D NIfTI/MHA volume: ``(array (X, Y, Z) float32 in file voxel order, affine 4x4 RAS mm)``.

    NIfTI scaling (``scl_slope``/``scl_inter``) is applied, so a CT comes back in HU.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if is_nifti(path):
        img = nib.load(path)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        data = data.reshape(_spatial_shape(data.shape))
        affine = np.asarray(img.affine, dtype=float)
    else:
        image = sitk.ReadImage(str(path))
        _require_3d(image)
        affine = itk_affine_ras(image)
        # SimpleITK arrays are (Z, Y, X); transpose back to the file's (X, Y, Z) order.
        data = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, affine


def _cast_exact(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round to the nearest integer and clip to the range of an integer ``dtype`` (floats: cast only)."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(array, dtype=dtype)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"array contains {int(np.size(array) - np.isfinite(array).sum())} NaN/inf values; "
                         f"cannot store them as {dtype.name}")
    info = np.iinfo(dtype)
    return np.clip(np.rint(array), info.min, info.max).astype(dtype)


def write_like_reference(
    array: np.ndarray,
    *,
    reference_path: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: np.dtype | type = np.int16,
    overwrite: bool = False,
) -> Path:
    """Write ``array`` on exactly the grid of ``reference_path`` and return ``out_path``.

    Args:
        array: ``(X, Y, Z)`` values (e.g. HU) in the reference file's own voxel order.
        reference_path: NIfTI (header copied with nibabel: same affine, qform and sform with their
            codes, units) or any ITK-readable image, e.g. MHA/MHD/NRRD (origin, spacing and direction
            copied with SimpleITK from the header only; the reference voxels are not loaded).
        out_path: ``.nii``, ``.nii.gz``, ``.mha`` or ``.nrrd`` (single-file formats only). NIfTI with a
            NIfTI reference is written with nibabel; any other combination goes through SimpleITK
            (which converts the geometry between LPS and RAS).
        dtype: stored type. Integer types are rounded (``np.rint``) and clipped to their range, and
            NIfTI is written with ``scl_slope=1, scl_inter=0`` so the stored integers *are* the values.
        overwrite: replace an existing ``out_path`` (otherwise ``FileExistsError``).

    Raises:
        ValueError: ``array`` shape differs from the reference's, or NaN/inf with an integer dtype.
    """
    reference_path, out_path = Path(reference_path), Path(out_path)
    if not str(out_path).lower().endswith(_SINGLE_FILE_SUFFIXES):
        # .mhd/.nhdr keep voxels in a second file that could not be moved into place atomically
        raise ValueError(f"{out_path}: output must be one of {', '.join(_SINGLE_FILE_SUFFIXES)}")
    if out_path.exists() and not overwrite:  # fail before loading anything
        _refuse_existing(out_path)
    array = np.asarray(array)
    ref_shape, _ = read_geometry(reference_path)
    if array.shape != ref_shape:
        raise ValueError(f"array shape {array.shape} does not match the reference grid {ref_shape} "
                         f"of {reference_path}; data must be in the reference file's voxel order")
    data = _cast_exact(array, dtype)

    if is_nifti(reference_path) and is_nifti(out_path):
        ref = nib.load(reference_path)
        header = ref.header.copy()  # keeps qform/sform matrices and codes, pixdim, units, dim_info
        header.set_data_dtype(data.dtype)
        header["cal_min"] = header["cal_max"] = 0  # the MR's display range means nothing for HU
        image = type(ref)(data, ref.affine, header=header)
        # Set after construction (the constructor resets scaling to NaN = "let nibabel choose"); explicit
        # 1/0 makes nibabel write the integers unscaled and tells every reader they are literal values.
        image.header.set_slope_inter(1.0, 0.0)
        return atomic_write(out_path, lambda tmp: nib.save(image, tmp), overwrite=overwrite)

    reference = sitk.ImageFileReader()  # geometry only: the reference voxels are never loaded
    reference.SetFileName(str(reference_path))
    reference.ReadImageInformation()
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))  # (X,Y,Z) -> ITK (Z,Y,X)
    image.SetOrigin(reference.GetOrigin())
    image.SetSpacing(reference.GetSpacing())
    image.SetDirection(reference.GetDirection())
    return atomic_write(out_path, lambda tmp: sitk.WriteImage(image, str(tmp), True), overwrite=overwrite)
