"""Input validation: header geometry, grid agreement and array sanity, with errors that name the subject.

Every problem is an :class:`InputError` whose message starts with the subject ID (when known), names the
file (or role) and says what is wrong, e.g.
``"1BA001: mr.nii.gz is 4-D (256, 256, 180, 2); expected a 3-D volume"``.

Header-level checks (:func:`read_geometry`, :func:`check_same_grid`) never load voxels, so a whole
dataset is checked in seconds; array checks (:func:`check_volume_array`, :func:`check_mask_array`) run on
data already loaded. :func:`validate_subject` collects all problems of one subject as strings instead of
raising, so a manifest check can report every subject at once.

Geometry follows nibabel: shape in file voxel order ``(X, Y, Z)``, a 4x4 voxel -> world affine in RAS+
mm. ITK formats (.mha/.mhd/.nrrd) store LPS direction/origin; they are converted here.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipeline.io.volumes import itk_affine_ras, read_volume

__all__ = [
    "VOLUME_SUFFIXES",
    "Geometry",
    "InputError",
    "check_mask_array",
    "check_same_grid",
    "check_volume_array",
    "path_given",
    "read_geometry",
    "validate_subject",
]

#: File suffixes accepted for volumes (NIfTI via nibabel, the rest via SimpleITK).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


class InputError(ValueError):
    """Bad input data. The message starts with the subject ID (when known), names the file, says the problem."""


def _prefix(subject_id: str | None) -> str:
    return f"{subject_id}: " if subject_id else ""


@dataclass(frozen=True)
class Geometry:
    """Header geometry of one image file (no voxels loaded).

    Attributes:
        shape: voxels per axis in file order ``(X, Y, Z[, ...])``; extra components of ITK vector
            images are appended as a last axis.
        spacing: voxel size along the first three axes, mm (column norms of ``affine``).
        affine: ``(4, 4)`` voxel index -> RAS+ world, mm.
        ndim: ``len(shape)``; a usable volume has 3.
        path: the file read.
        dtype: stored voxel type (e.g. ``"int16"``), informative only.
        has_orientation: False for a NIfTI with neither qform nor sform (orientation unknown).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    affine: np.ndarray = field(repr=False)
    ndim: int
    path: Path | None = None
    dtype: str | None = None
    has_orientation: bool = True

    @property
    def orientation(self) -> str:
        """Axis codes of the affine, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.orientations.aff2axcodes(self.affine))

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "image"


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def _spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def _check_nifti_size(path: Path, image: nib.Nifti1Image) -> None:
    """Detect a truncated NIfTI from its size alone, without decompressing it.

    nibabel only reads the header at load time, so a cut-off download passes ``nib.load`` and fails
    much later. For .nii the file size must cover ``vox_offset + data bytes``; for .nii.gz the gzip
    trailer (last 4 bytes: uncompressed size mod 2**32) must match. Only when the trailer disagrees
    (truncated, or a legal multi-member gzip) is the stream decompressed to decide.
    """
    proxy = image.dataobj  # its offset is where the voxels start (the header's vox_offset may read 0)
    expected = int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
    size = path.stat().st_size
    if not path.name.lower().endswith(".gz"):
        if size < expected:
            raise OSError(f"file has {size} bytes; header implies {expected} (truncated)")
        return
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        trailer = int.from_bytes(f.read(4), "little")
    if trailer == expected % 2**32:
        return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError) as e:  # EOFError: "Compressed file ended before the end-of-stream marker"
        raise OSError(f"corrupt or truncated gzip ({e})") from e
    if total < expected:
        raise OSError(f"decompresses to {total} bytes; header implies {expected} (truncated)")


def _itk_geometry(reader: sitk.ImageFileReader, path: Path) -> Geometry:
    shape = tuple(int(s) for s in reader.GetSize())
    if reader.GetNumberOfComponents() > 1:  # vector image: not a scalar volume, show it as an extra axis
        shape = shape + (int(reader.GetNumberOfComponents()),)
    affine = itk_affine_ras(reader)
    dtype = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    return Geometry(shape=shape, spacing=_spacing_from_affine(affine), affine=affine, ndim=len(shape),
                    path=path, dtype=dtype)


def read_geometry(path: str | os.PathLike, *, subject_id: str | None = None) -> Geometry:
    """Header geometry of a NIfTI (.nii/.nii.gz, nibabel) or ITK (.mha/.mhd/.nrrd, SimpleITK) file.

    Only the header is read (plus, for NIfTI, a size/trailer check that catches truncated files).

    Raises:
        InputError: ``"<ID>: <file> missing"`` or ``"<ID>: <file> unreadable: <reason>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{_prefix(subject_id)}{path.name} missing ({path})")
    try:
        if _is_nifti(path):
            img = nib.load(path)
            header = img.header
            shape = tuple(int(s) for s in header.get_data_shape())
            _check_nifti_size(path, img)
            affine = np.asarray(img.affine, dtype=float)
            codes = (int(header["qform_code"]), int(header["sform_code"])) if "sform_code" in header else (1, 1)
            return Geometry(shape=shape, spacing=_spacing_from_affine(affine), affine=affine, ndim=len(shape),
                            path=path, dtype=str(header.get_data_dtype()), has_orientation=any(codes))
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return _itk_geometry(reader, path)
    except InputError:
        raise
    except Exception as e:  # nibabel/gzip/ITK raise many types; all mean "cannot read this file"
        reason = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"{_prefix(subject_id)}{path.name} unreadable: {reason} ({path})") from e


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_same_grid(
    a: Geometry,
    b: Geometry,
    *,
    subject_id: str | None,
    names: tuple[str, str] = ("mr", "ct"),
    atol_mm: float = 1e-3,
) -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` share shape, spacing and affine.

    Affines are compared in mm where it matters: origins, and the world positions of the far corner
    of the volume (so a tiny rotation over 256 voxels counts as what it moves). All differences found
    are listed in one message.
    """
    problems = []
    if tuple(a.shape) != tuple(b.shape):
        problems.append(f"shape {tuple(a.shape)} vs {tuple(b.shape)}")
    if not np.allclose(a.spacing, b.spacing, rtol=0.0, atol=atol_mm):
        problems.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    flipped = a.orientation != b.orientation
    if flipped:
        problems.append(f"orientation {a.orientation} vs {b.orientation}")
    origin_shift = float(np.linalg.norm(a.affine[:3, 3] - b.affine[:3, 3]))
    if origin_shift > atol_mm:
        problems.append(f"origin {_fmt(a.affine[:3, 3])} vs {_fmt(b.affine[:3, 3])} mm ({origin_shift:.3g} mm apart)")
    # Displacement of the farthest corner caused by the linear part alone (rotation, flips, scaling).
    extent = np.asarray((tuple(a.shape) + (1, 1, 1))[:3], dtype=float) - 1.0
    corners = np.array(np.meshgrid(*[[0.0, e] for e in extent], indexing="ij")).reshape(3, -1)
    corner_shift = float(np.linalg.norm((a.affine[:3, :3] - b.affine[:3, :3]) @ corners, axis=0).max())
    if corner_shift > atol_mm and not flipped:  # a flip is already reported, more plainly
        problems.append(f"voxel axes differ (direction/spacing; the far corner moves {corner_shift:.3g} mm)")
    if problems:
        raise InputError(
            f"{_prefix(subject_id)}{names[0]} ({a.name}) and {names[1]} ({b.name}) are not on the same grid: "
            + "; ".join(problems)
        )


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor / MetaTensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_3d(array: np.ndarray, what: str, subject_id: str | None) -> None:
    if array.ndim != 3:
        hint = ""
        if array.ndim == 4 and 1 in array.shape:
            hint = " (has a singleton axis: drop the channel/time axis before this check)"
        raise InputError(f"{_prefix(subject_id)}{what} is {array.ndim}-D {tuple(array.shape)}; expected a 3-D volume{hint}")
    if array.size == 0:
        raise InputError(f"{_prefix(subject_id)}{what} is empty (shape {tuple(array.shape)})")


def check_volume_array(array: Any, *, subject_id: str | None, role: str, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` unless ``array`` is a usable 3-D image ``(X, Y, Z)``.

    Checks, in order: exactly 3 dimensions (a singleton 4th axis is *not* accepted silently), not
    empty, no NaN/Inf (the count is reported), not constant.

    Args:
        array: numpy array or torch tensor, any dtype (e.g. MR arbitrary units, CT HU).
        role: what the image is (``"mr"``, ``"ct"``); used in the message.
        source: file it came from, named in the message when given.
    """
    what = f"{role} ({Path(source).name})" if source is not None else role
    array = _as_numpy(array)
    _check_3d(array, what, subject_id)
    if np.issubdtype(array.dtype, np.inexact):
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.isnan(array).sum())
            n_inf = int(array.size - finite.sum()) - n_nan
            raise InputError(f"{_prefix(subject_id)}{what} contains non-finite values: {n_nan} NaN and "
                             f"{n_inf} Inf of {array.size} voxels")
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise InputError(f"{_prefix(subject_id)}{what} is constant (every voxel = {lo:g}): an empty or blank image")


def check_mask_array(mask: Any, *, subject_id: str | None, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` unless ``mask`` is 3-D ``(X, Y, Z)`` with at least one voxel > 0."""
    what = f"mask ({Path(source).name})" if source is not None else "mask"
    mask = _as_numpy(mask)
    _check_3d(mask, what, subject_id)
    if not np.any(mask > 0):
        raise InputError(f"{_prefix(subject_id)}{what} is empty: no voxel > 0")


