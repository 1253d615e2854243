"""SynthRAD2023 metrics against hand-computed values and a brute-force SSIM reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.report import metrics


def _pair_2x2x2():
    """CT all 0 HU; sCT errors +10, -10, +20, 0 in the 4 masked voxels, and a huge error outside."""
    ct = np.zeros((2, 2, 2), dtype=np.int16)
    sct = np.zeros((2, 2, 2), dtype=np.float32)
    mask = np.zeros((2, 2, 2), dtype=np.uint8)
    mask[0] = 1  # voxels [0, :, :]
    sct[0, 0, 0], sct[0, 0, 1], sct[0, 1, 0], sct[0, 1, 1] = 10, -10, 20, 0
    sct[1, 1, 1] = 2500  # outside the mask: must not count
    return sct, ct, mask


def test_mae_me_psnr_by_hand():
    sct, ct, mask = _pair_2x2x2()
    assert metrics.mae(sct, ct, mask) == pytest.approx(40 / 4)
    assert metrics.me(sct, ct, mask) == pytest.approx(20 / 4)
    mse = (100 + 100 + 400 + 0) / 4
    assert metrics.psnr(sct, ct, mask) == pytest.approx(10 * math.log10(4024**2 / mse))


def test_psnr_clips_to_hu_window_and_identical_is_inf():
    ct = np.full((2, 2, 2), 3000.0)
    sct = np.full((2, 2, 2), 3000.0)
    sct[0, 0, 0] = 5000.0  # clipped to 3000: no error for PSNR, but MAE sees it (raw HU)
    sct[1, 1, 1] = 2900.0
    mask = np.ones((2, 2, 2))
    assert metrics.psnr(sct, ct, mask) == pytest.approx(10 * math.log10(4024**2 / (100**2 / 8)))
    assert metrics.mae(sct, ct, mask) == pytest.approx((2000 + 100) / 8)
    assert metrics.psnr(ct, ct, mask) == math.inf


def _brute_force_ssim_map(x: np.ndarray, y: np.ndarray, *, sigma=1.5, radius=5, data_range=4024.0):
    """Gaussian-weighted local statistics voxel by voxel (edges mirrored, 'symmetric' = scipy 'reflect')."""
    t = np.arange(-radius, radius + 1)
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    xp, yp = np.pad(x, radius, mode="symmetric"), np.pad(y, radius, mode="symmetric")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.empty(x.shape)
    for i, j, k in np.ndindex(x.shape):
        px = xp[i : i + 2 * radius + 1, j : j + 2 * radius + 1, k : k + 2 * radius + 1]
        py = yp[i : i + 2 * radius + 1, j : j + 2 * radius + 1, k : k + 2 * radius + 1]
        mx, my = (w * px).sum(), (w * py).sum()
        vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
        cxy = (w * (px - mx) * (py - my)).sum()
        out[i, j, k] = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return out


@pytest.fixture
def ssim_case():
    rng = np.random.default_rng(3)
    shape = (10, 9, 8)
    ct = rng.normal(0, 300, shape)
    ct[2:6, 2:6, 2:6] = 1200.0  # "bone" block
    sct = ct + rng.normal(0, 150, shape)
    sct[0, 0, 0] = 4500.0  # above the window: clipped
    mask = np.zeros(shape, dtype=np.uint8)
    mask[1:9, 1:8, 1:7] = 1
    return sct, ct, mask


def _prepared(volume, mask):
    out = np.clip(volume, -1024, 3000)
    out[mask == 0] = -1024
    return out + 1024


def test_ssim_identical_is_one(ssim_case):
    _, ct, mask = ssim_case
    assert metrics.ssim(ct, ct, mask) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_brute_force_with_border_crop(ssim_case):
    sct, ct, mask = ssim_case
    reference_map = _brute_force_ssim_map(_prepared(sct, mask), _prepared(ct, mask))
    np.testing.assert_allclose(metrics.ssim_map(sct, ct, mask), reference_map, rtol=1e-9, atol=1e-12)
    crop = (slice(3, -3),) * 3
    expected = reference_map[crop][mask[crop] > 0].mean()
    expected_no_crop = reference_map[mask > 0].mean()
    value = metrics.ssim(sct, ct, mask)
    assert value < 0.999
    assert value == pytest.approx(expected, rel=1e-9)
    assert metrics.ssim(sct, ct, mask, border=0) == pytest.approx(expected_no_crop, rel=1e-9)
    assert abs(expected - expected_no_crop) > 1e-4  # the crop really changes which voxels count


def test_ssim_ignores_values_outside_mask(ssim_case):
    sct, ct, mask = ssim_case
    changed = sct.copy()
    changed[mask == 0] = 2000.0
    assert metrics.ssim(changed, ct, mask) == pytest.approx(metrics.ssim(sct, ct, mask), rel=1e-12)


def test_ssim_mask_only_in_border_is_rejected(ssim_case):
    sct, ct, _ = ssim_case
    shell = np.ones(ct.shape, dtype=np.uint8)
    shell[3:-3, 3:-3, 3:-3] = 0
    with pytest.raises(ValueError, match="border"):
        metrics.ssim(sct, ct, shell)
    assert 0 < metrics.ssim(sct, ct, shell, border=0) < 1


def test_bone_dice_known_masks():
    ct = np.zeros((4, 4, 4))
    sct = np.zeros((4, 4, 4))
    ct[0, :, :] = 1000  # 16 bone voxels
    sct[0, :2, :] = 800  # 8 of them
    sct[1, :2, :] = 800  # plus 8 false positives
    assert metrics.bone_dice(sct, ct) == pytest.approx(2 * 8 / (16 + 16))
    mask = np.zeros((4, 4, 4))
    mask[0] = 1  # only the true bone slice: 8 overlap, sCT 8, CT 16
    assert metrics.bone_dice(sct, ct, mask) == pytest.approx(2 * 8 / (8 + 16))
    assert metrics.bone_dice(sct, ct, threshold_hu=900) == pytest.approx(0.0)
    assert math.isnan(metrics.bone_dice(sct, ct, threshold_hu=2000))  # no bone anywhere: undefined
    assert metrics.bone_dice_at(sct, ct, None, thresholds=(250, 900)) == {250.0: pytest.approx(0.5), 900.0: 0.0}


def test_region_statistics_by_hand():
    ct = np.array([-1000, -500, 0, 40, 300, 1500, 0, 0], dtype=float).reshape(2, 2, 2)
    error = np.array([100, -50, 10, -30, 200, -400, 999, 999], dtype=float).reshape(2, 2, 2)
    mask = np.array([1, 1, 1, 1, 1, 1, 0, 0]).reshape(2, 2, 2)
    labels = np.array([1, 1, 2, 2, 2, 0, 1, 0]).reshape(2, 2, 2)
    stats = {r["region"]: r for r in metrics.region_statistics(ct + error, ct, mask, labels=labels,
                                                              label_names={1: "skull", 2: "brain", 7: "absent"})}
    assert list(stats) == ["body", "air", "soft_tissue", "bone", "skull", "brain", "absent"]
    assert stats["air"]["n_voxels"] == 2
    assert stats["air"]["mae_hu"] == pytest.approx(75)
    assert stats["air"]["me_hu"] == pytest.approx(25)
    assert stats["air"]["sd_hu"] == pytest.approx(75)  # errors 100, -50 around mean 25
    assert stats["soft_tissue"]["me_hu"] == pytest.approx(-10)
    assert stats["bone"]["mae_hu"] == pytest.approx(300)
    assert stats["body"]["n_voxels"] == 6
    assert stats["body"]["mae_hu"] == pytest.approx(790 / 6)
    assert stats["skull"]["n_voxels"] == 2  # label 1 outside the mask is excluded
    assert stats["brain"]["me_hu"] == pytest.approx(60)
    assert stats["absent"]["n_voxels"] == 0 and math.isnan(stats["absent"]["mae_hu"])


@pytest.mark.parametrize("fn", [metrics.mae, metrics.me, metrics.psnr, metrics.ssim, metrics.region_statistics])
def test_bad_inputs_raise_clear_errors(fn):
    ct = np.zeros((8, 8, 8))
    mask = np.ones((8, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        fn(np.zeros((8, 8, 7)), ct, mask)
    with pytest.raises(ValueError, match="mask is empty"):
        fn(ct, ct, np.zeros_like(mask))
    bad = ct.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="sCT contains 1 NaN"):
        fn(bad, ct, mask)
