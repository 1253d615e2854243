"""Read a DICOM image series (e.g. an MR from the scanner or PACS) as a volume with its RAS affine.

Route into inference: a DICOM folder is converted ONCE to a NIfTI in a temporary folder
(:func:`volume_file`), and that file takes exactly the path a NIfTI MR takes (header checks, MONAI
loading, RAS orientation, inversion back to the file grid, sCT header copied from it). One geometry
pipeline, one set of tests; the alternative, teaching every reader (``read_geometry``, MONAI's
``LoadImaged``, ``write_like_reference``) about folders, would give each its own series logic. The
converted NIfTI is in the series' own voxel order (columns, rows, slices ascending along the slice
normal), so the sCT written from it is on the MR series' grid, slice for slice.

Headers are read with pydicom (``stop_before_pixels``) and checked before any voxel is read; refused,
with one :class:`InputError` naming the file: several series when none is named, multi-frame objects,
missing geometry, mixed orientations or pixel grids, duplicated or missing slices, non-uniform slice
spacing, and gantry tilt (slices not stacked along their normal: the grid would be sheared). Voxels
are read with SimpleITK's ``ImageSeriesReader`` (GDCM: compressed transfer syntaxes, rescale) in the
checked order. Geometry: DICOM patient coordinates are LPS; the affine is converted with the one
:data:`pipeline.io.geometry.LPS_TO_RAS`. Tolerances are in mm.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipeline.errors import InputError, subject_prefix
from pipeline.io.atomic import atomic_write
from pipeline.io.geometry import LPS_TO_RAS, Geometry

__all__ = ["DicomSeries", "SeriesInfo", "is_dicom_folder", "list_series", "read_series", "read_series_volume",
           "select_series", "volume_file"]

POSITION_TOLERANCE_MM = 0.01  # slice spacing / in-plane stacking offset; scanners round positions to ~1e-4 mm
ORIENTATION_TOLERANCE = 1e-4  # direction cosines
_HEADER_TAGS = ["SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "NumberOfFrames",
                "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
                "SamplesPerPixel", "SOPClassUID"]


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder: its UID, modality, description and files (unsorted)."""

    uid: str
    modality: str
    description: str
    files: tuple[Path, ...]

    def label(self) -> str:
        return f"{self.uid} ({self.modality} '{self.description}', {len(self.files)} files)"


@dataclass(frozen=True)
class DicomSeries:
    """A checked series: files sorted along the slice normal, grid ``shape`` ``(columns, rows, slices)``,
    ``affine`` voxel -> RAS mm, and the first file's header (``header``, no pixels)."""

    info: SeriesInfo
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray = field(repr=False)
    header: Dataset = field(repr=False)

    def geometry(self) -> Geometry:
        spacing = tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))
        return Geometry(shape=self.shape, spacing=spacing, affine=self.affine, ndim=3, path=self.files[0].parent)


def _read_header(path: Path) -> Dataset | None:
    """Header of a DICOM file (no pixels), or None for anything that is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, TypeError):
        return None


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding at least one DICOM file directly (files with the ``DICM`` preamble)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for file in path.iterdir():
        try:
            with open(file, "rb") as handle:
                handle.seek(128)
                if handle.read(4) == b"DICM":
                    return True
        except OSError:  # a sub-folder or unreadable file: not a series file
            continue
    return False


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every series with files directly in ``folder`` (non-DICOM files are ignored), by UID."""
    found: dict[str, tuple[Dataset, list[Path]]] = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        header = _read_header(path)
        if header is None or "SeriesInstanceUID" not in header:
            continue
        found.setdefault(str(header.SeriesInstanceUID), (header, []))[1].append(path)
    return [SeriesInfo(uid=uid, modality=str(h.get("Modality", "")), description=str(h.get("SeriesDescription", "")),
                       files=tuple(paths)) for uid, (h, paths) in sorted(found.items())]