def path_given(value: Any) -> bool:
    """A path was given (pandas uses NaN/None/"" for an empty cell)."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() != ""


def validate_subject(subject: Mapping[str, Any], *, read_data: bool = False) -> list[str]:
    """All problems of one subject, as messages (empty list when fine). Never raises for bad data.

    ``subject`` has ``subject_id``, ``mr`` (required) and optionally ``ct`` and ``mask`` (paths; None,
    NaN or "" mean absent). Header checks: each file present, readable, 3-D, with an orientation;
    ct and mask on the MR grid. With ``read_data=True`` the voxels are loaded as well (slower):
    truncated data, NaN/Inf, constant images and empty masks are found.
    """
    subject_id = str(subject.get("subject_id") or "") or None
    problems: list[str] = []
    geometries: dict[str, Geometry] = {}
    for role in ("mr", "ct", "mask"):
        if not path_given(subject.get(role)):
            if role == "mr":
                problems.append(f"{_prefix(subject_id)}no mr file given")
            continue
        try:
            geometry = read_geometry(subject[role], subject_id=subject_id)
        except InputError as e:
            problems.append(str(e))
            continue
        if geometry.ndim != 3:
            problems.append(f"{_prefix(subject_id)}{geometry.name} is {geometry.ndim}-D {tuple(geometry.shape)}; "
                            "expected a 3-D volume")
            continue
        if not geometry.has_orientation:
            problems.append(f"{_prefix(subject_id)}{geometry.name} has neither qform nor sform "
                            "(qform_code = sform_code = 0): orientation unknown")
        geometries[role] = geometry
    for other in ("ct", "mask"):
        if "mr" in geometries and other in geometries:
            try:
                check_same_grid(geometries["mr"], geometries[other], subject_id=subject_id, names=("mr", other))
            except InputError as e:
                problems.append(str(e))
    if read_data:
        for role, geometry in geometries.items():
            try:
                array, _ = read_volume(geometry.path)
            except Exception as e:  # truncated gzip, missing .raw of an .mhd, ...
                reason = " ".join(str(e).split()) or type(e).__name__
                problems.append(f"{_prefix(subject_id)}{geometry.name} unreadable: {reason} ({geometry.path})")
                continue
            try:
                if role == "mask":
                    check_mask_array(array, subject_id=subject_id, source=geometry.path)
                else:
                    check_volume_array(array, subject_id=subject_id, role=role, source=geometry.path)
            except InputError as e:
                problems.append(str(e))
    return problems
