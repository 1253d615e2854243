"""Paired 2-D images (SE -> DE DRRs, MR -> CT slices) on disk: find, read, write.

Sources of pairs, each giving a list of dicts ``{"subject_id", "image_id", key: path, ...}`` ready for
a MONAI ``Dataset``:

- a manifest CSV (:func:`read_paired_manifest`), with one path column per key (relative paths are
  resolved against the CSV's folder) and optional ``subject_id`` / ``projection_id`` / ``split``;
- a folder with one sub-folder per key holding files of the same names (:func:`find_paired_images`,
  the layout :mod:`pipeline.xray.drr_dataset` writes: ``OUT/se/x.nii.gz`` pairs with ``OUT/de_soft/x.nii.gz``,
  and the layout of the Kaggle brain MR/CT sets: ``DIR/mr/x.jpg`` with ``DIR/ct/x.jpg``).

File formats (by suffix, any case): PNG 8- or 16-bit and JPEG 8-bit (PIL), greyscale or colour, and
NIfTI (nibabel) holding ``(H, W)``, ``(H, W, 1)`` or ``(1, H, W)``. A scan saved in colour (RGB, RGBA,
palette: the Kaggle sets are often RGB JPG) is read as greyscale when its colour channels agree (within
:data:`COLOUR_TOLERANCE` counts, what JPEG decoders' rounding may leave); an image whose channels differ
is not a greyscale scan and is refused, since any grey conversion of it would be a guess. Alpha is
ignored. 16-bit colour PNGs are read with SimpleITK: PIL truncates them to 8 bits.

:func:`load_image_2d` / :class:`LoadPairedImaged` return ``(1, H, W)`` float32 with axis 0 of the stored
array as rows (H): what PIL gives for PNG/JPEG and what :func:`save_image_2d` stores in NIfTI. PNG/JPEG
counts are scaled to physical units by ``png_scale`` (``value = count * png_scale``); the default
``None`` maps the file's full range to [0, 1] (8-bit / 255, 16-bit / 65535). :func:`image_info` reads
only the header (format, bit depth, shape): what a prediction must be written like.

Every problem with a file is an :class:`~pipeline.errors.InputError` naming the subject (when given), the
file and the problem.

Why not MONAI ``LoadImage``: its PIL reader returns ``(W, H)`` (reverse indexing) while its NIfTI
reader returns the stored order, so pairs mixing formats would come back transposed to each other,
and it applies no bit-depth scaling. This module keeps one convention for every format.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from nibabel.filebasedimages import ImageFileError
from PIL import Image

from pipeline.errors import InputError, subject_prefix
from pipeline.io.atomic import atomic_path, full_suffix
from pipeline.io.geometry import NIFTI_SUFFIXES

PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
IMAGE_SUFFIXES = PNG_SUFFIXES + JPEG_SUFFIXES + NIFTI_SUFFIXES
DEFAULT_KEYS: tuple[str, ...] = ("se", "de_soft", "de_bone")
#: Largest difference between the colour channels of one pixel (counts at 8 bits; x 257 at 16 bits) still
#: read as a grey value, their mean: decoders may round the channels of a grey JPEG differently.
COLOUR_TOLERANCE = 2
#: JPEG quality of written JPEGs (lossy: the default outputs of JPEG inputs are lossless PNG instead).
JPEG_QUALITY = 95
_GREY_MODES = {"L": 8, "LA": 8, "1": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 16}
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA")
_READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, SyntaxError, ImageFileError, zlib.error)


@dataclass(frozen=True)
class ImageInfo:
    """What an image file holds, from its header alone.

    ``kind``: ``"png"``, ``"jpeg"`` or ``"nifti"``; ``suffix``: as on disk, lower case (``.jpg``,
    ``.nii.gz``); ``shape``: ``(H, W)``; ``bits``: 8 or 16 for PNG/JPEG counts, None for NIfTI (values as
    stored); ``channels``: 1 for greyscale, 3 for colour (alpha not counted).
    """

    kind: str
    suffix: str
    shape: tuple[int, int]
    bits: int | None
    channels: int


def _suffix(path: Path) -> str:
    return full_suffix(path).lower()


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))]


def image_suffix(path: str | os.PathLike) -> str:
    """Lower-case image suffix, double suffixes kept: ``x.nii.gz`` -> ``.nii.gz``, ``x.PNG`` -> ``.png``."""
    return _suffix(Path(path))


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``CXR001_p003.nii.gz`` -> ``CXR001_p003``."""
    return _stem(Path(path))


def subject_from_image_id(image_id: str) -> str:
    """The subject of an image: the name before its last ``_p`` (``CXR001_p003`` -> ``CXR001``), else the name."""
    return image_id.rsplit("_p", 1)[0] if "_p" in image_id else image_id


