"""Atomic writing of volumes exactly on a reference grid (NIfTI via nibabel, MHA/MHD/NRRD via SimpleITK).

Arrays here are 3D ``(X, Y, Z)`` in the *file's own voxel order* (no reorientation): index ``[i, j, k]``
is the voxel whose world position is ``affine @ [i, j, k, 1]``. Affines are 4x4 in RAS+ mm (NIfTI
convention); ITK-style files store LPS geometry, converted by :mod:`pipeline.io.geometry`. Every write is atomic
(:mod:`pipeline.io.atomic`) and an existing file is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write, refuse_existing
from pipeline.io.geometry import (
    check_orientation,
    check_same_grid,
    drop_trailing_singletons,
    is_nifti,
    itk_affine_ras,
    read_geometry,
)

__all__ = ["read_volume", "read_volumes_on_one_grid", "write_like_reference", "write_nifti"]

_SINGLE_FILE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")
#: NIfTI stores affines as float32: allow round-off, nothing a voxel would notice.
GRID_ATOL_MM = 1e-3


def _require_3d(image_or_reader) -> None:
    if image_or_reader.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image_or_reader.GetDimension()}D")


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
        data = data.reshape(drop_trailing_singletons(data.shape))
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


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a volume we generated (phantoms, doses) as NIfTI with qform = sform = ``affine`` (code 1,
    scanner), mm units and the array's own dtype, atomically. Volumes that belong on an input's grid
    use :func:`write_like_reference` instead, which copies that input's header."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header.set_data_dtype(np.asarray(array).dtype)
    return atomic_write(path, lambda tmp: nib.save(image, tmp), overwrite=overwrite)


def read_volumes_on_one_grid(record: Mapping[str, str], keys: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Load ``record[key]`` for each key as float32 ``(X, Y, Z)`` (file voxel order, NIfTI scaling
    applied, so CT is HU) after checking every header against the first key's grid (shape, spacing,
    orientation, affine; no voxel read before all headers agree). Returns ``({key: array}, affine)``.

    Raises :class:`InputError` naming ``record["subject_id"]``, the file and the problem.
    """
    subject_id = str(record.get("subject_id", "?"))
    for key in keys:
        if not record.get(key):
            raise InputError(f"{subject_id}: no '{key}' path given")
    first = read_geometry(record[keys[0]], subject_id=subject_id)
    for key in keys[1:]:
        check_same_grid(first, read_geometry(record[key], subject_id=subject_id), subject_id=subject_id,
                        names=(keys[0], key), atol_mm=GRID_ATOL_MM)
    arrays = {}
    for key in keys:
        try:
            arrays[key], _ = read_volume(record[key])
        except (OSError, ValueError) as error:  # unreadable voxels, or not 3-D
            raise InputError(f"{subject_id}: cannot read {key} file {record[key]}: {error}") from error
    return arrays, first.affine


def write_like_reference(
    array: np.ndarray,
    *,
    reference_path: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: np.dtype | type = np.int16,
    overwrite: bool = False,
    description: str | None = None,
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
        description: provenance text for the NIfTI ``descrip`` field (at most 79 characters; ITK
            outputs have no such field and ignore it).

    Raises:
        ValueError: ``array`` shape differs from the reference's, or NaN/inf with an integer dtype.
    """
    reference_path, out_path = Path(reference_path), Path(out_path)
    if not str(out_path).lower().endswith(_SINGLE_FILE_SUFFIXES):
        # .mhd/.nhdr keep voxels in a second file that could not be moved into place atomically
        raise ValueError(f"{out_path}: output must be one of {', '.join(_SINGLE_FILE_SUFFIXES)}")
    if out_path.exists() and not overwrite:  # fail before loading anything
        refuse_existing(out_path)
    array = np.asarray(array)
    reference = read_geometry(reference_path)
    check_orientation(reference)  # an sCT on an unknown or ambiguous grid is a clinical hazard
    ref_shape = reference.spatial_shape
    if array.shape != ref_shape:
        raise ValueError(f"array shape {array.shape} does not match the reference grid {ref_shape} "
                         f"of {reference_path}; data must be in the reference file's voxel order")
    data = _cast_exact(array, dtype)

    if is_nifti(reference_path) and is_nifti(out_path):
        ref = nib.load(reference_path)
        header = ref.header.copy()  # keeps qform/sform matrices and codes, pixdim, units, dim_info
        header.set_data_dtype(data.dtype)
        header["cal_min"] = header["cal_max"] = 0  # the MR's display range means nothing for HU
        if description is not None:
            if len(description.encode()) > 79:
                raise ValueError(f"description {description!r} is longer than NIfTI's 79-character descrip")
            header["descrip"] = description.encode()
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
