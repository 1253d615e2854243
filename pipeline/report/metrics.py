"""SynthRAD2023 image metrics for synthetic CT, bone Dice and per-region error statistics.

All functions take 3-D arrays ``(X, Y, Z)`` in HU (synthetic CT ``sct``, real CT ``ct``) and a mask of
the same shape whose voxels ``> 0`` are evaluated (the body/patient outline). They are pure numpy/scipy,
written from the published metric definitions (Huijben et al., SynthRAD2023 challenge report):

- MAE / ME on raw HU inside the mask (ME is signed, sCT - CT: positive means the sCT is too dense);
- PSNR with both images clipped to [-1024, 3000] HU, data range 4024 HU, MSE over mask voxels only;
- SSIM: both clipped to [-1024, 3000], outside the mask set to -1024, shifted to >= 0, 3-D SSIM map
  with scikit-image's ``structural_similarity`` defaults (7x7x7 uniform window, sample covariance, K1
  0.01, K2 0.03, data range 4024), a 3-voxel border cropped from the map, mean over the remaining mask
  voxels (the official ``image_metrics.py``);
- MS-SSIM (SynthRAD2025): masked 3-D multi-scale SSIM on [-1024, 3071] HU (:func:`ms_ssim`).

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
    "ms_ssim",
    "prepare_for_ssim",
    "psnr",
    "region_statistics",
    "ssim",
    "ssim_map",
    "structural_similarity_map",
]

HU_RANGE: tuple[float, float] = (HU_MIN, HU_MAX)
BONE_HU = 250.0
#: Tissue classes of the *real* CT used by :func:`region_statistics`: air < -200 <= soft tissue < 250 <= bone.
REGION_THRESHOLDS_HU: tuple[float, float] = (-200.0, BONE_HU)

# scikit-image's structural_similarity defaults, which the official SynthRAD2023 code calls.
SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_BORDER = 3  # SynthRAD crops 3 voxels (the window radius) from every face before averaging
#: SynthRAD2025: range, per-scale weights (Wang et al. 2003, Eq. 7) and minimum size for 5 halvings.
MS_SSIM_HU_RANGE: tuple[float, float] = (-1024.0, 3071.0)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = 97


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


def prepare_for_ssim(volume: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi], set voxels outside ``mask`` to ``lo``, shift to >= 0 (the SynthRAD preparation)."""
    out = np.clip(volume, lo, hi)
    out[~mask] = lo  # outside the body counts as air in both images
    return out - lo  # >= 0, as in the challenge definition


