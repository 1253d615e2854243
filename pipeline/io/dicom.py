"""Export an HU volume as a DICOM CT Image Storage series (pydicom; one file per slice).

Why pydicom and not SimpleITK's series writer: the planning system needs full control of the tags
(patient/study identifiers and Frame of Reference copied from the MR study, image type, a clear
"synthetic" note, rescale), which ITK's writer only partly exposes.

Geometry. DICOM patient coordinates are LPS, NIfTI affines RAS: x and y change sign. The slices are
taken along the voxel axis closest to head-feet, and the in-plane axes are the voxel axes closest to
+x (patient left, along a row) and +y (posterior, down a column), so the series looks like a
conventional axial CT in any viewer. This only permutes/reverses voxel axes (nibabel
``io_orientation``): no resampling, every stored value is a voxel of the input, at its own position
(also for oblique grids). Instances are numbered along the slice normal (row x column cosines).

Pixel storage: unsigned 16-bit, ``RescaleSlope 1``, ``RescaleIntercept -1024`` (the classic CT
layout, understood by every planning system): HU are rounded to integers and the representable range
is [-1024, 64511] HU; lower values (e.g. -2048 padding) are clipped to -1024 (air) with a warning.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from pipeline.io.atomic import atomic_write
from pipeline.io.geometry import LPS_TO_RAS, read_geometry

__all__ = [
    "RESCALE_INTERCEPT",
    "REFERENCE_IDENTIFIER_TAGS",
    "dicom_slice_geometry",
    "read_reference_identifiers",
    "write_ct_dicom_series",
]

logger = logging.getLogger(__name__)

RESCALE_INTERCEPT = -1024.0  # HU = stored * 1 + RESCALE_INTERCEPT
WINDOW_CENTER, WINDOW_WIDTH = 40.0, 400.0  # soft-tissue window (HU)
SERIES_NUMBER = 901
SYNTHETIC_NOTE = "SYNTHETIC CT computed from MR by rtsynth; not an acquired CT image"
FILE_PATTERN = "CT_{:04d}.dcm"
ORTHOGONALITY_TOLERANCE = 1e-4  # |cos(angle)| between voxel axes; float32 NIfTI affines reach ~1e-7

# Copied from the MR series so the planning system files the sCT under the same patient and study,
# in the MR's Frame of Reference (the sCT is on the MR's own grid, so positions are in that frame).
REFERENCE_IDENTIFIER_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition",
)
_UNIQUE_PER_FOLDER = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID")


def dicom_slice_geometry(affine_ras: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-axis arrangement for DICOM slices.

    Args:
        affine_ras: 4x4 voxel -> RAS mm affine of the volume (file voxel order).
        shape: ``(X, Y, Z)`` of the volume.

    Returns:
        ``(transform, affine_lps)``: the nibabel orientation transform to apply with
        ``apply_orientation`` (file order -> ``(columns, rows, slices)`` order, axes closest to LPS +x,
        +y, +z) and the 4x4 voxel -> LPS mm affine of the arranged array.

    Raises:
        ValueError: zero spacing or non-orthogonal (sheared) axes, which DICOM slices cannot represent.
    """
    affine_ras = np.asarray(affine_ras, dtype=float)
    affine_lps = LPS_TO_RAS @ affine_ras  # the flip is its own inverse
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(affine_lps)):
        raise ValueError(f"affine has zero or invalid voxel spacing {spacing.tolist()}")
    cosines = affine_lps[:3, :3] / spacing
    gram = cosines.T @ cosines - np.eye(3)
    if np.abs(gram).max() > ORTHOGONALITY_TOLERANCE:
        raise ValueError(f"affine axes are not orthogonal (max |cos| {np.abs(gram).max():.2e}): a sheared grid "
                         "(e.g. gantry tilt) cannot be written as DICOM slices; resample it first")
    transform = ornt_transform(io_orientation(affine_lps), np.array([[0, 1], [1, 1], [2, 1]]))
    return transform, affine_lps @ inv_ornt_aff(transform, shape)


