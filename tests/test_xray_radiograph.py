"""DRR realism (pipeline/xray/radiograph.py): noise level against Poisson statistics, scatter against the
uniform-field closed form, PSF width, photon scaling laws, seeded shared noise, the switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.xray.radiograph import (
    REFERENCE_LOG_ATTENUATION,
    RadiographRealismd,
    RealismConfig,
    detector_blur,
    noise_field,
    photons_per_pixel,
    realistic_log_image,
    realistic_xray_images,
)


def test_quantum_noise_matches_poisson_statistics():
    # Uniform log image l = 2: lambda = n0 exp(-2) counts; var(-ln I) = 1 / lambda (delta method).
    shape, n0 = (128, 128), 2.0e4
    out = realistic_log_image(np.full(shape, 2.0), photons=n0, spr=0.0, scatter_sigma_px=1.0, psf_sigma_px=0.0,
                              normal=noise_field(3, 0, shape))
    lam = n0 * np.exp(-2.0)
    assert float(out.mean()) == pytest.approx(2.0, abs=0.01)
    assert float(out.std()) == pytest.approx(1.0 / np.sqrt(lam), rel=0.05)


@pytest.mark.parametrize("log_value", [REFERENCE_LOG_ATTENUATION, 2.0])
def test_uniform_scatter_lowers_the_log_by_ln_one_plus_spr(log_value):
    # Uniform slab: S/P = spr * l / l_ref, so the log image drops by ln(1 + S/P).
    shape = (64, 64)
    out = realistic_log_image(np.full(shape, log_value), photons=1e12, spr=0.5, scatter_sigma_px=8.0,
                              psf_sigma_px=0.0, normal=np.zeros(shape))
    assert np.allclose(out, log_value - np.log(1.0 + 0.5 * log_value / REFERENCE_LOG_ATTENUATION), atol=1e-5)
    air = realistic_log_image(np.zeros(shape), photons=1e12, spr=0.5, scatter_sigma_px=8.0, psf_sigma_px=0.0,
                              normal=np.zeros(shape))
    assert np.allclose(air, 0.0, atol=1e-6)  # air emits no scatter
    # A dense square loses contrast: scatter from its bright surroundings fills it in.
    step = np.full(shape, 1.0)
    step[24:40, 24:40] = 3.0
    hazy = realistic_log_image(step, photons=1e12, spr=0.5, scatter_sigma_px=8.0, psf_sigma_px=0.0,
                               normal=np.zeros(shape))
    assert hazy[32, 32] - hazy[4, 4] < 0.9 * 2.0  # 2.0 without scatter


def test_detector_blur_has_the_stated_sigma():
    delta = np.zeros((65, 65))
    delta[32, 32] = 1.0
    psf = detector_blur(delta, sigma_px=2.0)
    r2 = ((np.arange(65) - 32.0) ** 2)[:, None] * psf
    assert psf.sum() == pytest.approx(1.0) and np.sqrt(r2.sum() / psf.sum()) == pytest.approx(2.0, rel=0.02)


def test_photons_scale_with_mas_area_and_inverse_square():
    base = photons_per_pixel(120.0, mas=1.0, pixel_spacing_mm=1.0, sdd_mm=1000.0)
    assert photons_per_pixel(120.0, mas=4.0, pixel_spacing_mm=1.0, sdd_mm=1000.0) == pytest.approx(4 * base)
    assert photons_per_pixel(120.0, mas=1.0, pixel_spacing_mm=2.0, sdd_mm=2000.0) == pytest.approx(base)
    assert photons_per_pixel(60.0, mas=1.0, pixel_spacing_mm=1.0, sdd_mm=1000.0) < base  # softer beam, fewer photons


def _images(shape=(48, 48)):
    rng = np.random.default_rng(0)
    low = torch.from_numpy(2.0 + 0.3 * rng.random(shape)).float()
    return {"se": 0.6 * low, "low": low, "high": 0.6 * low}


def test_seeded_shared_noise_and_switch():
    images, config = _images(), RealismConfig(mas_high=0.05, mas_low=0.2, spr=0.0, psf_sigma_mm=0.0)
    a = realistic_xray_images(images, config=config, pixel_spacing_mm=1.5, seed=1)
    b = realistic_xray_images(images, config=config, pixel_spacing_mm=1.5, seed=1)
    c = realistic_xray_images(images, config=config, pixel_spacing_mm=1.5, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["high"], c["high"])
    assert torch.equal(a["se"], a["high"])  # one 120 kVp exposure
    low_noise, high_noise = a["low"] - images["low"], a["high"] - images["high"]  # no scatter: pure noise
    assert abs(float(np.corrcoef(low_noise.ravel(), high_noise.ravel())[0, 1])) < 0.5  # separate exposures
    off = realistic_xray_images(images, config=RealismConfig(enabled=False), pixel_spacing_mm=1.5)
    assert all(torch.equal(off[k], images[k]) for k in images)
    with pytest.raises(ValueError):
        RealismConfig(spr=-1.0)


def test_dict_transform_recomputes_dual_energy():
    images = _images()
    transform = RadiographRealismd(config=RealismConfig(mas_high=0.05, mas_low=0.2), pixel_spacing_key="pitch",
                                   seed_key="index")
    out = transform({**images, "pitch": 1.5, "index": 4})
    assert set(out) >= {"se", "low", "high", "de_soft", "de_bone"}
    # The DE subtraction amplifies the noise of the pair, a known cost of dual energy.
    assert float((out["de_soft"] - out["de_soft"].mean()).std()) > float((out["high"] - images["high"]).std())
    assert torch.allclose(out["de_soft"] + out["de_bone"], out["high"], atol=1e-4)


def test_dual_energy_pair_is_scatter_corrected_and_se_keeps_scatter():
    images = _images()
    config = RealismConfig(mas_high=1e6, mas_low=1e6, psf_sigma_mm=0.0)  # noise negligible
    out = realistic_xray_images(images, config=config, pixel_spacing_mm=1.5)
    assert torch.allclose(out["high"], images["high"], atol=2e-3)  # ideal scatter correction
    assert torch.allclose(out["low"], images["low"], atol=2e-3)
    assert float((images["se"] - out["se"]).min()) > 0.05  # scatter lowers the raw SE log image
    raw = realistic_xray_images(images, config=RealismConfig(mas_high=1e6, mas_low=1e6, psf_sigma_mm=0.0,
                                                             scatter_in_de=True), pixel_spacing_mm=1.5)
    assert torch.allclose(raw["high"], raw["se"], atol=1e-6)  # uncorrected: the same image
