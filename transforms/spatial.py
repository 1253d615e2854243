"""Loading and geometry: files -> channel-first RAS tensors (optionally resampled), and back.

Every step is a MONAI invertible transform, so a prediction made on the network grid goes back to
the input file's own grid (shape and affine) with MONAI's ``Invertd``. Affines are RAS (MONAI and
nibabel convention); ITK formats (.mha, .mhd, .nrrd) store LPS and MONAI's ``ITKReader`` converts them.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    EnsureChannelFirstd,
    Invertd,
    InvertibleTransform,
    LoadImaged,
    MapTransform,
    Orientationd,
    Spacingd,
)

from pipeline.io.geometry import read_geometry

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@contextlib.contextmanager
def quiet_nvimgcodec_fallback() -> Iterator[None]:
    """Build MONAI loaders without the two-line notice that nvImageCodec is not installed.

    ``LoadImage`` constructs every reader MONAI has; its nvImageCodec DICOM reader then logs a warning and
    warns again wherever that package is missing (every CPU install), once per loader, though DICOM goes
    through pydicom and ITK as it always did. Only that notice is silenced, and only while building.
    """
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin")
            yield
    finally:
        plugin_log.setLevel(level)


def load_oriented(
    keys: Sequence[str],
    *,
    target_spacing: Sequence[float] | None = None,
    image_keys: Sequence[str] = ("mr", "ct"),
    label_keys: Sequence[str] = ("mask",),
    axcodes: str = "RAS",
    allow_missing_keys: bool = True,
) -> list[MapTransform]:
    """Transforms that load ``keys`` as ``(1, X, Y, Z)`` float32 MetaTensors oriented to ``axcodes``.

    - ``LoadImaged`` with MONAI's reader choice by file suffix: NIfTI (.nii, .nii.gz) through
      nibabel, .mha/.mhd/.nrrd through ITK (LPS converted to RAS). Voxels become float32.
    - ``EnsureChannelFirstd``; ``Orientationd(axcodes)`` (axis flips/permutations only: exact).
    - when ``target_spacing`` (mm, per axis after orientation) is given, ``Spacingd``: bilinear for
      ``image_keys``, nearest for ``label_keys``. The grid keeps the input's rotation (oblique stays
      oblique); only voxel size and count change.

    Missing keys (e.g. no mask) are skipped when ``allow_missing_keys``. Every key must be listed in
    ``image_keys`` or ``label_keys`` so its interpolation is never a guess.
    """
    keys = list(keys)
    unknown = [k for k in keys if k not in image_keys and k not in label_keys]
    if unknown:
        raise ValueError(f"load_oriented: keys {unknown} are in neither image_keys {tuple(image_keys)} "
                         f"nor label_keys {tuple(label_keys)}; say how each is interpolated")
    with quiet_nvimgcodec_fallback():
        loader = LoadImaged(keys, image_only=True, dtype=np.float32, allow_missing_keys=allow_missing_keys)
    transforms: list[MapTransform] = [
        loader,
        EnsureChannelFirstd(keys, allow_missing_keys=allow_missing_keys),
        # Labels pinned to MONAI's RAS convention: every affine is RAS after loading (ITK's LPS converted).
        Orientationd(keys, axcodes=axcodes, labels=RAS_LABELS, allow_missing_keys=allow_missing_keys),
    ]
    if target_spacing is not None:
        spacing = tuple(float(s) for s in target_spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"target_spacing must be 3 positive numbers (mm), got {target_spacing!r}")
        modes = ["nearest" if k in label_keys else "bilinear" for k in keys]
        transforms.append(
            Spacingd(keys, pixdim=spacing, mode=modes, padding_mode="border", allow_missing_keys=allow_missing_keys)
        )
    return transforms


def invert_to_input_grid(
    *,
    pred_key: str | Sequence[str],
    orig_key: str,
    preprocessing: InvertibleTransform,
    nearest_interp: bool | Sequence[bool] = False,
) -> Invertd:
    """``Invertd`` that puts ``pred_key`` (a prediction on the network grid, shaped like ``orig_key``)
    back on the grid of the file ``orig_key`` was loaded from, replaying ``orig_key``'s operations.

    ``preprocessing`` is the ``Compose`` that produced ``orig_key``. Interpolation is the forward one
    (bilinear for images) unless ``nearest_interp`` (use ``True`` for a label-valued prediction).
    The prediction takes ``orig_key``'s meta, so its affine after inversion is the file's affine.
    """
    pred_keys = [pred_key] if isinstance(pred_key, str) else list(pred_key)
    return Invertd(
        keys=pred_keys,
        transform=preprocessing,
        orig_keys=[orig_key] * len(pred_keys),
        nearest_interp=nearest_interp,
        to_tensor=True,
    )


def affine_matches_file(image: MetaTensor | np.ndarray | torch.Tensor, path: str | Path, *, atol: float = 1e-4) -> bool:
    """True when ``image``'s affine (a MetaTensor, or a 4x4 affine) equals the affine in ``path``'s header."""
    affine = image.affine if isinstance(image, MetaTensor) else image
    affine = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    return bool(np.allclose(affine.astype(np.float64), read_geometry(path).affine, atol=atol))


__all__: Sequence[str] = [
    "load_oriented", "invert_to_input_grid", "affine_matches_file",
]