def read_reference_identifiers(reference_dicom_dir: str | os.PathLike) -> Dataset:
    """Patient/study/frame-of-reference identifiers (:data:`REFERENCE_IDENTIFIER_TAGS`) of the DICOM
    series in ``reference_dicom_dir`` (files directly in that folder; non-DICOM files are ignored).

    Raises ``ValueError`` when the folder holds no DICOM file with a StudyInstanceUID, or files of
    several patients, studies or frames of reference (ambiguous: point it at one MR series).
    """
    folder = Path(reference_dicom_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder}: reference DICOM folder does not exist")
    headers = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(REFERENCE_IDENTIFIER_TAGS))
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "StudyInstanceUID" in ds:
            headers.append(ds)
    if not headers:
        raise ValueError(f"{folder}: no DICOM file with a StudyInstanceUID (point --reference-dicom at the "
                         "folder holding the MR series files)")
    for keyword in _UNIQUE_PER_FOLDER:
        values = {str(ds.get(keyword, "")) for ds in headers}
        if len(values) > 1:
            raise ValueError(f"{folder}: files disagree on {keyword} ({len(values)} values); "
                             "point --reference-dicom at a folder holding one MR series")
    identifiers = Dataset()
    for keyword in REFERENCE_IDENTIFIER_TAGS:
        if keyword in headers[0]:
            setattr(identifiers, keyword, headers[0][keyword].value)
    return identifiers


def _ds(value: float) -> str:
    """Decimal String with the most digits that fit in 16 characters (DS limit)."""
    return format_number_as_ds(float(value) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _stored_values(hu: np.ndarray) -> np.ndarray:
    """HU -> unsigned 16-bit stored values (``HU = stored + RESCALE_INTERCEPT``), rounded and clipped."""
    if not np.all(np.isfinite(hu)):
        raise ValueError("HU volume contains NaN/inf values")
    stored = np.rint(hu) - RESCALE_INTERCEPT
    n_low, n_high = int((stored < 0).sum()), int((stored > 65535).sum())
    if n_low or n_high:
        logger.warning("%d voxels below %d HU and %d above %d HU clipped for DICOM storage",
                       n_low, RESCALE_INTERCEPT, n_high, 65535 + RESCALE_INTERCEPT)
    return np.clip(stored, 0, 65535).astype(np.uint16)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True / --overwrite "
                              "to write the series into it")


def _dcmwrite(path: Path, ds: Dataset) -> None:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:  # pydicom 2.x takes the encoding from the dataset attributes
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)


