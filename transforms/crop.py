"""The compact training cache: what each subject keeps between training crops.

Training crops are cut from these volumes by :mod:`pipeline.data.crop_sampler` (all crops of an iteration in
one batched gather on the training device). Why not MONAI's ``RandCropByPosNegLabeld`` + ``FgBgToIndicesd``:
the cached foreground/background index arrays are int64, one entry per voxel (8 bytes/voxel on top of the
images): at SynthRAD scale (180 subjects of ~10^7 voxels) that alone is ~14 GB per process. Crop centres are
drawn by rejection sampling inside the mask's bounding box (:func:`mask_bounding_box`, a 6-number box) or
the whole volume instead.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

__all__ = ["CompactVolumesd", "MaskBoundingBoxd", "mask_bounding_box"]


def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def mask_bounding_box(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(3, 2)`` int64 ``[start, stop)`` per spatial axis of the voxels ``> 0`` of a ``(1, X, Y, Z)`` mask;
    the whole volume when the mask is empty."""
    m = _as_numpy(mask)[0] > 0
    box = np.zeros((3, 2), dtype=np.int64)
    for axis in range(3):
        present = np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != axis)))
        box[axis] = (present[0], present[-1] + 1) if present.size else (0, m.shape[axis])
    return box


class CompactVolumesd(MapTransform):
    """Store a training subject compactly before it is cached: CT as int16 HU (rounded: CT numbers are
    integers; only a resampled CT loses its sub-HU interpolation), the mask as uint8. The MR stays
    float32. 9 -> 7 bytes per voxel; the crop sampler turns crops back into float32."""

    def __init__(self, *, ct_key: str = "ct", mask_key: str = "mask") -> None:
        super().__init__([ct_key, mask_key], allow_missing_keys=True)
        self.ct_key, self.mask_key = ct_key, mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.ct_key in d:
            ct = torch.as_tensor(d[self.ct_key]).as_subclass(torch.Tensor)
            d[self.ct_key] = torch.round(ct).clamp_(-32768, 32767).to(torch.int16)
        if self.mask_key in d:
            d[self.mask_key] = (torch.as_tensor(d[self.mask_key]).as_subclass(torch.Tensor) > 0).to(torch.uint8)
        return d


class MaskBoundingBoxd(MapTransform):
    """Adds ``<mask_key>_box`` = :func:`mask_bounding_box` (deterministic: computed once, cached)."""

    def __init__(self, mask_key: str = "mask") -> None:
        super().__init__([mask_key])
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[f"{self.mask_key}_box"] = mask_bounding_box(d[self.mask_key])
        return d
