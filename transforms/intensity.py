"""Intensity mappings: the CT HU window and its exact inverse, and MR normalisation.

The networks work in [-1, 1] (tanh output). CT is mapped linearly from the HU window
[HU_MIN, HU_MAX] = [-1024, 3000] HU (the SynthRAD2023 evaluation window) to [-1, 1]; the inverse maps
back to HU. MR has no absolute scale, so it is normalised per subject from robust statistics inside
the body mask.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform

from transforms.hu import HU_AIR, HU_MAX, HU_MIN

ArrayLike = Any  # numpy array or torch tensor; functions return the same kind


def _clip(x: ArrayLike, lo: float, hi: float) -> ArrayLike:
    return torch.clamp(x, lo, hi) if isinstance(x, torch.Tensor) else np.clip(x, lo, hi)


def hu_to_unit_range(hu: ArrayLike, *, clip: bool = True) -> ArrayLike:
    """HU -> [-1, 1]: -1024 HU -> -1, 3000 HU -> +1 (values outside the window are clipped)."""
    hu = _clip(hu, HU_MIN, HU_MAX) if clip else hu
    return (hu - HU_MIN) / (HU_MAX - HU_MIN) * 2.0 - 1.0  # this order hits -1 and +1 exactly


def unit_range_to_hu(unit: ArrayLike, *, clip: bool = True) -> ArrayLike:
    """[-1, 1] -> HU, the exact inverse of :func:`hu_to_unit_range` inside the window."""
    unit = _clip(unit, -1.0, 1.0) if clip else unit
    return unit_to_window(unit, HU_MIN, HU_MAX)


def window_to_unit(x: ArrayLike, lo: float, hi: float) -> ArrayLike:
    """Physical values ``[lo, hi]`` -> ``[-1, 1]``, linear and not clipped (values outside leave [-1, 1]): the
    X-ray windows (``pipeline.xray.data.IntensityWindow``) and the generator that subtracts in physical units
    (``networks.decomposition``)."""
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


def unit_to_window(unit: ArrayLike, lo: float, hi: float) -> ArrayLike:
    """``[-1, 1]`` -> physical ``[lo, hi]``, the exact inverse of :func:`window_to_unit` (not clipped)."""
    return (unit + 1.0) * ((hi - lo) / 2.0) + lo


def normalize_mr(
    mr: ArrayLike, mask: ArrayLike | None = None, *, upper_percentile: float = 99.5
) -> ArrayLike:
    """Scale an MR volume to [-1, 1]: zero signal -> -1, the ``upper_percentile`` inside the mask -> +1.

    Zero is kept as the anchor (not a low percentile) because air and cortical bone both have
    near-zero signal in MR; mapping them to -1 keeps that physical floor identical across subjects.
    Values above the percentile are clipped.
    """
    values = mr[mask > 0] if mask is not None and (mask > 0).sum() > 0 else mr.reshape(-1)
    if isinstance(values, torch.Tensor):  # numpy's partition-based percentile is ~10x faster than torch.quantile
        values = values.detach().cpu().numpy()
    scale = float(np.percentile(values, upper_percentile))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("MR normalisation failed: no positive signal inside the body mask")
    return _clip(mr * (2.0 / scale) - 1.0, -1.0, 1.0)


class HUWindowd(MapTransform, InvertibleTransform):
    """CT in HU -> [-1, 1] (see :func:`hu_to_unit_range`); ``inverse`` maps [-1, 1] back to HU.

    Shapes are unchanged (any C, spatial...). The inverse needs no stored state, so it can also be
    applied to a prediction that never went through the forward (``inverse`` of a network output).
    """

    def __init__(self, keys: KeysCollection, *, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = hu_to_unit_range(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = unit_range_to_hu(d[key])
        return d


class NormalizeMRd(MapTransform):
    """MR (any shape) -> [-1, 1] per subject with :func:`normalize_mr`, statistics inside ``mask_key``."""

    def __init__(
        self,
        keys: KeysCollection,
        *,
        mask_key: str | None = "mask",
        upper_percentile: float = 99.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.upper_percentile = upper_percentile

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mask = d.get(self.mask_key) if self.mask_key else None
        for key in self.key_iterator(d):
            d[key] = normalize_mr(d[key], mask, upper_percentile=self.upper_percentile)
        return d


__all__: Sequence[str] = [
    "HU_MIN", "HU_MAX", "HU_AIR", "hu_to_unit_range", "unit_range_to_hu", "window_to_unit", "unit_to_window",
    "normalize_mr",
    "HUWindowd", "NormalizeMRd",
]