def structural_similarity_map(x: np.ndarray, y: np.ndarray, *, data_range: float, win_size: int = SSIM_WIN_SIZE,
                              weights: tuple[float, float, float] | None = None) -> np.ndarray:
    """SSIM map of two prepared images of any dimension (2-D or 3-D), float64.

    scikit-image's ``structural_similarity`` defaults, which SynthRAD2023 uses: a ``win_size``-wide uniform
    window (edges reflected), *sample* covariance (``N / (N - 1)`` with ``N = win_size ** ndim``), K1 0.01,
    K2 0.03. Written out here (rather than calling scikit-image) because the masked means and the
    per-scale weighting of MS-SSIM need the map's luminance, contrast and structure terms separately;
    ``tests/test_report_metrics.py`` checks it against scikit-image itself.

    ``weights`` ``(luminance, contrast, structure)`` exponents switch to the three-term form of
    SynthRAD2025's MS-SSIM (each term clipped at 0, C3 = C2 / 2); None is the classic two-factor SSIM.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, size=win_size)

    n = win_size ** x.ndim
    cov_norm = n / (n - 1.0)
    # float64 throughout: E[x^2] - E[x]^2 with values up to 4095 loses all precision in float32.
    mu_x, mu_y = smooth(x), smooth(y)
    var_x = cov_norm * (smooth(x * x) - mu_x * mu_x)
    var_y = cov_norm * (smooth(y * y) - mu_y * mu_y)
    cov_xy = cov_norm * (smooth(x * y) - mu_x * mu_y)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    if weights is None:
        numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
        return numerator / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    c3 = c2 / 2.0
    sd_x, sd_y = np.sqrt(np.clip(var_x, 0.0, None)), np.sqrt(np.clip(var_y, 0.0, None))
    luminance = np.clip((2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1), 0.0, None)
    contrast = np.clip((2.0 * sd_x * sd_y + c2) / (var_x + var_y + c2), 0.0, None)
    structure = np.clip((cov_xy + c3) / (sd_x * sd_y + c3), 0.0, None)
    return luminance ** weights[0] * contrast ** weights[1] * structure ** weights[2]


def ssim_map(
    sct: np.ndarray, ct: np.ndarray, mask: np.ndarray, *, hu_range: tuple[float, float] = HU_RANGE
) -> np.ndarray:
    """Voxel-wise SSIM map ``(X, Y, Z)`` (float64) of the SynthRAD2023-prepared images (no border crop):
    clipped to ``hu_range``, outside the mask set to its lower end, shifted to >= 0, then
    :func:`structural_similarity_map` with data range ``hu_range[1] - hu_range[0]``."""
    sct, ct, m = _check_inputs(sct, ct, mask)
    lo, hi = hu_range
    return structural_similarity_map(prepare_for_ssim(sct, m, lo, hi), prepare_for_ssim(ct, m, lo, hi),
                                     data_range=hi - lo)


def _masked_mean(smap: np.ndarray, mask: np.ndarray, border: int) -> float:
    """Mean of ``smap`` over ``mask`` after cropping ``border`` voxels from every face of both."""
    if border > 0:
        if min(smap.shape) <= 2 * border:
            raise ValueError(f"volume {smap.shape} too small for a {border}-voxel border crop")
        crop = (slice(border, -border),) * smap.ndim
        smap, mask = smap[crop], mask[crop]
    if not mask.any():
        raise ValueError(f"mask is empty after cropping a {border}-voxel border")
    return float(smap[mask].mean(dtype=np.float64))


def ssim(
    sct: np.ndarray,
    ct: np.ndarray,
    mask: np.ndarray,
    *,
    hu_range: tuple[float, float] = HU_RANGE,
    border: int = SSIM_BORDER,
) -> float:
    """SynthRAD2023 SSIM: mean of :func:`ssim_map` over mask voxels at least ``border`` voxels from every
    face of the volume (the map is cropped by ``border`` on each side, as is the mask)."""
    return _masked_mean(ssim_map(sct, ct, mask, hu_range=hu_range), np.asarray(mask) > 0, border)


def _downsample_by_two(volume: np.ndarray) -> np.ndarray:
    """SynthRAD2025's MS-SSIM downsampling: a 2x2x2 box average with zero padding before the first voxel
    of each axis (what ``fftconvolve(v, ones((2, 2, 2)) / 8, mode="same")`` computes), then every other
    voxel from the first."""
    padded = np.pad(volume, [(1, 0)] * volume.ndim)
    total = np.zeros(tuple((n + 1) // 2 for n in volume.shape))
    for offset in np.ndindex(*(2,) * volume.ndim):
        total += padded[tuple(slice(o, o + 2 * t, 2) for o, t in zip(offset, total.shape))]
    return total / 2 ** volume.ndim


def ms_ssim(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray, *,
            hu_range: tuple[float, float] = MS_SSIM_HU_RANGE) -> float:
    """SynthRAD2025 masked 3-D MS-SSIM.

    Both images clipped to ``hu_range`` ([-1024, 3071] HU), outside the mask set to its lower end and
    shifted to >= 0; volumes edge-padded to at least 97 voxels per axis (5 scales of halving); at each of
    5 scales, the three-term SSIM map (luminance, contrast and structure each raised to the scale's
    weight 0.0448, 0.2856, 0.3001, 0.2363, 0.1333) is averaged over the mask after a 3-voxel border crop;
    images are then box-downsampled by two and the mask subsampled. The result is the product of the 5
    masked means, each clipped to [0, 1].
    """
    sct, ct, m = _check_inputs(sct, ct, mask)
    lo, hi = hu_range
    x, y = prepare_for_ssim(sct, m, lo, hi), prepare_for_ssim(ct, m, lo, hi)
    target = MS_SSIM_MIN_SIZE
    pad = [(max((target - n) // 2, 0), max(target - n - (target - n) // 2, 0)) for n in x.shape]
    x, y, m = (np.pad(a, pad, mode="edge") for a in (x, y, m))
    values = []
    for weight in MS_SSIM_WEIGHTS:
        smap = structural_similarity_map(x, y, data_range=hi - lo, weights=(weight, weight, weight))
        values.append(min(max(_masked_mean(smap, m, SSIM_BORDER), 0.0), 1.0))
        x, y = _downsample_by_two(x), _downsample_by_two(y)
        m = m[::2, ::2, ::2]
    return float(np.prod(values))


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


def uncertainty_rank_correlation(std: np.ndarray, sct: np.ndarray, ct: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Spearman rho between a voxel-wise uncertainty map ``std`` (HU) and the absolute error |sCT - CT| (HU)
    in ``body`` and the CT regions ``air``, ``soft_tissue``, ``bone`` (as :func:`region_statistics`).

    rho near 1: the map ranks where the sCT is wrong; 0: it carries no information. NaN for a region
    with fewer than 3 voxels or a constant map or error there (rank correlation undefined).
    """
    from scipy.stats import spearmanr

    sct, ct, m = _check_inputs(sct, ct, mask)
    std = np.asarray(std, dtype=np.float64)
    if std.shape != sct.shape:
        raise ValueError(f"uncertainty map shape {std.shape} differs from image shape {sct.shape}")
    abs_error = np.abs(sct - ct)
    low, high = REGION_THRESHOLDS_HU
    regions = {"body": m, "air": m & (ct < low), "soft_tissue": m & (ct >= low) & (ct < high), "bone": m & (ct >= high)}
    out = {}
    for name, region in regions.items():
        s, e = std[region], abs_error[region]
        constant = s.size < 3 or np.ptp(s) == 0 or np.ptp(e) == 0
        out[name] = float("nan") if constant else float(spearmanr(s, e).statistic)
    return out
