"""SynthRAD2023 image metrics for synthetic CT, bone Dice and per-region error statistics.

All functions take 3-D arrays ``(X, Y, Z)`` in HU (synthetic CT ``sct``, real CT ``ct``) and a mask of
the same shape whose voxels ``> 0`` are evaluated (the body/patient outline). They are pure numpy/scipy,
written from the published metric definitions (Huijben et al., SynthRAD2023 challenge report):

- MAE / ME on raw HU inside the mask (ME is signed, sCT - CT: positive means the sCT is too dense);
- PSNR with both images clipped to [-1024, 3000] HU, data range 4024 HU, MSE over mask voxels only;
- SSIM: both clipped to [-1024, 3000], outside the mask set to -1024, shifted to >= 0, 3-D SSIM map
  (Gaussian window sigma 1.5 voxels, K1 0.01, K2 0.03, data range 4024), a 3-voxel border cropped from
  the map, mean over the remaining mask voxels.

Bad input (shape mismatch, empty mask, NaN/inf) raises ``ValueError`` with the problem in the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from transforms.intensity import HU_MAX, HU_MIN

__all__ = [
    "BONE_HU",
    "HU_RANGE",
    "REGION_THRESHOLDS_HU",
    "bone_dice",
    "bone_dice_at",
    "mae",
    "me",
    "psnr",
    "region_statistics",
    "ssim",
    "ssim_map",
]

HU_RANGE: tuple[float, float] = (HU_MIN, HU_MAX)
BONE_HU = 250.0
#: Tissue classes of the *real* CT used by :func:`region_statistics`: air < -200 <= soft tissue < 250 <= bone.
REGION_THRESHOLDS_HU: tuple[float, float] = (-200.0, BONE_HU)

# skimage's structural_similarity conventions (gaussian_weights=True, use_sample_covariance=False),
# which the SynthRAD2023 definition follows: truncate the Gaussian at 3.5 sigma, reflect at the edges.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_inputs(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return float64 sCT, float64 CT and a boolean mask after checking shape, finiteness, non-empty mask."""
    sct, ct = np.asarray(sct), np.asarray(ct)
    if sct.shape != ct.shape:
        raise ValueError(f"sCT shape {sct.shape} differs from CT shape {ct.shape}")
    if sct.ndim != 3:
        raise ValueError(f"expected 3-D volumes (X, Y, Z), got shape {sct.shape}")
    if mask is None:
        mask_bool = np.ones(sct.shape, dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != sct.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {sct.shape}")
        mask_bool = mask > 0
        if not mask_bool.any():
            raise ValueError("mask is empty (no voxel > 0)")
    for name, array in (("sCT", sct), ("CT", ct)):
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{name} has non-numeric dtype {array.dtype}")
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(f"{name} contains {int(finite.size - finite.sum())} NaN/inf voxels")
    return sct.astype(np.float64, copy=False), ct.astype(np.float64, copy=False), mask_bool


def mae(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error in HU over voxels with ``mask > 0`` (raw HU, no clipping)."""
    sct, ct, m = _check_inputs(sct, ct, mask)
    return float(np.abs(sct[m] - ct[m]).mean())


def me(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray) -> float:
    """Mean (signed) error sCT - CT in HU over voxels with ``mask > 0``."""
    sct, ct, m = _check_inputs(sct, ct, mask)
    return float((sct[m] - ct[m]).mean())


def psnr(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray, *, hu_range: tuple[float, float] = HU_RANGE) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(R^2 / MSE)`` with both images clipped to ``hu_range``,
    ``R = hu_range[1] - hu_range[0]`` (4024 HU) and the MSE over mask voxels only. ``inf`` if identical."""
    sct, ct, m = _check_inputs(sct, ct, mask)
    lo, hi = hu_range
    mse = float(np.mean((np.clip(sct[m], lo, hi) - np.clip(ct[m], lo, hi)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10((hi - lo) ** 2 / mse))


def _prepare_for_ssim(volume: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.clip(volume, lo, hi)
    out[~mask] = lo  # outside the body counts as air in both images
    return out - lo  # >= 0, as in the challenge definition


def ssim_map(
    sct: np.ndarray, ct: np.ndarray, mask: np.ndarray, *, hu_range: tuple[float, float] = HU_RANGE
) -> np.ndarray:
    """Voxel-wise SSIM map ``(X, Y, Z)`` (float64) of the SynthRAD2023-prepared images (no border crop).

    Local means, variances and covariance are Gaussian-weighted (sigma 1.5 voxels, truncated at 3.5
    sigma, edges reflected), population (not sample) covariance, data range ``hu_range[1] - hu_range[0]``.
    """
    sct, ct, m = _check_inputs(sct, ct, mask)
    lo, hi = hu_range
    x = _prepare_for_ssim(sct, m, lo, hi)
    y = _prepare_for_ssim(ct, m, lo, hi)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    # float64 throughout: E[x^2] - E[x]^2 with values up to 4024 loses all precision in float32.
    mu_x, mu_y = smooth(x), smooth(y)
    var_x = smooth(x * x) - mu_x * mu_x
    var_y = smooth(y * y) - mu_y * mu_y
    cov_xy = smooth(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * (hi - lo)) ** 2
    c2 = (SSIM_K2 * (hi - lo)) ** 2
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(
    sct: np.ndarray,
    ct: np.ndarray,
    mask: np.ndarray,
    *,
    hu_range: tuple[float, float] = HU_RANGE,
    border: int = 3,
) -> float:
    """SynthRAD2023 SSIM: mean of :func:`ssim_map` over mask voxels at least ``border`` voxels from every
    face of the volume (the map is cropped by ``border`` on each side, as is the mask)."""
    smap = ssim_map(sct, ct, mask, hu_range=hu_range)
    m = np.asarray(mask) > 0
    if border > 0:
        if min(smap.shape) <= 2 * border:
            raise ValueError(f"volume {smap.shape} too small for a {border}-voxel border crop")
        crop = (slice(border, -border),) * smap.ndim
        smap, m = smap[crop], m[crop]
    if not m.any():
        raise ValueError(f"mask is empty after cropping a {border}-voxel border")
    return float(smap[m].mean())


def bone_dice(
    sct: np.ndarray, ct: np.ndarray, mask: np.ndarray | None = None, *, threshold_hu: float = BONE_HU
) -> float:
    """Dice of the bone masks ``sct >= threshold_hu`` and ``ct >= threshold_hu`` (inside ``mask`` if given).

    ``nan`` when neither image has bone there (Dice is undefined, not perfect).
    """
    sct, ct, m = _check_inputs(sct, ct, mask)
    bone_sct = (sct >= threshold_hu) & m
    bone_ct = (ct >= threshold_hu) & m
    total = int(bone_sct.sum()) + int(bone_ct.sum())
    if total == 0:
        return float("nan")
    return float(2.0 * np.logical_and(bone_sct, bone_ct).sum() / total)


def bone_dice_at(
    sct: np.ndarray, ct: np.ndarray, mask: np.ndarray | None, thresholds: Sequence[float] = (BONE_HU,)
) -> dict[float, float]:
    """``{threshold_hu: bone Dice}`` for each threshold (see :func:`bone_dice`)."""
    return {float(t): bone_dice(sct, ct, mask, threshold_hu=float(t)) for t in thresholds}


def _error_stats(error: np.ndarray) -> dict[str, float]:
    n = int(error.size)
    if n == 0:
        return {"n_voxels": 0, "mae_hu": float("nan"), "me_hu": float("nan"), "sd_hu": float("nan")}
    return {
        "n_voxels": n,
        "mae_hu": float(np.abs(error).mean()),
        "me_hu": float(error.mean()),
        "sd_hu": float(error.std()),  # population SD of the voxel errors (ddof=0)
    }


def region_statistics(
    sct: np.ndarray,
    ct: np.ndarray,
    mask: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names: Mapping[int, str] | None = None,
) -> list[dict]:
    """Error statistics (sCT - CT, HU) per region inside ``mask > 0``.

    Regions: ``body`` (the whole mask), then classes of the *real* CT: ``air`` (< -200 HU),
    ``soft_tissue`` (-200 to < 250 HU), ``bone`` (>= 250 HU); then, if ``labels`` (integer map of the
    same shape) is given, one region per non-zero label value, named by ``label_names`` or
    ``label_<value>`` (every key of ``label_names`` gets a row). Each entry: ``{"region", "n_voxels",
    "mae_hu", "me_hu", "sd_hu"}`` (SD of the voxel errors, ddof=0). Empty regions are kept with
    ``n_voxels == 0`` and NaN statistics so tables have the same rows for every subject.
    """
    sct, ct, m = _check_inputs(sct, ct, mask)
    error = sct - ct
    low, high = REGION_THRESHOLDS_HU
    regions: list[tuple[str, np.ndarray]] = [
        ("body", m),
        ("air", m & (ct < low)),
        ("soft_tissue", m & (ct >= low) & (ct < high)),
        ("bone", m & (ct >= high)),
    ]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != sct.shape:
            raise ValueError(f"label map shape {labels.shape} differs from image shape {sct.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
                raise ValueError("label map must hold integer label values")
            labels = labels.astype(np.int64)
        names = dict(label_names or {})
        # named labels absent from this subject still get a row (n_voxels 0)
        values = sorted({int(v) for v in np.unique(labels)} | {int(v) for v in names})
        for value in values:
            if value != 0:
                regions.append((names.get(value, f"label_{value}"), m & (labels == value)))
    return [{"region": name, **_error_stats(error[region])} for name, region in regions]
