"""Paired 2-D images (e.g. single-energy -> dual-energy DRRs) on disk: find, read, write.

Sources of pairs, each giving a list of dicts ``{"subject_id", "image_id", key: path, ...}`` ready for
a MONAI ``Dataset``:

- a manifest CSV (:func:`read_paired_manifest`), with one path column per key (relative paths are
  resolved against the CSV's folder) and optional ``subject_id`` / ``projection_id`` / ``split``;
- a folder with one sub-folder per key holding files of the same names (:func:`find_paired_images`,
  the layout :mod:`pipeline.xray.drr_dataset` writes: ``OUT/se/x.nii.gz`` pairs with ``OUT/de_soft/x.nii.gz``).

File formats (by suffix): PNG 8- or 16-bit greyscale (PIL), and NIfTI (nibabel) holding ``(H, W)``,
``(H, W, 1)`` or ``(1, H, W)``. :func:`load_image_2d` / :class:`LoadPairedImaged` return ``(1, H, W)``
float32 with axis 0 of the stored array as rows (H): what PIL gives for PNG and what
:func:`save_image_2d` stores in NIfTI. PNG values are scaled to physical units by ``png_scale``
(``value = count * png_scale``); the default ``None`` maps the type's full range to [0, 1]
(8-bit / 255, 16-bit / 65535).

Why not MONAI ``LoadImage``: its PIL reader returns ``(W, H)`` (reverse indexing) while its NIfTI
reader returns the stored order, so pairs mixing formats would come back transposed to each other,
and it applies no bit-depth scaling. This module keeps one convention for both formats.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_path, full_suffix
from pipeline.io.geometry import NIFTI_SUFFIXES

PNG_SUFFIXES = (".png",)
IMAGE_SUFFIXES = PNG_SUFFIXES + NIFTI_SUFFIXES
DEFAULT_KEYS: tuple[str, ...] = ("se", "de_soft", "de_bone")


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


def load_image_2d(path: str | os.PathLike, *, png_scale: float | None = None) -> np.ndarray:
    """Read one 2-D image as ``(1, H, W)`` float32.

    PNG: 8-bit (L) or 16-bit (I;16) greyscale; counts times ``png_scale``, or / (2**bits - 1) when None.
    NIfTI: values as stored (scl_slope applied), array ``(H, W)``, ``(H, W, 1)`` or ``(1, H, W)``.
    Raises ``ValueError`` naming the file for colour PNGs, non-2-D arrays and NaN/inf values.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in PNG_SUFFIXES:
        with Image.open(path) as img:
            if img.mode not in ("L", "I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"{path}: PNG mode {img.mode!r} is not 8/16-bit greyscale")
            counts = np.asarray(img)
        if counts.dtype == np.uint8:
            full_scale = 255.0
        elif counts.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")) or img.mode.startswith("I"):
            full_scale = 65535.0
        else:  # pragma: no cover - PIL returns uint8/uint16/int32 for the modes allowed above
            raise ValueError(f"{path}: unexpected PNG pixel type {counts.dtype}")
        scale = png_scale if png_scale is not None else 1.0 / full_scale
        array = counts.astype(np.float32) * np.float32(scale)
    elif suffix in NIFTI_SUFFIXES:
        array = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        elif array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
    else:
        raise ValueError(f"{path}: unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)})")
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: contains NaN or infinite values")
    return np.ascontiguousarray(array[None], dtype=np.float32)


def save_image_2d(image: np.ndarray | torch.Tensor, path: str | os.PathLike, *,
                  png_scale: float | None = None, pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
                  overwrite: bool = False) -> Path:
    """Write ``(H, W)`` or ``(1, H, W)`` atomically (refuses to overwrite unless ``overwrite``).

    NIfTI: float32 ``(H, W)`` with affine diag(row pitch, col pitch, 1) mm. PNG: 16-bit,
    ``count = round(value / png_scale)`` (``png_scale`` required), clipped to [0, 65535] - so a
    value above ``65535 * png_scale`` saturates; :func:`load_image_2d` with the same ``png_scale``
    inverts it to within ``png_scale / 2``.
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
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix in NIFTI_SUFFIXES:
            affine = np.diag([float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]), 1.0, 1.0])
            img = nib.Nifti1Image(array, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            img.header.set_xyzt_units("mm")
            nib.save(img, tmp)
        elif suffix in PNG_SUFFIXES:
            if png_scale is None or png_scale <= 0:
                raise ValueError(f"{path}: 16-bit PNG needs png_scale > 0 (physical units per count)")
            counts = np.clip(np.rint(array / png_scale), 0, 65535).astype(np.uint16)
            Image.fromarray(counts).save(tmp, format="PNG")
        else:
            raise ValueError(f"{path}: unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)})")
    return path


def read_paired_manifest(manifest: str | os.PathLike, *, keys: Sequence[str] = DEFAULT_KEYS,
                         split: str | None = None, check_files: bool = True) -> list[dict[str, Any]]:
    """Rows of a pair manifest CSV as dicts, paths made absolute; only ``split`` rows when given.

    Required columns: ``keys``. Missing ``subject_id`` / ``projection_id`` are filled from the row.
    Raises :class:`InputError` naming the subject and file for a missing file (``check_files``) or column.
    """
    manifest = Path(manifest)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise ValueError(f"{manifest}: missing column(s) {missing}; has {list(table.columns)}")
    if split is not None:
        if "split" not in table.columns:
            raise ValueError(f"{manifest}: no 'split' column to select {split!r}")
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
            path = Path(row[key])
            path = path if path.is_absolute() else manifest.parent / path
            if check_files and not path.exists():
                raise InputError(f"{subject}: {key} file {path} does not exist (manifest {manifest})")
            record[key] = str(path)
        records.append(record)
    return records


def find_paired_images(folder: str | os.PathLike, *, keys: Sequence[str] = DEFAULT_KEYS) -> list[dict[str, Any]]:
    """Pairs from ``folder/<key>/<name>.<png|nii|nii.gz>``, matched by ``<name>`` across all keys.

    Raises ``ValueError`` listing names that lack a partner (a half pair is never silently dropped).
    ``subject_id`` is the part of the name before ``_p`` when present (``CXR001_p003`` -> ``CXR001``).
    """
    folder = Path(folder)
    by_key: dict[str, dict[str, Path]] = {}
    for key in keys:
        sub = folder / key
        if not sub.is_dir():
            raise ValueError(f"{folder}: no sub-folder {key!r} (expected one per key: {list(keys)})")
        files = [p for p in sorted(sub.iterdir()) if p.is_file() and _suffix(p) in IMAGE_SUFFIXES
                 and not p.name.startswith(".")]
        by_key[key] = {_stem(p): p for p in files}
    names = set().union(*(set(v) for v in by_key.values()))
    unpaired = sorted(n for n in names if any(n not in by_key[k] for k in keys))
    if unpaired:
        raise ValueError(f"{folder}: {len(unpaired)} image(s) without a partner in every key folder, "
                         f"e.g. {unpaired[:5]}")
    if not names:
        raise ValueError(f"{folder}: no images found under {[str(folder / k) for k in keys]}")
    return [{"subject_id": name.rsplit("_p", 1)[0] if "_p" in name else name, "image_id": name,
             **{k: str(by_key[k][name]) for k in keys}} for name in sorted(names)]


class LoadPairedImaged(MapTransform):
    """Replace the paths under ``keys`` by ``(1, H, W)`` float32 MetaTensors (:func:`load_image_2d`).

    ``png_scale`` may be one float for all keys or a ``{key: scale}`` mapping. Raises :class:`InputError`
    naming the subject when the images of one sample differ in shape.
    """

    def __init__(self, keys: KeysCollection, *, png_scale: float | Mapping[str, float] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.png_scale = png_scale

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shapes = {}
        for key in self.key_iterator(d):
            scale = self.png_scale.get(key) if isinstance(self.png_scale, Mapping) else self.png_scale
            path = d[key]
            array = load_image_2d(path, png_scale=scale)
            d[key] = MetaTensor(torch.from_numpy(array), meta={"filename_or_obj": str(path)})
            shapes[key] = tuple(array.shape)
        if len(set(shapes.values())) > 1:
            raise InputError(f"{d.get('subject_id', '?')}: paired images differ in shape: {shapes}")
        return d


__all__: Sequence[str] = [
    "DEFAULT_KEYS", "IMAGE_SUFFIXES", "image_suffix", "image_stem", "load_image_2d", "save_image_2d",
    "read_paired_manifest", "find_paired_images", "LoadPairedImaged",
]
