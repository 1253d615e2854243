"""SynthRAD metrics against hand-computed values, scikit-image's SSIM and the official definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from pipeline.report import metrics
from synthrad_reference import official_ms_ssim, official_ssim


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


def test_ssim_identical_is_one(ssim_case):
    _, ct, mask = ssim_case
    assert metrics.ssim(ct, ct, mask) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_scikit_image_and_the_official_definition(ssim_case):
    sct, ct, mask = ssim_case
    expected, reference_map = official_ssim(sct, ct, mask)
    np.testing.assert_allclose(metrics.ssim_map(sct, ct, mask), reference_map, rtol=0, atol=1e-9)
    value = metrics.ssim(sct, ct, mask)
    assert value < 0.999
    assert abs(value - expected) <= 1e-6
    expected_no_crop = reference_map[mask > 0].mean()
    assert metrics.ssim(sct, ct, mask, border=0) == pytest.approx(expected_no_crop, abs=1e-9)
    assert abs(expected - expected_no_crop) > 1e-4  # the crop really changes which voxels count


def test_ssim_2d_map_matches_scikit_image():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 100, (20, 17)), rng.uniform(0, 100, (20, 17))
    _, reference = structural_similarity(x, y, data_range=100.0, full=True)
    np.testing.assert_allclose(metrics.structural_similarity_map(x, y, data_range=100.0), reference, atol=1e-9)


def test_ms_ssim_matches_the_official_synthrad2025_definition(ssim_case):
    sct, ct, mask = ssim_case
    value = metrics.ms_ssim(sct, ct, mask)
    assert abs(value - official_ms_ssim(sct, ct, mask)) <= 1e-6
    assert 0.0 < value < 1.0 - 1e-4  # noise must cost something (padding to 97 voxels dilutes it)
    assert metrics.ms_ssim(ct, ct, mask) == pytest.approx(1.0, abs=1e-9)


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


def test_uncertainty_rank_correlation():
    from pipeline.report.metrics import uncertainty_rank_correlation

    rng = np.random.default_rng(0)
    ct = np.where(rng.random((10, 10, 10)) < 0.3, 600.0, 20.0)
    ct[:2] = -900.0
    error = rng.normal(0, 50, ct.shape)
    sct, mask = ct + error, np.ones(ct.shape)
    mask[-1] = 0  # outside voxels must not count: give them a std that would ruin the ranking
    perfect = np.abs(error) ** 2  # any increasing function of |error| ranks it perfectly
    perfect[-1] = 1e6 - perfect[-1]
    rho = uncertainty_rank_correlation(perfect, sct, ct, mask)
    assert set(rho) == {"body", "air", "soft_tissue", "bone"}
    assert all(value == pytest.approx(1.0) for value in rho.values())
    assert uncertainty_rank_correlation(-np.abs(error), sct, ct, mask)["body"] == pytest.approx(-1.0)
    assert abs(uncertainty_rank_correlation(rng.random(ct.shape), sct, ct, mask)["body"]) < 0.15
    assert np.isnan(uncertainty_rank_correlation(np.ones(ct.shape), sct, ct, mask)["body"])  # constant map
    with pytest.raises(ValueError, match="shape"):
        uncertainty_rank_correlation(np.ones((2, 2, 2)), sct, ct, mask)
