"""Tumour visibility (pipeline/xray/visibility.py): CNR against an analytic disk in known noise, ring
geometry, projected masks against magnification, behind-a-rib decision, summary arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.xray.visibility import (
    behind_rib,
    contrast_to_noise,
    project_tumour_masks,
    ring_mask,
    summarise_visibility,
    tumour_visibility,
)
from transforms.drr import ProjectionGeometry


def _disk(shape, centre, radius):
    r, c = np.ogrid[: shape[0], : shape[1]]
    return (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius**2


def test_cnr_of_a_disk_in_white_noise():
    rng = np.random.default_rng(0)
    shape, sigma, contrast = (96, 96), 0.05, 0.2
    masks = np.stack([_disk(shape, (48, 48), 8)])
    image = 1.0 + contrast * masks[0] + rng.normal(0.0, sigma, shape)
    ring = ring_mask(masks, 0, gap_px=2, width_px=6)
    assert contrast_to_noise(image, masks[0], ring) == pytest.approx(contrast / sigma, rel=0.15)
    assert np.isnan(contrast_to_noise(np.ones(shape), masks[0], ring))  # constant background


def test_detrending_removes_a_smooth_gradient_from_contrast_and_noise():
    rng = np.random.default_rng(2)
    shape, sigma, contrast = (96, 96), 0.05, 0.2
    masks = np.stack([_disk(shape, (48, 48), 8)])
    ramp = 0.03 * np.arange(96)[None, :]  # body-thickness gradient: 0.6 across the ring
    image = ramp + contrast * masks[0] + rng.normal(0.0, sigma, shape)
    ring = ring_mask(masks, 0, gap_px=2, width_px=6)
    assert contrast_to_noise(image, masks[0], ring) == pytest.approx(contrast / sigma, rel=0.15)
    assert contrast_to_noise(image, masks[0], ring, detrend=False) < 0.5 * contrast / sigma


def test_ring_geometry_excludes_other_tumours():
    shape = (64, 64)
    masks = np.stack([_disk(shape, (32, 20), 5), _disk(shape, (32, 33), 4)])
    ring = ring_mask(masks, 0, gap_px=1, width_px=3)
    r, c = np.nonzero(ring)
    distance = np.hypot(r - 32, c - 20)
    assert distance.min() > 5 and distance.max() <= 5 + 1 + 3 + 1.5
    assert not (ring & masks[1]).any() and not (ring & masks[0]).any()
    with pytest.raises(ValueError):
        ring_mask(masks, 0, width_px=0)


def test_projected_sphere_mask_position_and_size():
    # A 20 mm-radius sphere 40 mm to the patient's LEFT (world -x in RAS) on a centred 2 mm grid.
    n, spacing = 72, 2.0
    axis = (np.arange(n) - (n - 1) / 2.0) * spacing
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    labels = (((x + 40.0) ** 2 + y**2 + z**2) <= 20.0**2).astype(np.uint8) * 3
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2.0 * spacing
    geometry = ProjectionGeometry(detector_shape=(64, 64), pixel_spacing_mm=3.0)
    masks, chords, values = project_tumour_masks(labels, affine, geometry)
    assert values == [3] and masks.shape == (1, 64, 64)
    rows, cols = np.nonzero(masks[0])
    # AP display: patient's left on the viewer's right; 40 mm x 1.5 / 3 mm = 20 px right of centre.
    assert cols.mean() == pytest.approx(31.5 + 20.0, abs=0.5) and rows.mean() == pytest.approx(31.5, abs=0.5)
    # Area: a disk of radius ~ 20 mm x 1.5 / 3 mm = 10 px (the cone beam widens it by < 3 %).
    assert masks[0].sum() == pytest.approx(np.pi * 10.0**2, rel=0.1)
    assert float(chords.max()) == pytest.approx(4.0, rel=0.03)  # the 40 mm diameter, in cm
    empty, _, none = project_tumour_masks(np.zeros((4, 4, 4), np.uint8), affine, geometry)
    assert empty.shape == (0, 64, 64) and none == []


def test_behind_rib_from_bone_path_and_rows():
    shape = (64, 64)
    bone = np.zeros(shape)
    bone[20:30, :] = 0.8  # a rib shadow, g/cm^2
    masks = np.stack([_disk(shape, (25, 16), 4), _disk(shape, (45, 40), 4)])
    assert behind_rib(bone, masks[0]) and not behind_rib(bone, masks[1])
    rng = np.random.default_rng(1)
    se = 0.3 * masks.any(0) + 0.5 * (bone > 0) + rng.normal(0, 0.05, shape)  # rib adds clutter in SE
    soft = 0.3 * masks.any(0) + rng.normal(0, 0.05, shape)
    rows = tumour_visibility({"se": se, "de_soft_true": soft, "de_soft_pred": soft}, masks, bone)
    assert [r["behind_rib"] for r in rows] == [True, False]
    assert rows[0]["cnr_de_soft_true"] > 2 * rows[0]["cnr_se"]  # the rib edge inflates the SE ring's spread
    summary = summarise_visibility(rows)
    assert summary["all"]["n"] == 2 and summary["behind_rib"]["n"] == 1
    assert summary["all"]["cnr_ratio_pred_true"] == pytest.approx(1.0)
    assert summary["behind_rib"]["fraction_pred_above_se"] == 1.0


def test_cropped_projection_equals_the_full_grid_projection():
    # The box crop is an optimisation: masks and chords must equal projecting the whole label grid.
    from transforms.drr import project_line_integrals

    labels = np.zeros((40, 30, 36), np.uint8)
    labels[5:9, 20:24, 10:13] = 1
    labels[30:33, 4:6, 25:30] = 2
    affine = np.diag([-3.0, 3.5, 4.0, 1.0])
    affine[:3, 3] = (50.0, -40.0, 7.0)
    geometry = ProjectionGeometry(angle_deg=25.0, detector_shape=(40, 40), pixel_spacing_mm=5.0, shift_mm=(4.0, 0.0, -3.0))
    _, chords, values = project_tumour_masks(labels, affine, geometry)
    one_hot = np.stack([(labels == v) for v in (1, 2)]).astype(np.float32)
    full = project_line_integrals(one_hot, affine, geometry).numpy()
    assert values == [1, 2] and np.allclose(chords, full, atol=1e-5 * full.max())