def select_series(folder: str | os.PathLike, *, series_uid: str | None = None, modality: str | None = "MR",
                  subject_id: str | None = None) -> SeriesInfo:
    """The series ``series_uid`` of ``folder``, or its only series of ``modality`` (any when None).

    Raises :class:`InputError` listing the series found when none or several match.
    """
    folder, prefix = Path(folder), subject_prefix(subject_id)
    if not folder.is_dir():
        raise InputError(f"{prefix}{folder} missing (expected a folder of DICOM files)")
    series = list_series(folder)
    listing = "; ".join(s.label() for s in series) or "none"
    if series_uid:
        matches = [s for s in series if s.uid == series_uid]
    else:
        matches = [s for s in series if modality is None or s.modality == modality]
    if len(matches) == 1:
        return matches[0]
    wanted = f"series {series_uid}" if series_uid else f"{modality or 'DICOM'} series"
    if not matches:
        raise InputError(f"{prefix}{folder.name}: no {wanted} in {folder} (found: {listing})")
    raise InputError(f"{prefix}{folder.name}: {len(matches)} {modality or 'DICOM'} series in {folder}; name one "
                     f"SeriesInstanceUID (found: {listing})")


def _floats(header: Dataset, keyword: str, count: int, where: str) -> np.ndarray:
    value = header.get(keyword)
    if value is None or len(value) != count:
        raise InputError(f"{where}: {keyword} missing or malformed; cannot place the slice")
    return np.asarray([float(v) for v in value], dtype=float)


def _check_slices(info: SeriesInfo, prefix: str) -> tuple[list[tuple[Path, Dataset]], np.ndarray, np.ndarray]:
    """Per-file checks; returns (file, header) pairs, the orientation (6 cosines) and pixel spacing."""
    entries, orientation, grid = [], None, None
    for path in info.files:
        where = f"{prefix}{path.parent.name}/{path.name}"
        header = _read_header(path)
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{where}: multi-frame object ({header.NumberOfFrames} frames); "
                             "only single-frame series (one file per slice) are read")
        if int(header.get("SamplesPerPixel", 1)) != 1:
            raise InputError(f"{where}: {header.SamplesPerPixel} samples per pixel; expected a greyscale image")
        cosines = _floats(header, "ImageOrientationPatient", 6, where)
        this_grid = np.array([*_floats(header, "PixelSpacing", 2, where), header.get("Rows", 0), header.get("Columns", 0)])
        if orientation is None:
            orientation, grid = cosines, this_grid
            row, column = cosines[:3], cosines[3:]
            if abs(row @ column) > ORIENTATION_TOLERANCE or not np.allclose(
                    [row @ row, column @ column], 1.0, atol=2 * ORIENTATION_TOLERANCE):
                raise InputError(f"{where}: ImageOrientationPatient {cosines.tolist()} is not two orthogonal unit vectors")
        elif np.abs(cosines - orientation).max() > ORIENTATION_TOLERANCE:
            raise InputError(f"{where}: mixed orientations in the series (ImageOrientationPatient "
                             f"{cosines.tolist()} vs {orientation.tolist()} in {info.files[0].name})")
        elif not np.allclose(this_grid, grid, rtol=0, atol=1e-6):
            raise InputError(f"{where}: pixel grid (spacing, rows, columns) {this_grid.tolist()} differs from "
                             f"{grid.tolist()} in {info.files[0].name}")
        _floats(header, "ImagePositionPatient", 3, where)
        entries.append((path, header))
    return entries, orientation, grid


