"""Body mask from the MR, for subjects that come without one.

The mask bounds the MR normalisation statistics, the patch sampling and the region where the sCT is
kept (outside it the sCT is set to air). It must contain the whole head including enclosed air
(sinuses, mastoid cells) and bone, both of which are dark in MR, so thresholding is followed by
keeping the largest connected component and filling holes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import FillHoles, MapTransform
from scipy import ndimage

SMOOTHING_SIGMA_VOXELS = 1.0


def otsu_threshold_log(mr: np.ndarray, *, smoothing_sigma: float = SMOOTHING_SIGMA_VOXELS) -> float:
    """Foreground/background threshold of an MR magnitude volume, in the MR's own intensity units.

    Otsu's threshold of log(smoothed MR). Why this and not plain Otsu or a fraction of a percentile:

    - a receive-coil bias field is multiplicative, so in log space it only shifts the tissue mode and
      the threshold between background and tissue stays in the gap between them;
    - the Rician noise floor (background mode ~1.25 sigma) is a separate low mode in log space, so the
      threshold scales with the noise level, whereas ``f * p99`` falls into the noise when SNR is low
      (the whole background then becomes "body");
    - Gaussian smoothing (1 voxel) narrows both modes before the histogram is split.

    Measured on the project's head phantoms (4 mm grid, Dice against the true head mask, after the
    post-processing of :func:`body_mask_from_mr`): plain Otsu drops to 0.67-0.74 with a strong bias
    field (exp(0.5 N)), ``0.1 * p99`` to 0.45 at 8 % noise; log-Otsu stays within 0.92-0.96 over noise
    0-8 % of the tissue signal and bias 0-0.5 (0.969 on the default 2 mm phantoms).

    The threshold sits low (about a third of plain Otsu's), so the mask errs on the generous side by
    about one voxel of partial volume: safer than cutting skin, since the sCT is set to air outside
    the mask. (A 3x3x3 median instead of the Gaussian avoids that, but erases a thin scalp.)
    """
    return _otsu_log(ndimage.gaussian_filter(np.asarray(mr, dtype=np.float32), smoothing_sigma))


def _otsu_log(smoothed: np.ndarray) -> float:
    """Log-Otsu threshold of an already smoothed MR (see :func:`otsu_threshold_log`)."""
    top = float(np.percentile(smoothed, 99.9))
    # A floor keeps log finite where the background is exactly 0 (zero-filled or masked scans).
    floor = 1e-3 * top
    log_image = np.log(np.maximum(smoothed, 0.0) + floor)
    otsu = sitk.OtsuThresholdImageFilter()  # ITK's Otsu: no scikit-image dependency
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(256)
    otsu.Execute(sitk.GetImageFromArray(log_image))
    return float(np.exp(otsu.GetThreshold()) - floor)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean volume.

    MONAI's ``KeepLargestConnectedComponent`` needs scikit-image on CPU (not a dependency of this
    project), so scipy's labelling is used directly.
    """
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_slice_by_slice(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` (bool, 3-D) with the holes of each 2-D slice across ``axis`` filled. No MONAI/scipy call fills
    2-D holes slice by slice in a 3-D volume: scipy per slice. Cavities open to the outside in 3-D (a trachea
    leaving the volume, sinus ostia) but enclosed in each slice are filled."""
    moved = np.moveaxis(np.asarray(mask, bool), axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in moved])
    return np.moveaxis(filled, 0, axis)


def body_mask_from_mr(
    mr: np.ndarray | torch.Tensor,
    *,
    threshold: float | None = None,
    closing_iterations: int = 1,
    slice_axis: int | None = -1,
) -> np.ndarray:
    """Body (head) mask of an MR magnitude volume.

    Args:
        mr: MR volume ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (numpy or torch), any intensity scale.
        threshold: intensity threshold in the MR's units; default :func:`otsu_threshold_log` (applied
            to the Gaussian-smoothed MR, which also removes isolated noise voxels).
        closing_iterations: binary closing with a 3x3x3 cross this many times (0 = none); bridges
            one-voxel gaps in thin dark skin/bone so hole filling sees a closed surface.
        slice_axis: spatial axis (of ``(X, Y, Z)``) along which holes are also filled slice by slice;
            the default, the last axis, is axial after RAS orientation. Air cavities open to the outside
            in 3-D (nasal cavity, sinuses via the ostia, ear canals) are enclosed in axial slices, so they
            end up in the mask. ``None`` fills 3-D holes only.

    Returns:
        bool array of the same shape as ``mr``.

    Raises:
        ValueError: the MR is not 3-D, contains NaN/inf, or has no positive signal.
    """
    array = mr.detach().cpu().numpy() if isinstance(mr, torch.Tensor) else np.asarray(mr)
    with_channel = array.ndim == 4
    if with_channel and array.shape[0] != 1 or array.ndim not in (3, 4):
        raise ValueError(f"body mask: expected an MR of shape (X, Y, Z) or (1, X, Y, Z), got {array.shape}")
    volume = array[0] if with_channel else array
    if not np.all(np.isfinite(volume)):
        raise ValueError("body mask: the MR contains NaN or infinite values")
    if not np.any(volume > 0):
        raise ValueError("body mask: the MR has no positive signal (all zero or negative)")

    if threshold is None:
        smoothed = ndimage.gaussian_filter(volume.astype(np.float32), SMOOTHING_SIGMA_VOXELS)
        threshold = _otsu_log(smoothed)
        foreground = smoothed > threshold
    else:
        foreground = volume > threshold
    if not foreground.any():
        raise ValueError(f"body mask: no voxel above the threshold {threshold:.6g}")

    mask = largest_component(foreground)
    # Morphology runs on the mask's bounding box plus a background margin: identical result (the
    # margin keeps outside background connected, edges at the volume border stay edges), ~3x faster.
    margin = closing_iterations + 1
    box = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in np.nonzero(mask))
    mask_full, mask = mask, mask[box]
    if closing_iterations > 0:
        # Edge padding: scipy erodes from a zero border, which would cut the neck where it leaves the FOV.
        pad = closing_iterations
        padded = np.pad(mask, pad, mode="edge")
        closed = ndimage.binary_closing(padded, iterations=closing_iterations)
        mask = closed[pad:-pad, pad:-pad, pad:-pad]
    mask = FillHoles(applied_labels=[1])(torch.as_tensor(mask[None].astype(np.uint8))).cpu().numpy()[0] > 0
    if slice_axis is not None:
        mask = fill_holes_slice_by_slice(mask, slice_axis)
    mask_full = np.zeros_like(mask_full)
    mask_full[box] = mask
    mask = mask_full
    return mask[None] if with_channel else mask


class BodyMaskd(MapTransform):
    """Create ``d[mask_key]`` from the MR (:func:`body_mask_from_mr`) when it is absent or None.

    The mask has the MR's shape ``(1, X, Y, Z)`` (float32, 0/1) and is a MetaTensor carrying a copy of
    the MR's meta (affine, original affine, file name of the MR it was derived from) and of its
    ``applied_operations``, so MONAI's ``Invertd`` can put it back on the input grid exactly as the MR.
    An existing mask is left alone unless ``overwrite=True``. Not invertible itself (creates a key).
    """

    def __init__(
        self,
        keys: KeysCollection = "mr",
        *,
        mask_key: str = "mask",
        overwrite: bool = False,
        threshold: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"BodyMaskd derives one mask from one MR key, got keys {self.keys}")
        self.mask_key = mask_key
        self.overwrite = overwrite
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get(self.mask_key) is not None and not self.overwrite:
            return d
        for key in self.key_iterator(d):
            mr = d[key]
            mask = body_mask_from_mr(mr, threshold=self.threshold)
            values = torch.as_tensor(mask.astype(np.float32))
            if isinstance(mr, MetaTensor):
                values = MetaTensor(values, meta=deepcopy(mr.meta), applied_operations=deepcopy(mr.applied_operations))
            elif isinstance(mr, np.ndarray):
                values = values.numpy()
            d[self.mask_key] = values
        return d


__all__: Sequence[str] = ["body_mask_from_mr", "fill_holes_slice_by_slice", "largest_component", "otsu_threshold_log",
                          "BodyMaskd"]
