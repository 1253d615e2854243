"""Image geometry: the ONE header reader (:func:`read_geometry`), the LPS/RAS conversion and grid checks.

Geometry follows nibabel: shape in file voxel order ``(X, Y, Z)``, a 4x4 voxel index -> world affine in
RAS+ mm. ITK formats (.mha/.mhd/.nrrd) and DICOM store LPS direction/origin; :func:`itk_affine_ras`
converts them with :data:`LPS_TO_RAS`. Only headers are read here, so a whole dataset is checked in
seconds.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipeline.errors import InputError, subject_prefix

__all__ = [
    "LPS_TO_RAS",
    "NIFTI_SUFFIXES",
    "VOLUME_SUFFIXES",
    "Geometry",
    "check_orientation",
    "check_same_grid",
    "drop_trailing_singletons",
    "is_nifti",
    "itk_affine_ras",
    "read_geometry",
]

# RAS <-> LPS: flip the sign of x and y (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: File suffixes accepted for volumes (NIfTI via nibabel, the rest via SimpleITK).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def drop_trailing_singletons(shape: Sequence[int]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions beyond the third (NIfTI ``(X, Y, Z, 1)`` is a 3-D volume)."""
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
        form_disagreement_mm: for a NIfTI with both qform and sform set, how far apart (mm, at the far
            corner) the two put the volume; 0 otherwise. Readers differ in which they use, so a
            disagreement makes the grid ambiguous.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    affine: np.ndarray = field(repr=False)
    ndim: int
    path: Path | None = None
    dtype: str | None = None
    has_orientation: bool = True
    form_disagreement_mm: float = 0.0

    @property
    def orientation(self) -> str:
        """Axis codes of the affine, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.orientations.aff2axcodes(self.affine))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``shape`` without trailing singleton axes beyond the third (NIfTI ``(X, Y, Z, 1)`` is 3-D)."""
        return drop_trailing_singletons(self.shape)

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "image"


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


def _far_corner_distance(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between where affines ``a`` and ``b`` put the corners of a volume of ``shape``."""
    extent = np.asarray((tuple(shape) + (1, 1, 1))[:3], dtype=float) - 1.0
    corners = np.array(np.meshgrid(*[[0.0, e] for e in extent], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((np.asarray(a) @ corners - np.asarray(b) @ corners)[:3], axis=0).max())


def check_orientation(geometry: Geometry, *, subject_id: str | None = None, atol_mm: float = 0.01) -> None:
    """Raise :class:`InputError` when the image's world grid is unknown (NIfTI with qform_code = sform_code
    = 0) or ambiguous (qform and sform set but disagreeing by more than ``atol_mm``; a qform stores a
    quaternion in float32, so a DICOM-derived grid can differ from its sform by ~1e-3 mm)."""
    if not geometry.has_orientation:
        raise InputError(f"{subject_prefix(subject_id)}{geometry.name} has neither qform nor sform (qform_code = "
                         f"sform_code = 0): orientation unknown ({geometry.path})")
    if geometry.form_disagreement_mm > atol_mm:
        raise InputError(f"{subject_prefix(subject_id)}{geometry.name}: qform and sform disagree by "
                         f"{geometry.form_disagreement_mm:.3g} mm; readers differ in which they use, so the grid is "
                         f"ambiguous: make them agree ({geometry.path})")


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
        raise InputError(f"{subject_prefix(subject_id)}{path.name} missing ({path})")
    try:
        if is_nifti(path):
            img = nib.load(path)
            header = img.header
            shape = tuple(int(s) for s in header.get_data_shape())
            _check_nifti_size(path, img)
            affine = np.asarray(img.affine, dtype=float)
            codes = (int(header["qform_code"]), int(header["sform_code"])) if "sform_code" in header else (1, 1)
            disagreement = 0.0
            if all(codes):
                disagreement = _far_corner_distance(header.get_qform(), header.get_sform(), shape)
            return Geometry(shape=shape, spacing=_spacing_from_affine(affine), affine=affine, ndim=len(shape),
                            path=path, dtype=str(header.get_data_dtype()), has_orientation=any(codes),
                            form_disagreement_mm=disagreement)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return _itk_geometry(reader, path)
    except InputError:
        raise
    except Exception as e:  # nibabel/gzip/ITK raise many types; all mean "cannot read this file"
        reason = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"{subject_prefix(subject_id)}{path.name} unreadable: {reason} ({path})") from e


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
            f"{subject_prefix(subject_id)}{names[0]} ({a.name}) and {names[1]} ({b.name}) are not on the same grid: "
            + "; ".join(problems)
        )
