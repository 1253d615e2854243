"""Tumour visibility in 2-D radiographs: contrast-to-noise ratio (CNR) of each projected lung tumour.

Pure functions (numpy / torch in, numpy out):

- :func:`project_tumour_masks`: a tumour label volume ``(X, Y, Z)`` (0 = background, k = tumour k) on
  the CT grid -> boolean masks ``(K, H, W)``, through the same projector and geometry as the DRR
  (:func:`transforms.drr.project_line_integrals`), plus the tumours' chord lengths (cm).
- :func:`ring_mask`: the background of a tumour = a ring around its mask (``gap_px`` away, ``width_px``
  wide), other tumours excluded.
- :func:`contrast_to_noise`: ``|mean(image in mask) - mean(image in ring)| / std(image in ring)``,
  after removing the plane fitted to the ring (smooth gradients are neither contrast nor noise).
  Dimensionless: the image's units (log attenuation) cancel.
- :func:`behind_rib`: a tumour is behind a rib if the median projected bone path over its mask is at
  least ``min_bone_g_cm2`` (default :data:`BEHIND_RIB_G_CM2` = 0.25 g/cm^2 ~ 1.3 mm of cortical bone at
  1.92 g/cm^3) -- the bone line integral (channel ``bone`` of the projector, g/cm^2) in the lung fields
  comes from ribs (or clavicles, scapulae). 0.25 since issue 20's phantoms, whose ribs carry the real chest
  CT's bone (a rib crossing ~0.3-0.4 g/cm^2; lung-field median 0.20 in the real CT); with the earlier,
  denser phantom ribs it was 0.5.
- :func:`tumour_visibility` / :func:`summarise_visibility`: per-tumour rows (CNR in each image, e.g.
  ``se``, ``de_soft_true``, ``de_soft_pred``) and the summary overall and for tumours behind a rib
  (mean CNR per image, ratio predicted / true DE-soft, fraction where DE-soft beats SE).

The ring's standard deviation holds both the noise and the anatomical background (ribs, vessels):
that "anatomical noise" is exactly what dual energy removes, so it belongs in the CNR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

#: Median projected bone path (g/cm^2) over a tumour's mask from which it counts as behind a rib.
BEHIND_RIB_G_CM2 = 0.25
from scipy import ndimage

from transforms.drr import ProjectionGeometry, project_line_integrals, volume_centre_mm

#: A pixel belongs to a tumour's projected mask where its chord is >= this fraction of the tumour's
#: largest chord (for a sphere: radius >= 0.97 R, i.e. the projected disk without the interpolation fringe).
MASK_CHORD_FRACTION = 0.25


def project_tumour_masks(labels: np.ndarray | torch.Tensor, affine: np.ndarray, geometry: ProjectionGeometry, *,
                         chord_fraction: float = MASK_CHORD_FRACTION) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Project a label volume ``(X, Y, Z)`` (ints, 0 = background) with ``geometry``.

    Returns ``(masks (K, H, W) bool, chords (K, H, W) float32 cm, label values (K,))`` for the labels
    present, in increasing order. A tumour hidden outside the detector gets an all-False mask.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be (X, Y, Z), got shape {lab.shape}")
    values = [int(v) for v in np.unique(lab) if v != 0]
    if not values:
        return (np.zeros((0, *geometry.detector_shape), bool), np.zeros((0, *geometry.detector_shape), np.float32), [])
    # Project only the tumours' bounding box (+1 voxel of zeros): exact, since the interpolant is zero
    # outside, and much cheaper than the whole CT grid. The isocentre stays the full grid's centre.
    nonzero = np.argwhere(lab != 0)
    lo = np.maximum(nonzero.min(axis=0) - 1, 0)
    hi = np.minimum(nonzero.max(axis=0) + 2, lab.shape)
    box = lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    box_affine = np.asarray(affine, dtype=np.float64).copy()
    box_affine[:3, 3] = box_affine[:3] @ np.append(lo, 1.0)
    if geometry.isocentre_mm is None:
        geometry = replace(geometry, isocentre_mm=tuple(float(c) for c in volume_centre_mm(affine, lab.shape)))
    one_hot = torch.from_numpy(np.stack([(box == v) for v in values]).astype(np.float32))
    chords = project_line_integrals(one_hot, box_affine, geometry).numpy()  # unit density -> chord in cm
    peak = chords.reshape(len(values), -1).max(axis=1)
    masks = (chords >= chord_fraction * peak[:, None, None]) & (peak[:, None, None] > 0)
    return masks, chords, values


def ring_mask(masks: np.ndarray, index: int, *, gap_px: int = 2, width_px: int = 4,
              exclude: np.ndarray | None = None) -> np.ndarray:
    """Background ring (H, W) bool around ``masks[index]``: pixels between ``gap_px`` and
    ``gap_px + width_px`` dilations of the mask, outside every tumour mask (dilated by ``gap_px``) and
    outside ``exclude`` (e.g. pixels off the body)."""
    if gap_px < 0 or width_px < 1:
        raise ValueError("need gap_px >= 0 and width_px >= 1")
    structure = ndimage.generate_binary_structure(2, 1)
    mask = masks[index]
    inner = ndimage.binary_dilation(mask, structure, iterations=gap_px) if gap_px else mask
    outer = ndimage.binary_dilation(mask, structure, iterations=gap_px + width_px)
    others = masks.any(axis=0)
    if gap_px:
        others = ndimage.binary_dilation(others, structure, iterations=gap_px)
    ring = outer & ~inner & ~others
    if exclude is not None:
        ring &= ~np.asarray(exclude, dtype=bool)
    return ring


def contrast_to_noise(image: np.ndarray | torch.Tensor, mask: np.ndarray, background: np.ndarray, *,
                      detrend: bool = True) -> float:
    """CNR = |mean(image[mask]) - mean(image[background])| / std(image[background]) (dimensionless).

    ``detrend`` (default): first subtract the least-squares plane ``a + b row + c col`` fitted to the
    background ring, so a smooth gradient across the ring (body thickness, the lung edge) counts as
    neither contrast nor noise; ribs, vessels and quantum noise stay in the spread. NaN if either
    region is empty or the background is constant.
    """
    img = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float64)
    if img.shape != mask.shape or img.shape != background.shape:
        raise ValueError(f"image {img.shape}, mask {mask.shape} and background {background.shape} must match")
    if not mask.any() or background.sum() < 4:
        return float("nan")
    if detrend:
        rows, cols = np.nonzero(background)
        design = np.stack([np.ones_like(rows), rows, cols], axis=1).astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, img[background], rcond=None)
        r_all, c_all = np.indices(img.shape)
        img = img - (coef[0] + coef[1] * r_all + coef[2] * c_all)
    spread = float(img[background].std(ddof=1))
    if spread < 1e-12:
        return float("nan")
    return abs(float(img[mask].mean()) - float(img[background].mean())) / spread


def behind_rib(bone_g_cm2: np.ndarray | torch.Tensor, mask: np.ndarray, *,
               min_bone_g_cm2: float = BEHIND_RIB_G_CM2) -> bool:
    """True if the median bone line integral (g/cm^2) over ``mask`` is >= ``min_bone_g_cm2``."""
    bone = np.asarray(torch.as_tensor(bone_g_cm2).detach().cpu(), dtype=np.float64)
    return bool(mask.any() and float(np.median(bone[mask])) >= min_bone_g_cm2)


def tumour_visibility(images: Mapping[str, np.ndarray | torch.Tensor], masks: np.ndarray,
                      bone_g_cm2: np.ndarray | torch.Tensor, *, labels: Sequence[int] | None = None,
                      gap_px: int = 2, width_px: int = 4, min_bone_g_cm2: float = BEHIND_RIB_G_CM2,
                      min_mask_px: int = 3, detrend: bool = True) -> list[dict]:
    """One row per tumour: ``label``, ``area_px``, ``bone_g_cm2`` (median over the mask),
    ``behind_rib``, and ``cnr_<name>`` for every image (all ``(H, W)``, same geometry).

    Tumours with fewer than ``min_mask_px`` mask pixels (off the detector, or sub-pixel) are skipped.
    """
    bone = np.asarray(torch.as_tensor(bone_g_cm2).detach().cpu(), dtype=np.float64)
    labels = list(labels) if labels is not None else list(range(1, len(masks) + 1))
    rows = []
    for index, label in enumerate(labels):
        mask = masks[index]
        if int(mask.sum()) < min_mask_px:
            continue
        ring = ring_mask(masks, index, gap_px=gap_px, width_px=width_px)
        row = {"label": int(label), "area_px": int(mask.sum()), "bone_g_cm2": float(np.median(bone[mask])),
               "behind_rib": behind_rib(bone, mask, min_bone_g_cm2=min_bone_g_cm2)}
        for name, image in images.items():
            row[f"cnr_{name}"] = contrast_to_noise(image, mask, ring, detrend=detrend)
        rows.append(row)
    return rows


def summarise_visibility(rows: Sequence[Mapping], *, predicted: str = "de_soft_pred",
                         true: str = "de_soft_true", single_energy: str = "se") -> dict[str, dict[str, float]]:
    """Summary for ``all`` tumours and those ``behind_rib``: count, mean CNR per image, the ratio of the
    mean predicted to the mean true DE-soft CNR (target within 15 %: 0.85-1.15), and the fraction of
    tumours whose predicted DE-soft CNR exceeds the SE CNR."""
    out: dict[str, dict[str, float]] = {}
    for group, keep in (("all", lambda r: True), ("behind_rib", lambda r: bool(r["behind_rib"]))):
        chosen = [r for r in rows if keep(r)]
        summary: dict[str, float] = {"n": float(len(chosen))}
        names = sorted({k[4:] for r in chosen for k in r if k.startswith("cnr_")})
        for name in names:
            values = [r[f"cnr_{name}"] for r in chosen]
            summary[f"mean_cnr_{name}"] = float(np.nanmean(values)) if values else float("nan")
        if chosen and f"cnr_{predicted}" in chosen[0] and f"cnr_{true}" in chosen[0]:
            summary["cnr_ratio_pred_true"] = summary[f"mean_cnr_{predicted}"] / summary[f"mean_cnr_{true}"]
        if chosen and f"cnr_{predicted}" in chosen[0] and f"cnr_{single_energy}" in chosen[0]:
            summary["fraction_pred_above_se"] = float(np.mean(
                [r[f"cnr_{predicted}"] > r[f"cnr_{single_energy}"] for r in chosen]))
        out[group] = summary
    return out


__all__: Sequence[str] = [
    "BEHIND_RIB_G_CM2", "MASK_CHORD_FRACTION", "project_tumour_masks", "ring_mask", "contrast_to_noise", "behind_rib",
    "tumour_visibility", "summarise_visibility",
]
