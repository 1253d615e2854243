"""Per-image measures of 2-D predictions (pipeline.xray.image_measures): sharpness and texture of the bone image,
the leak split by bone source."""

from __future__ import annotations

import numpy as np
import pytest


def test_edge_gain_reads_blur_not_noise_or_broad_offsets():
    from scipy import ndimage

    from pipeline.xray.image_measures import edge_gain

    rows = np.arange(128)[:, None] * np.ones((1, 128))
    truth = 0.8 * ((rows % 24) < 8) + 0.002 * rows  # 8-pixel "ribs" every 24 rows on a slope
    body = np.ones_like(truth, bool)
    assert edge_gain(truth, truth, body, sigma_px=2.0) == pytest.approx(1.0)
    assert edge_gain(1.5 * truth, truth, body, sigma_px=2.0) == pytest.approx(1.5)
    blurred = ndimage.gaussian_filter(truth, 2.0)
    assert edge_gain(blurred, truth, body, sigma_px=2.0) < 0.7
    noisy = truth + np.random.default_rng(0).normal(0.0, 0.2, truth.shape)
    assert edge_gain(noisy, truth, body, sigma_px=2.0) == pytest.approx(1.0, abs=0.05)
    broad = truth + 0.5 * np.sin(rows / 40.0)  # a smooth, rib-free correction leaves the edges alone
    assert edge_gain(broad, truth, body, sigma_px=2.0) == pytest.approx(1.0, abs=0.05)


def test_checkerboard_ratio_flags_a_period_two_pattern():
    from scipy import ndimage

    from pipeline.xray.image_measures import checkerboard_ratio

    yy, xx = np.mgrid[:64, :64]
    truth = ndimage.gaussian_filter(((xx // 8 + yy // 8) % 2).astype(float), 3.0)
    body = np.ones_like(truth, bool)
    assert checkerboard_ratio(truth, truth, body) == pytest.approx(1.0)
    pattern = 0.02 * (-1.0) ** (xx + yy)  # 2 % of the range, period 2
    assert checkerboard_ratio(truth + pattern, truth, body) > 3.0
    assert checkerboard_ratio(ndimage.gaussian_filter(truth, 1.0), truth, body) < 1.0


def test_high_pass_matches_the_loss_filter_inside_the_image():
    import torch

    from networks.losses import high_pass as high_pass_torch
    from pipeline.xray.image_measures import high_pass

    image = np.random.default_rng(0).normal(size=(48, 40))
    ours = high_pass(image, 3.0)
    theirs = high_pass_torch(torch.from_numpy(image)[None, None], 3.0)[0, 0].numpy()
    # the edges are replicated by both; the kernels are sampled differently (scipy) and erf-integrated (MONAI)
    assert np.abs(ours - theirs)[12:-12, 12:-12].max() < 0.02 * np.abs(ours).max()


def test_source_leak_fit_recovers_each_source_and_the_gain():
    from pipeline.xray.image_measures import source_leak_fit

    rng = np.random.default_rng(0)
    soft, ribs, iodine = (rng.normal(size=4000) for _ in range(3))
    error = 0.1 * soft + 0.2 * ribs + 0.7 * iodine + 3.0  # the constant is free
    leaks, gain = source_leak_fit(error, soft, [ribs, iodine])
    assert leaks == pytest.approx([0.2, 0.7]) and gain == pytest.approx(0.1)
    one, _ = source_leak_fit(0.4 * (ribs + iodine), soft, [ribs + iodine])
    assert one == pytest.approx([0.4])
    # a source that is another's copy, or constant: the split is undefined
    assert all(np.isnan(source_leak_fit(error, soft, [ribs, 2.0 * ribs])[0]))
    assert np.isnan(source_leak_fit(error, soft, [ribs, np.ones_like(ribs)])[1])