def scale_for(png_scale: float | Mapping[str, float] | None, key: str) -> float | None:
    """``png_scale`` of ``key``: one float for every key, or a ``{key: scale}`` mapping (absent key: None)."""
    return png_scale.get(key) if isinstance(png_scale, Mapping) else png_scale


def _pil_info(img: Image.Image, suffix: str) -> ImageInfo:
    """:class:`ImageInfo` of an opened PIL image; ``ValueError`` for modes that are not a grey scan."""
    tile = img.tile[0] if img.tile else None
    raw_mode = tile[3] if tile and isinstance(tile[3], str) else img.mode  # PNG: e.g. "RGB;16B"
    kind = "png" if suffix in PNG_SUFFIXES else "jpeg"
    shape = (img.size[1], img.size[0])
    if raw_mode.startswith("LA;16"):
        raise ValueError("16-bit greyscale + alpha PNG is not supported (it would be read as 8 bits); "
                         "save it without the alpha channel")
    if img.mode in _GREY_MODES:
        return ImageInfo(kind, suffix, shape, _GREY_MODES[img.mode], 1)
    if img.mode in _COLOUR_MODES:
        return ImageInfo(kind, suffix, shape, 16 if ";16" in raw_mode else 8, 3)
    raise ValueError(f"{img.mode} images are not supported (greyscale, RGB or RGBA, 8 or 16 bits per channel)")


def _nifti_array(path: Path, *, header_only: bool) -> tuple[tuple[int, ...], np.ndarray | None]:
    image = nib.load(path)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 3 and shape[-1] == 1:
        shape = shape[:2]
    elif len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D image, got shape {tuple(image.shape)}")
    return shape, None if header_only else np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)


def _checked(path: str | os.PathLike, subject_id: str | None, read):
    """Run ``read(path)``; any problem with the file becomes an :class:`InputError` naming subject and file."""
    path = Path(path)
    where = f"{subject_prefix(subject_id)}{path}"
    suffix = _suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{where}: unsupported file type (expected PNG, JPEG or NIfTI: {', '.join(IMAGE_SUFFIXES)})")
    if not path.is_file():
        raise InputError(f"{where}: no such file")
    try:
        return read(path, suffix)
    except InputError:
        raise
    except _READ_ERRORS as error:
        raise InputError(f"{where}: {' '.join(str(error).split()) or type(error).__name__}") from error


def image_info(path: str | os.PathLike, *, subject_id: str | None = None) -> ImageInfo:
    """Header of one 2-D image (nothing decoded): format, shape, bit depth, channels. InputError when
    the file is missing, unreadable, not 2-D or of an unsupported kind."""
    def read(path: Path, suffix: str) -> ImageInfo:
        if suffix in NIFTI_SUFFIXES:
            return ImageInfo("nifti", suffix, _nifti_array(path, header_only=True)[0], None, 1)
        with Image.open(path) as img:
            return _pil_info(img, suffix)
    return _checked(path, subject_id, read)


def _grey_counts(path: Path, suffix: str) -> tuple[np.ndarray, ImageInfo]:
    """``(H, W)`` float64 counts of a PNG/JPEG (colour channels checked and averaged) and its info."""
    with Image.open(path) as img:
        info = _pil_info(img, suffix)
        if info.channels == 3 and info.bits == 16:  # PIL would truncate to 8 bits
            import SimpleITK as sitk

            counts = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        elif img.mode in ("P", "PA", "1"):
            counts = np.asarray(img.convert("RGBA" if info.channels == 3 else "L"))
        else:
            counts = np.asarray(img)
    counts = counts.astype(np.float64)
    if counts.ndim == 3:
        colour = counts[..., :3] if info.channels == 3 else counts[..., :1]  # alpha ignored
        spread = colour.max(axis=-1) - colour.min(axis=-1)
        tolerance = COLOUR_TOLERANCE * (2 ** info.bits - 1) / 255
        if spread.max() > tolerance:
            raise ValueError(f"colour image: its R, G, B channels differ (by up to {spread.max():.0f} counts, at "
                             f"{int((spread > tolerance).sum())} pixels); expected a greyscale scan (equal channels)")
        counts = colour.mean(axis=-1)
    if counts.shape != info.shape or counts.min() < 0 or counts.max() > 2 ** info.bits - 1:
        raise ValueError(f"unexpected pixel data {counts.shape} in [{counts.min()}, {counts.max()}] "
                         f"for a {info.bits}-bit {info.shape[1]}x{info.shape[0]} image")
    return counts, info