def _series_template(
    *, identifiers: Dataset | None, series_description: str, source_name: str,
    patient_id: str | None, patient_name: str | None, now: datetime,
) -> Dataset:
    """Attributes shared by every slice (patient, study, series, frame of reference, equipment)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names copied from any reference encode losslessly
    ds.SOPClassUID = CTImageStorage
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Type 2 attributes: present, possibly empty, unless the reference study provides them.
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = generate_uid(), "", date, time
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator, ds.PatientPosition = generate_uid(), "", ""
    if identifiers is not None:
        for element in identifiers:
            ds[element.tag] = element
    for keyword, value in (("PatientID", patient_id), ("PatientName", patient_name)):
        if value is not None:
            if identifiers is not None and keyword in identifiers and str(identifiers[keyword].value) != value:
                logger.warning("%s %r overrides %r from the reference DICOM", keyword, value,
                               str(identifiers[keyword].value))
            setattr(ds, keyword, value)

    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.Manufacturer, ds.ManufacturerModelName = "rtsynth", "rtsynth"
    ds.SoftwareVersions = "rtsynth"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = f"{SYNTHETIC_NOTE} ({source_name})"
    ds.ImageComments = SYNTHETIC_NOTE
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionNumber = 1
    ds.KVP = ""  # type 2: no acquisition took place

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(RESCALE_INTERCEPT), "1", "HU"
    ds.WindowCenter, ds.WindowWidth = _ds(WINDOW_CENTER), _ds(WINDOW_WIDTH)
    ds.WindowCenterWidthExplanation = "SOFT TISSUE"
    return ds


def write_ct_dicom_series(
    hu: np.ndarray,
    *,
    reference_image: str | os.PathLike,
    out_dir: str | os.PathLike,
    reference_dicom_dir: str | os.PathLike | None = None,
    series_description: str = "rtsynth synthetic CT",
    patient_id: str | None = None,
    patient_name: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``hu`` as a CT Image Storage series ``out_dir/CT_0001.dcm ...`` and return the paths.

    Args:
        hu: ``(X, Y, Z)`` HU volume in the voxel order of ``reference_image`` (rounded to integers).
        reference_image: NIfTI (or MHA) whose grid ``hu`` is on; its affine gives every slice's
            Image Position/Orientation (Patient), Pixel Spacing and Slice Thickness (mm, LPS).
        out_dir: folder for the series (created); must be empty unless ``overwrite``.
        reference_dicom_dir: folder of the MR DICOM series; patient, study and Frame of Reference
            identifiers are copied from it (:data:`REFERENCE_IDENTIFIER_TAGS`). Without it a new study
            and frame of reference are created.
        series_description: SeriesDescription (at most 64 characters).
        patient_id, patient_name: override (or, without a reference, set) PatientID / PatientName.
        overwrite: write into a non-empty ``out_dir``: files of the same name are replaced and
            leftover ``CT_*.dcm`` slices of an earlier export are removed; other files are kept.

    Returns:
        The written files, in instance order (ascending along the slice normal).
    """
    out_dir, reference_image = Path(out_dir), Path(reference_image)
    _check_out_dir(out_dir, overwrite)
    if len(series_description) > 64:
        raise ValueError(f"series_description has {len(series_description)} characters; DICOM allows 64")
    hu = np.asarray(hu)
    geometry = read_geometry(reference_image)
    shape, affine_ras = geometry.spatial_shape, geometry.affine
    if hu.ndim != 3 or hu.shape != shape:
        raise ValueError(f"HU volume shape {hu.shape} does not match the grid {shape} of {reference_image}")
    transform, affine_lps = dicom_slice_geometry(affine_ras, shape)
    volume = apply_orientation(_stored_values(hu), transform)  # (columns, rows, slices)
    identifiers = read_reference_identifiers(reference_dicom_dir) if reference_dicom_dir is not None else None

    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    row_cosines, column_cosines = affine_lps[:3, 0] / spacing[0], affine_lps[:3, 1] / spacing[1]
    normal = np.cross(row_cosines, column_cosines)
    positions = affine_lps[:3, 3] + np.outer(np.arange(volume.shape[2]), affine_lps[:3, 2])
    order = np.argsort(positions @ normal, kind="stable")  # readers sort slices along the normal

    template = _series_template(identifiers=identifiers, series_description=series_description,
                                source_name=reference_image.name, patient_id=patient_id,
                                patient_name=patient_name, now=datetime.now())
    template.Rows, template.Columns = volume.shape[1], volume.shape[0]
    # PixelSpacing = (distance between rows, distance between columns) = (column axis, row axis) spacing.
    template.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    template.SliceThickness = _ds(spacing[2])
    template.ImageOrientationPatient = [_ds(v) for v in (*row_cosines, *column_cosines)]

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for instance, slice_index in enumerate(order, start=1):
        ds = Dataset()
        ds.update(template)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [_ds(v) for v in positions[slice_index]]
        ds.SliceLocation = _ds(positions[slice_index] @ normal)
        # Pixel (row r, column c) is voxel (c, r) of the arranged slice: transpose to (Rows, Columns).
        ds.PixelData = np.ascontiguousarray(volume[:, :, slice_index].T).astype("<u2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out_dir / FILE_PATTERN.format(instance)
        written.append(atomic_write(path, lambda tmp, ds=ds: _dcmwrite(tmp, ds), overwrite=overwrite))
    if overwrite:
        stale = set(out_dir.glob("CT_*.dcm")) - set(written)
        for path in stale:  # slices of an earlier, longer export would otherwise join this series
            path.unlink()
        if stale:
            logger.info("removed %d stale slices from %s", len(stale), out_dir)
    logger.info("wrote %d CT slices (%dx%d) to %s", len(written), template.Columns, template.Rows, out_dir)
    return written
