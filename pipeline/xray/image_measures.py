"""Per-image measures of 2-D predictions: image metrics and the bone-suppression, sharpness and texture
measures of the X-ray evaluation (definitions: :mod:`pipeline.xray.evaluation`). Pure functions of arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from pipeline.report import metrics

#: Scale (mm at the detector) below which ``bone_leak_fine`` measures the leak: a rib is ~10-20 mm wide.
FINE_SIGMA_MM = 10.0
#: Band of ``edge_gain``: image detail between a 0.5-pixel and this Gaussian blur (mm at the detector, at
#: least one pixel): rib and scapula edges, not the broad bone load.
EDGE_SIGMA_MM = 5.0
SSIM_BORDER = 3


def image_metrics(pred: np.ndarray, true: np.ndarray, body: np.ndarray) -> dict[str, float]:
    """``{"mae", "psnr", "ssim"}`` of ``(H, W)`` images over ``body`` pixels (see the module docstring)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    body = np.asarray(body, bool)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"expected two (H, W) images of one shape, got {pred.shape} and {true.shape}")
    lo, hi = float(true.min()), float(true.max())
    if hi <= lo:
        hi = lo + 1.0  # a constant true image: any positive range gives the same (perfect or not) MAE
    smap = metrics.structural_similarity_map(metrics.prepare_for_ssim(pred, body, lo, hi),
                                             metrics.prepare_for_ssim(true, body, lo, hi), data_range=hi - lo)
    b = SSIM_BORDER
    inner = np.zeros_like(body)
    inner[b:-b, b:-b] = body[b:-b, b:-b]
    vol = (pred[..., None], true[..., None], body[..., None])  # the masked MAE/PSNR take (X, Y, Z) arrays
    return {"mae": metrics.mae(*vol), "psnr": metrics.psnr(*vol, hu_range=(lo, hi)),
            "ssim": float(smap[inner].mean()) if inner.any() else float("nan")}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def bone_leak_fit(error: np.ndarray, soft: np.ndarray, bone: np.ndarray) -> tuple[float, float]:
    """``(leak, gain)`` of the least-squares fit ``error ~ gain * soft + leak * bone + c`` over paired
    pixel values (1-D arrays; ``error = pred_soft - true_soft``); NaN when soft and bone are collinear
    or constant (the split between gain and leak is then undefined). Invariant to one affine window
    applied to all three."""
    leaks, gain = source_leak_fit(error, soft, [bone])
    return leaks[0], gain


def source_leak_fit(error: np.ndarray, soft: np.ndarray, sources: Sequence[np.ndarray]) -> tuple[list[float], float]:
    """``(leaks, gain)`` of ``error ~ gain * soft + sum_k leaks[k] * sources[k] + c`` (1-D arrays): the bone leak
    with the bone image cut into parts (e.g. ribs, other skeleton, iodine: ``scripts.leak_sources``). NaN when
    the columns are collinear or one is constant."""
    columns = [np.asarray(x, np.float64) for x in (soft, *sources)]
    design = np.stack([c - c.mean() for c in columns], axis=1)  # centring = the constant
    e = np.asarray(error, np.float64)
    e = e - e.mean()
    gram = design.T @ design
    scale = np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    nan = [float("nan")] * len(sources), float("nan")
    if not np.all(np.diag(gram) > 0):
        return nan
    correlation = gram / scale
    if not np.linalg.det(correlation) > 1e-9:
        return nan
    coef = np.linalg.solve(gram, design.T @ e)
    return [float(c) for c in coef[1:]], float(coef[0])


def high_pass(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """``image`` minus its Gaussian blur of ``sigma_px`` pixels (edges replicated): the detail finer than about
    ``sigma_px``, e.g. rib shadows without the body's load (the numpy twin of the detail loss's
    ``networks.losses.high_pass``)."""
    image = np.asarray(image, np.float64)
    return image - ndimage.gaussian_filter(image, sigma_px, mode="nearest")


def bone_suppression(pred_soft: np.ndarray, true_soft: np.ndarray, true_bone: np.ndarray, body: np.ndarray, *,
                     fine_sigma_px: float | None = None) -> dict[str, float]:
    """``{"bone_leak", "soft_gain", "soft_bone_corr"}`` over ``body`` pixels, and ``bone_leak_fine`` with
    ``fine_sigma_px`` (the Gaussian removed first, in pixels); see the module docstring."""
    m = np.asarray(body, bool)
    full = [np.asarray(a, np.float64) for a in (pred_soft, true_soft, true_bone)]
    p, s, b = (a[m] for a in full)
    leak, gain = bone_leak_fit(p - s, s, b)
    out = {"bone_leak": leak, "soft_gain": gain, "soft_bone_corr": _corr(p, b)}
    if fine_sigma_px is not None:
        # high-pass before masking: the blur sees the image, not the mask's edge
        fine = [high_pass(a, fine_sigma_px)[m] for a in full]
        out["bone_leak_fine"] = bone_leak_fit(fine[0] - fine[1], fine[1], fine[2])[0]
    return out


def edge_gain(pred: np.ndarray, true: np.ndarray, body: np.ndarray, *, sigma_px: float) -> float:
    """Sharpness of ``pred`` relative to ``true``: the least-squares slope of pred's edge band on true's
    over ``body`` pixels, the band being each image blurred by 0.5 px minus blurred by ``sigma_px`` (at
    least 1 px). 1 = edges as strong as the truth's, < 1 = blurred (a Gaussian blur of the truth by the
    band's scale gives ~0.5), > 1 = over-sharpened. Noise in ``pred`` uncorrelated with the truth does not
    move it; use a noiseless ``true``."""
    m = np.asarray(body, bool)
    wide = max(float(sigma_px), 1.0)

    def band(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        return (ndimage.gaussian_filter(a, 0.5, mode="nearest") - ndimage.gaussian_filter(a, wide, mode="nearest"))[m]

    p, s = band(pred), band(true)
    denom = float(s @ s)
    return float(p @ s / denom) if denom > 0 else float("nan")


def checkerboard_ratio(pred: np.ndarray, true: np.ndarray, body: np.ndarray) -> float:
    """Period-2 texture of ``pred`` relative to ``true``: RMS over ``body`` of the 2x2 checker filter
    ``a[i, j] - a[i+1, j] - a[i, j+1] + a[i+1, j+1]`` (the response at the Nyquist corner, where
    transposed convolutions leave their checkerboard) of pred over that of a noiseless ``true``.
    ~1 = like the truth, < 1 = smoother, >> 1 = checkerboard (or noise)."""
    def checker(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        return (a[:-1, :-1] - a[1:, :-1] - a[:-1, 1:] + a[1:, 1:])[np.asarray(body, bool)[:-1, :-1]]

    reference = float(np.sqrt(np.mean(checker(true) ** 2)))
    return float(np.sqrt(np.mean(checker(pred) ** 2)) / reference) if reference > 0 else float("nan")