def load_image_2d(path: str | os.PathLike, *, png_scale: float | None = None,
                  subject_id: str | None = None) -> np.ndarray:
    """Read one 2-D image as ``(1, H, W)`` float32.

    PNG/JPEG: greyscale (colour read as grey, see the module docstring); counts times ``png_scale``, or
    / (2**bits - 1) when None. NIfTI: values as stored (scl_slope applied). Raises :class:`InputError`
    (subject, file, problem) for a missing or unreadable file, a colour image, a non-2-D array, NaN/inf.
    """
    def read(path: Path, suffix: str) -> np.ndarray:
        if suffix in NIFTI_SUFFIXES:
            array = _nifti_array(path, header_only=False)[1]
        else:
            counts, info = _grey_counts(path, suffix)
            array = counts * (png_scale if png_scale is not None else 1.0 / (2 ** info.bits - 1))
        if not np.isfinite(array).all():
            raise ValueError("contains NaN or infinite values")
        return np.ascontiguousarray(array[None], dtype=np.float32)
    return _checked(path, subject_id, read)


def save_image_2d(image: np.ndarray | torch.Tensor, path: str | os.PathLike, *,
                  png_scale: float | None = None, bits: int = 16, pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
                  overwrite: bool = False) -> Path:
    """Write ``(H, W)`` or ``(1, H, W)`` atomically (refuses to overwrite unless ``overwrite``), format by suffix.

    NIfTI: float32 ``(H, W)`` with affine diag(row pitch, col pitch, 1) mm. PNG (``bits`` 8 or 16) and
    JPEG (8 bits, quality :data:`JPEG_QUALITY`, lossy), greyscale: ``count = round(value / png_scale)``
    (None: ``value * (2**bits - 1)``, the inverse of :func:`load_image_2d`'s default), clipped to the
    counts of ``bits``, so values beyond the range saturate; :func:`load_image_2d` with the same scale
    inverts it to within half a count (PNG).
    """
    path = Path(path)
    array = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected (H, W) or (1, H, W), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: refusing to write NaN or infinite values")
    suffix = _suffix(path)
    if suffix in JPEG_SUFFIXES and bits != 8 or bits not in (8, 16):
        raise ValueError(f"{path}: cannot write {bits}-bit {suffix} (PNG: 8 or 16 bits, JPEG: 8)")
    if png_scale is not None and not png_scale > 0:
        raise ValueError(f"{path}: png_scale must be > 0 (physical units per count), got {png_scale}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix in NIFTI_SUFFIXES:
            affine = np.diag([float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]), 1.0, 1.0])
            img = nib.Nifti1Image(array, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            img.header.set_xyzt_units("mm")
            nib.save(img, tmp)
        elif suffix in PNG_SUFFIXES + JPEG_SUFFIXES:
            top = 2 ** bits - 1
            counts = np.clip(np.rint(array / png_scale if png_scale else array * top), 0, top)
            pil = Image.fromarray(counts.astype(np.uint8 if bits == 8 else np.uint16))
            if suffix in PNG_SUFFIXES:
                pil.save(tmp, format="PNG")
            else:
                pil.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        else:
            raise ValueError(f"{path}: unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)})")
    return path


def read_paired_manifest(manifest: str | os.PathLike, *, keys: Sequence[str] = DEFAULT_KEYS,
                         split: str | None = None, check_files: bool = True) -> list[dict[str, Any]]:
    """Rows of a pair manifest CSV as dicts, paths made absolute; only ``split`` rows when given.

    Required columns: ``keys``. Missing ``subject_id`` / ``projection_id`` are filled from the row.
    Raises :class:`InputError` naming the subject and file for a missing column, and with ``check_files``
    for an empty cell or a missing file.
    """
    manifest = Path(manifest)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise InputError(f"{manifest}: missing column(s) {missing}; has {list(table.columns)}")
    if split is not None:
        if "split" not in table.columns:
            raise InputError(f"{manifest}: no 'split' column to select {split!r}")
        table = table[table["split"] == split]
    records = []
    for index, row in table.iterrows():
        subject = row.get("subject_id") or f"row{index}"
        record: dict[str, Any] = {"subject_id": subject,
                                  "image_id": row.get("projection_id") or f"{subject}_{index}"}
        for column in table.columns:
            if column not in keys and column not in record:
                record[column] = row[column]
        for key in keys:
            if check_files and not row[key].strip():  # would resolve to the manifest's own folder
                raise InputError(f"{subject}: no {key} for {record['image_id']} (empty cell in {manifest})")
            path = Path(row[key])
            path = path if path.is_absolute() else manifest.parent / path
            if check_files and not path.exists():
                raise InputError(f"{subject}: {key} file {path} does not exist (manifest {manifest})")
            record[key] = str(path)
        records.append(record)
    return records


def find_images(folder: str | os.PathLike) -> dict[str, Path]:
    """``{image_id: path}`` of the images directly in ``folder`` (hidden files and other types left out).

    Raises :class:`InputError` when two files are one image (``a.png`` and ``a.jpg``) and when there is
    no image at all (naming the file types found instead, e.g. ``.tif``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    images: dict[str, Path] = {}
    others: set[str] = set()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if _suffix(path) not in IMAGE_SUFFIXES:
            others.add(path.suffix.lower() or path.name)
        elif _stem(path) in images:
            raise InputError(f"{subject_from_image_id(_stem(path))}: two files for image {_stem(path)!r} in "
                             f"{folder}: {images[_stem(path)].name} and {path.name}; keep one")
        else:
            images[_stem(path)] = path
    if not images:
        found = f"; found only {', '.join(sorted(others))} files" if others else ""
        raise InputError(f"{folder}: no images (PNG, JPEG or NIfTI){found}")
    return images


def find_paired_images(folder: str | os.PathLike, *, keys: Sequence[str] = DEFAULT_KEYS) -> list[dict[str, Any]]:
    """Pairs from ``folder/<key>/<name>.<png|jpg|nii|nii.gz>``, matched by ``<name>`` across all keys
    (the formats of one pair may differ). ``subject_id``: :func:`subject_from_image_id`.

    Raises :class:`InputError` for a missing key folder, a key folder without images, and names that lack
    a partner (a half pair is never silently dropped).
    """
    folder = Path(folder)
    missing = [key for key in keys if not (folder / key).is_dir()]
    if missing:
        raise InputError(f"{folder}: no sub-folder {missing[0]!r} (expected one per key: {list(keys)})")
    by_key = {key: find_images(folder / key) for key in keys}
    names = set().union(*(set(v) for v in by_key.values()))
    unpaired = sorted(n for n in names if any(n not in by_key[k] for k in keys))
    if unpaired:
        where = {n: [k for k in keys if n in by_key[k]] for n in unpaired[:3]}
        raise InputError(f"{subject_from_image_id(unpaired[0])}: {len(unpaired)} image(s) under {folder} without a "
                         f"partner in every key folder {list(keys)}, e.g. {'; '.join(f'{n} only in {k}' for n, k in where.items())}")
    return [{"subject_id": subject_from_image_id(name), "image_id": name, **{k: str(by_key[k][name]) for k in keys}}
            for name in sorted(names)]


def check_pair_headers(records: Sequence[Mapping[str, Any]], *, keys: Sequence[str]) -> None:
    """Read the header of every image of ``records`` (cheap: nothing decoded) so that a missing, unreadable,
    unsupported or mismatched file is refused before training or inference starts (:class:`InputError`
    naming the subject and file)."""
    for record in records:
        shapes = {key: image_info(record[key], subject_id=record.get("subject_id")).shape for key in keys}
        if len(set(shapes.values())) > 1:
            sizes = ", ".join(f"{k} {h}x{w} ({Path(record[k]).name})" for k, (h, w) in shapes.items())
            raise InputError(f"{record.get('subject_id', '?')}: the images of {record.get('image_id', '?')} differ "
                             f"in size (rows x columns): {sizes}")


class LoadPairedImaged(MapTransform):
    """Replace the paths under ``keys`` by ``(1, H, W)`` float32 MetaTensors (:func:`load_image_2d`).

    ``png_scale`` may be one float for all keys or a ``{key: scale}`` mapping. Raises :class:`InputError`
    naming the subject for an unreadable image and when the images of one sample differ in shape.
    """

    def __init__(self, keys: KeysCollection, *, png_scale: float | Mapping[str, float] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.png_scale = png_scale

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shapes = {}
        for key in self.key_iterator(d):
            path = d[key]
            array = load_image_2d(path, png_scale=scale_for(self.png_scale, key), subject_id=d.get("subject_id"))
            d[key] = MetaTensor(torch.from_numpy(array), meta={"filename_or_obj": str(path)})
            shapes[key] = tuple(array.shape)
        if len(set(shapes.values())) > 1:
            raise InputError(f"{d.get('subject_id', '?')}: paired images differ in shape: {shapes}")
        return d


__all__: Sequence[str] = [
    "DEFAULT_KEYS", "IMAGE_SUFFIXES", "PNG_SUFFIXES", "JPEG_SUFFIXES", "COLOUR_TOLERANCE", "JPEG_QUALITY", "ImageInfo",
    "image_suffix", "image_stem", "subject_from_image_id", "scale_for", "image_info", "load_image_2d", "save_image_2d",
    "read_paired_manifest", "find_images", "find_paired_images", "check_pair_headers", "LoadPairedImaged",
]
