"""Export an HU volume as a DICOM CT Image Storage series (pydicom; one file per slice); the same
slice writer makes MR Image Storage series (phantoms as a scanner would send them, for tests).

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

Reference series. Identifiers (patient, study, Frame of Reference, PatientPosition) are copied from one
series (:func:`pipeline.io.dicom_series.read_series`), and only after its grid is checked against the
sCT's (:func:`check_reference_grid`): sharing a Frame of Reference asserts that positions mean the same
thing, which is only true for an sCT computed on that series' grid. Without a reference, a new study and
frame are made and PatientPosition is ``HFS`` with a warning (planning systems refuse a CT without it).
The model (card hash) and rtsynth version go into ``SoftwareVersions`` and ``DerivationDescription``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from pipeline.io.atomic import atomic_write
from pipeline.io.dicom_series import DicomSeries, read_series
from pipeline.io.geometry import LPS_TO_RAS, Geometry, check_same_grid, read_geometry

__all__ = [
    "RESCALE_INTERCEPT",
    "REFERENCE_IDENTIFIER_TAGS",
    "check_reference_grid",
    "dicom_slice_geometry",
    "rtsynth_version",
    "write_ct_dicom_series",
    "write_mr_dicom_series",
]

logger = logging.getLogger(__name__)

RESCALE_INTERCEPT = -1024.0  # HU = stored * 1 + RESCALE_INTERCEPT
WINDOW_CENTER, WINDOW_WIDTH = 40.0, 400.0  # soft-tissue window (HU)
SERIES_NUMBER = 901
SYNTHETIC_NOTE = "SYNTHETIC CT computed from MR by rtsynth; not an acquired CT image"
FILE_PATTERN = "CT_{:04d}.dcm"
DEFAULT_PATIENT_POSITION = "HFS"  # head first supine: the usual brain set-up; warned about when assumed
NEW_STUDY_ID = "RTSYNTH"  # StudyID (SH) of a study made without a reference series
ORTHOGONALITY_TOLERANCE = 1e-4  # |cos(angle)| between voxel axes; float32 NIfTI affines reach ~1e-7

# Copied from the MR series so the planning system files the sCT under the same patient and study,
# in the MR's Frame of Reference (the sCT is on the MR's own grid, so positions are in that frame).
REFERENCE_IDENTIFIER_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition",
    "BodyPartExamined",  # the sCT covers the MR's body part; it also settles Laterality (below)
)


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


def rtsynth_version() -> str:
    """The installed rtsynth version (``importlib.metadata``), ``"unknown"`` when run from a bare checkout."""
    try:
        return version("rtsynth")
    except PackageNotFoundError:
        return "unknown"


def _arranged_geometry(affine_ras: np.ndarray, shape: tuple[int, ...], name: str) -> Geometry:
    """The grid as DICOM slices would store it (:func:`dicom_slice_geometry`), in RAS: two grids holding the
    same points in different voxel orders (e.g. dcm2niix's flips) compare equal."""
    transform, affine_lps = dicom_slice_geometry(affine_ras, shape)
    arranged = tuple(int(shape[int(axis)]) for axis in np.argsort(transform[:, 0]))
    affine = LPS_TO_RAS @ affine_lps
    return Geometry(shape=arranged, spacing=tuple(np.linalg.norm(affine[:3, :3], axis=0)), affine=affine, ndim=3,
                    path=Path(name))


def check_reference_grid(reference: DicomSeries, affine_ras: np.ndarray, shape: tuple[int, ...], *,
                         name: str = "sct", atol_mm: float = 1e-3) -> None:
    """Raise :class:`InputError` unless the reference series covers exactly the sCT grid (same voxel
    centres, any voxel order): only then may the sCT share its Frame of Reference."""
    ref_name = f"reference series {reference.info.uid} ({reference.files[0].parent.name})"
    check_same_grid(_arranged_geometry(reference.affine, reference.shape, ref_name),
                    _arranged_geometry(affine_ras, shape, name), subject_id=None, names=("DICOM", "sct"),
                    atol_mm=atol_mm)


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
    *, identifiers: Dataset | None, modality: str, sop_class: str, series_description: str,
    patient_id: str | None, patient_name: str | None, now: datetime,
) -> Dataset:
    """Attributes shared by every slice (patient, study, series, frame of reference, equipment)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names copied from any reference encode losslessly
    ds.SOPClassUID = sop_class
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Type 2 attributes: present, possibly empty, unless the reference study provides them.
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = generate_uid(), NEW_STUDY_ID, date, time
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator, ds.PatientPosition = generate_uid(), "", ""
    if identifiers is not None:
        for keyword in REFERENCE_IDENTIFIER_TAGS:
            if keyword in identifiers:
                setattr(ds, keyword, identifiers[keyword].value)
    if not ds.PatientPosition:
        logger.warning("no PatientPosition in %s: set to %s (head first supine); check it matches the set-up",
                       "the reference series" if identifiers is not None else "a series without reference",
                       DEFAULT_PATIENT_POSITION)
        ds.PatientPosition = DEFAULT_PATIENT_POSITION
    for keyword, value in (("PatientID", patient_id), ("PatientName", patient_name)):
        if value is not None:
            if identifiers is not None and keyword in identifiers and str(identifiers[keyword].value) != value:
                logger.warning("%s %r overrides %r from the reference DICOM", keyword, value,
                               str(identifiers[keyword].value))
            setattr(ds, keyword, value)

    ds.Modality = modality
    if not ds.get("BodyPartExamined"):  # General Series Laterality is Type 2C: empty = unknown body part
        ds.Laterality = ""
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.Manufacturer, ds.ManufacturerModelName = "rtsynth", "rtsynth"
    ds.SoftwareVersions = f"rtsynth {rtsynth_version()}"
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def _write_slices(stored: np.ndarray, affine_ras: np.ndarray, template: Dataset, *, out_dir: Path,
                  file_pattern: str, overwrite: bool) -> list[Path]:
    """Write ``stored`` (uint16 ``(X, Y, Z)`` in the file order of ``affine_ras``) as one file per slice,
    each atomically; the geometry tags come from :func:`dicom_slice_geometry`."""
    transform, affine_lps = dicom_slice_geometry(affine_ras, stored.shape)
    volume = apply_orientation(stored, transform)  # (columns, rows, slices)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    row_cosines, column_cosines = affine_lps[:3, 0] / spacing[0], affine_lps[:3, 1] / spacing[1]
    normal = np.cross(row_cosines, column_cosines)
    positions = affine_lps[:3, 3] + np.outer(np.arange(volume.shape[2]), affine_lps[:3, 2])
    order = np.argsort(positions @ normal, kind="stable")  # readers sort slices along the normal

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
        ds.file_meta.MediaStorageSOPClassUID = template.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out_dir / file_pattern.format(instance)
        written.append(atomic_write(path, lambda tmp, ds=ds: _dcmwrite(tmp, ds), overwrite=overwrite))
    if overwrite:
        stale = set(out_dir.glob(file_pattern.split("{")[0] + "*.dcm")) - set(written)
        for path in stale:  # slices of an earlier, longer export would otherwise join this series
            path.unlink()
        if stale:
            logger.info("removed %d stale slices from %s", len(stale), out_dir)
    logger.info("wrote %d %s slices (%dx%d) to %s", len(written), template.Modality, template.Columns,
                template.Rows, out_dir)
    return written


def write_ct_dicom_series(
    hu: np.ndarray,
    *,
    reference_image: str | os.PathLike,
    out_dir: str | os.PathLike,
    reference_dicom_dir: str | os.PathLike | None = None,
    reference_series_uid: str | None = None,
    series_description: str = "rtsynth synthetic CT",
    patient_id: str | None = None,
    patient_name: str | None = None,
    model_id: str | None = None,
    software_version: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``hu`` as a CT Image Storage series ``out_dir/CT_0001.dcm ...`` and return the paths.

    Args:
        hu: ``(X, Y, Z)`` HU volume in the voxel order of ``reference_image`` (rounded to integers).
        reference_image: NIfTI (or MHA) whose grid ``hu`` is on; its affine gives every slice's
            Image Position/Orientation (Patient), Pixel Spacing and Slice Thickness (mm, LPS).
        out_dir: folder for the series (created); must be empty unless ``overwrite``.
        reference_dicom_dir: folder of the MR DICOM series the sCT was computed from; its grid must be the
            sCT's (:func:`check_reference_grid`), then patient, study, Frame of Reference and
            PatientPosition are copied (:data:`REFERENCE_IDENTIFIER_TAGS`). Without it a new study and
            frame of reference are created (PatientPosition ``HFS``, with a warning).
        reference_series_uid: the series to use when ``reference_dicom_dir`` holds several.
        series_description: SeriesDescription (at most 64 characters).
        patient_id, patient_name: override (or, without a reference, set) PatientID / PatientName.
        model_id: identifies the model (e.g. its model card hash): in SoftwareVersions and
            DerivationDescription.
        software_version: rtsynth version recorded there (default: the installed one).
        overwrite: write into a non-empty ``out_dir``: files of the same name are replaced and
            leftover ``CT_*.dcm`` slices of an earlier export are removed; other files are kept.

    Returns:
        The written files, in instance order (ascending along the slice normal).

    Raises:
        InputError: the reference series is ambiguous, malformed or not on the sCT grid.
        ValueError: shape mismatch, NaN, sheared grid, too long a description.
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
    dicom_slice_geometry(affine_ras, shape)  # refuse a sheared grid before reading any reference
    identifiers = None
    if reference_dicom_dir is not None:
        reference = read_series(reference_dicom_dir, series_uid=reference_series_uid, modality=None)
        check_reference_grid(reference, affine_ras, shape, name=reference_image.name)
        identifiers = reference.header
    stored = _stored_values(hu)

    template = _series_template(identifiers=identifiers, modality="CT", sop_class=CTImageStorage,
                                series_description=series_description, patient_id=patient_id,
                                patient_name=patient_name, now=datetime.now())
    software_version = software_version or rtsynth_version()
    template.SoftwareVersions = [f"rtsynth {software_version}"] + ([model_id[:64]] if model_id else [])
    template.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    template.DerivationDescription = (f"{SYNTHETIC_NOTE}; model {model_id or 'not identified'}; "
                                      f"rtsynth {software_version}; from {reference_image.name}")[:1024]
    template.ImageComments = SYNTHETIC_NOTE
    template.KVP = ""  # type 2: no acquisition took place
    template.RescaleIntercept, template.RescaleSlope, template.RescaleType = _ds(RESCALE_INTERCEPT), "1", "HU"
    template.WindowCenter, template.WindowWidth = _ds(WINDOW_CENTER), _ds(WINDOW_WIDTH)
    template.WindowCenterWidthExplanation = "SOFT TISSUE"
    return _write_slices(stored, affine_ras, template, out_dir=out_dir, file_pattern=FILE_PATTERN,
                         overwrite=overwrite)


def write_mr_dicom_series(
    values: np.ndarray,
    *,
    affine: np.ndarray,
    out_dir: str | os.PathLike,
    identifiers: Mapping[str, str] | None = None,
    series_description: str = "T1 phantom",
    overwrite: bool = False,
) -> list[Path]:
    """Write an MR volume as an MR Image Storage series ``out_dir/MR_0001.dcm ...`` (as a scanner would
    send it; used to make DICOM phantoms). ``values`` ``(X, Y, Z)`` on the grid of ``affine`` (4x4 voxel ->
    RAS mm) are rounded to integers in [0, 65535], stored without rescale. ``identifiers``: keyword ->
    value for patient/study/frame attributes (:data:`REFERENCE_IDENTIFIER_TAGS`), else new UIDs."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or not np.all(np.isfinite(values)) or values.min() < -0.5 or values.max() > 65535.5:
        raise ValueError("MR values must be a finite 3-D volume within [0, 65535]")
    given = Dataset()
    given.PatientPosition, given.BodyPartExamined = DEFAULT_PATIENT_POSITION, "HEAD"
    for keyword, value in (identifiers or {}).items():
        setattr(given, keyword, value)
    template = _series_template(identifiers=given, modality="MR", sop_class=MRImageStorage,
                                series_description=series_description, patient_id=None, patient_name=None,
                                now=datetime.now())
    template.SeriesNumber = 3
    template.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    template.ScanningSequence, template.SequenceVariant, template.ScanOptions = "GR", "SP", ""
    template.MRAcquisitionType = "3D"
    template.RepetitionTime, template.EchoTime, template.EchoTrainLength = "20", "4", "1"
    template.FlipAngle, template.MagneticFieldStrength, template.ImagedNucleus = "25", "1.5", "1H"
    return _write_slices(np.rint(values).astype(np.uint16), np.asarray(affine, dtype=float), template,
                         out_dir=out_dir, file_pattern="MR_{:04d}.dcm", overwrite=overwrite)
