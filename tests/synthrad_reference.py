"""Independent references for the SynthRAD image metrics, written from the challenges' published
evaluation code on top of scikit-image and scipy (not from rtsynth's implementation)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve
from skimage.metrics import structural_similarity
from skimage.util import crop as skimage_crop


def official_ssim(sct, ct, mask, *, lo=-1024.0, hi=3000.0):
    """SynthRAD2023's ``image_metrics.ssim``, written from its published definition on top of
    scikit-image itself: clip, outside mask -> lo, shift >= 0, ``structural_similarity(full=True)`` with
    the defaults, mean of the map over the mask after a 3-voxel crop."""
    gt = np.where(mask > 0, np.clip(ct, lo, hi), lo) - lo
    pred = np.where(mask > 0, np.clip(sct, lo, hi), lo) - lo
    _, smap = structural_similarity(gt, pred, data_range=hi - lo, full=True)
    return float(skimage_crop(smap, 3)[skimage_crop(mask > 0, 3)].mean(dtype=np.float64)), smap


def official_ms_ssim(sct, ct, mask, *, lo=-1024.0, hi=3071.0):
    """SynthRAD2025's masked MS-SSIM as published: three-term SSIM per scale with the scale's weight on
    each term, fftconvolve box downsampling, mask subsampling, product of the clipped masked means."""
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    gt = np.where(mask > 0, np.clip(ct, lo, hi), lo) - lo
    pred = np.where(mask > 0, np.clip(sct, lo, hi), lo) - lo
    m = (mask > 0).astype(float)
    pads = [(max((97 - n) // 2, 0), max(97 - n - (97 - n) // 2, 0)) for n in gt.shape]
    gt, pred, m = (np.pad(a, pads, mode="edge") for a in (gt, pred, m))
    r = hi - lo
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    values = []
    for w in weights:
        ux, uy = uniform_filter(gt, 7), uniform_filter(pred, 7)
        norm = 343 / 342
        vx = norm * (uniform_filter(gt * gt, 7) - ux * ux)
        vy = norm * (uniform_filter(pred * pred, 7) - uy * uy)
        vxy = norm * (uniform_filter(gt * pred, 7) - ux * uy)
        sx, sy = np.clip(vx, 0, None) ** 0.5, np.clip(vy, 0, None) ** 0.5
        lum = np.clip((2 * ux * uy + c1) / (ux**2 + uy**2 + c1), 0, None)
        con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
        st = np.clip((vxy + c2 / 2) / (sx * sy + c2 / 2), 0, None)
        smap = lum**w * con**w * st**w
        values.append(np.clip(skimage_crop(smap, 3)[skimage_crop(m, 3).astype(bool)].mean(dtype=np.float64), 0, 1))
        box = np.ones((2, 2, 2)) / 8
        gt, pred = (fftconvolve(a, box, mode="same")[::2, ::2, ::2] for a in (gt, pred))
        m = m[::2, ::2, ::2]
    return float(np.prod(values))