def read_series(folder: str | os.PathLike, *, series_uid: str | None = None, modality: str | None = "MR",
                subject_id: str | None = None) -> DicomSeries:
    """Select and check a series (headers only) and compute its grid; see the module docstring."""
    prefix = subject_prefix(subject_id)
    info = select_series(folder, series_uid=series_uid, modality=modality, subject_id=subject_id)
    entries, cosines, grid = _check_slices(info, prefix)
    if len(entries) < 2:
        raise InputError(f"{prefix}{Path(folder).name}: series {info.uid} has {len(entries)} slice; need a volume")
    row, column = cosines[:3], cosines[3:]
    normal = np.cross(row, column)
    positions = np.array([_floats(h, "ImagePositionPatient", 3, "") for _, h in entries])
    order = np.argsort(positions @ normal, kind="stable")
    entries, positions = [entries[i] for i in order], positions[order]
    names = [f"{p.parent.name}/{p.name}" for p, _ in entries]
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    for k in np.flatnonzero(along < POSITION_TOLERANCE_MM):
        raise InputError(f"{prefix}{names[k + 1]}: duplicated slice (same position as {names[k]})")
    spacing = float(np.median(along))
    for k in np.flatnonzero(np.abs(along - spacing) > POSITION_TOLERANCE_MM):
        gap = along[k] / spacing
        problem = (f"{round(gap) - 1} missing slice(s)" if abs(gap - round(gap)) < 0.05 and round(gap) >= 2
                   else "non-uniform slice spacing")
        raise InputError(f"{prefix}{names[k + 1]}: {problem}: {along[k]:.4g} mm from {names[k]}, "
                         f"the series' spacing is {spacing:.4g} mm")
    sideways = np.linalg.norm(steps - np.outer(along, normal), axis=1)
    for k in np.flatnonzero(sideways > POSITION_TOLERANCE_MM)[:1]:  # the first offending slice
        raise InputError(f"{prefix}{names[k + 1]}: slices not stacked along their normal (gantry tilt or "
                         f"non-orthogonal stacking: {sideways[k]:.3g} mm in-plane offset from {names[k]}); "
                         "resample the series to an orthogonal grid first")
    affine_lps = np.eye(4)
    # Voxel (i, j, k) = (column, row, slice): i moves along a row (row cosines, column spacing).
    affine_lps[:3, 0] = row * grid[1]
    affine_lps[:3, 1] = column * grid[0]
    affine_lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    affine_lps[:3, 3] = positions[0]
    return DicomSeries(info=info, files=tuple(p for p, _ in entries), shape=(int(grid[3]), int(grid[2]), len(entries)),
                       affine=LPS_TO_RAS @ affine_lps,
                       header=pydicom.dcmread(entries[0][0], stop_before_pixels=True))  # every tag, for identifiers


def read_series_volume(series: DicomSeries, *, subject_id: str | None = None) -> np.ndarray:
    """Voxels ``(X, Y, Z)`` = (columns, rows, slices) of a checked series (SimpleITK, rescale applied)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        reason = " ".join(str(error).split())[-300:]
        raise InputError(f"{subject_prefix(subject_id)}{series.files[0].parent.name}: series {series.info.uid} "
                         f"unreadable: {reason}") from error
    volume = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # ITK (Z, Y, X) -> (X, Y, Z)
    if volume.shape != series.shape:
        raise InputError(f"{subject_prefix(subject_id)}{series.files[0].parent.name}: voxels {volume.shape} do not "
                         f"match the headers' grid {series.shape}")
    return volume


def write_series_nifti(series: DicomSeries, out_path: str | os.PathLike, *, subject_id: str | None = None,
                       overwrite: bool = False) -> Path:
    """The series as a NIfTI on its own grid (qform = sform = the series affine, code 1 scanner), atomic."""
    volume = read_series_volume(series, subject_id=subject_id)
    if not np.issubdtype(volume.dtype, np.integer):
        volume = volume.astype(np.float32)
    image = nib.Nifti1Image(volume, series.affine)
    image.set_qform(series.affine, code=1)
    image.set_sform(series.affine, code=1)
    image.header.set_xyzt_units("mm")
    return atomic_write(out_path, lambda tmp: nib.save(image, tmp), overwrite=overwrite)


@contextmanager
def volume_file(path: str | os.PathLike, *, series_uid: str | None = None,
                subject_id: str | None = None) -> Iterator[Path]:
    """Yield a volume file for ``path``: the file itself, or for a DICOM folder its (selected) MR series
    converted to a temporary NIfTI named after the folder, deleted on exit."""
    path = Path(path)
    if not path.is_dir():
        yield path
        return
    series = read_series(path, series_uid=series_uid, modality=None if series_uid else "MR", subject_id=subject_id)
    with tempfile.TemporaryDirectory(prefix="rtsynth-dicom-") as tmp:
        yield write_series_nifti(series, Path(tmp) / f"{path.name}.nii.gz", subject_id=subject_id)
