"""Polyenergetic physics (pipeline/xray/physics.py): mu/rho against NIST values, spectra, energy
dependence, and dual-energy cancellation of bone and of soft tissue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.xray.physics import (
    cancellation_weight,
    dual_energy_subtraction,
    effective_mass_attenuation,
    log_image,
    mass_attenuation,
    polyenergetic_intensity,
    tube_spectrum,
    xray_images,
)

# REFERENCE.md (NIST, ICRU-44): mu/rho in cm^2/g at 40/60/80/100 keV.
REFERENCE_MU = {"bone": [0.666, 0.315, 0.223, 0.186], "soft_tissue": [0.269, 0.205, 0.182, 0.169]}


@pytest.mark.parametrize("material", sorted(REFERENCE_MU))
def test_mass_attenuation_matches_nist(material):
    mu = mass_attenuation(material, [40.0, 60.0, 80.0, 100.0])
    assert mu.shape == (4,)
    np.testing.assert_allclose(mu, REFERENCE_MU[material], rtol=0.03)


def test_spectra_are_cached_and_plausible():
    high, low = tube_spectrum(120.0), tube_spectrum(60.0)
    assert tube_spectrum(120.0) is high  # lru_cache
    assert 50.0 < high.mean_energy_kev < 60.0  # REFERENCE.md: ~54 keV at 120 kVp, 2.5 mm Al
    assert low.mean_energy_kev < high.mean_energy_kev
    assert high.energies_kev.max() <= 120.0 and low.energies_kev.max() <= 60.0
    assert high.detector_weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kVp"):
        tube_spectrum(300.0)


def test_intensity_is_one_without_material_and_decreases_with_thickness():
    lines = torch.tensor([[0.0, 5.0, 10.0, 20.0], [0.0, 0.0, 0.0, 0.0]])
    intensity = polyenergetic_intensity(lines, kvp=120.0)
    assert intensity.shape == (4,)
    assert float(intensity[0]) == pytest.approx(1.0)
    assert torch.all(intensity[1:] < intensity[:-1]) and torch.all(intensity > 0)
    with pytest.raises(ValueError, match="channels"):
        polyenergetic_intensity(torch.zeros(3, 2), kvp=120.0)


def test_bone_attenuates_more_at_low_kvp():
    bone_only = torch.tensor([[0.0], [2.0]])  # 2 g/cm^2 of bone
    log_low = log_image(polyenergetic_intensity(bone_only, kvp=60.0))
    log_high = log_image(polyenergetic_intensity(bone_only, kvp=120.0))
    assert float(log_low) > 1.3 * float(log_high) > 0
    # Effective mu/rho lies inside the spectrum's range and falls with kVp.
    assert effective_mass_attenuation("bone", 60.0) > effective_mass_attenuation("bone", 120.0) > 0.15


def _slab_images(soft_g_cm2, bone_g_cm2):
    lines = torch.tensor([soft_g_cm2, bone_g_cm2], dtype=torch.float32)
    return xray_images(lines)


@pytest.mark.parametrize("bone_insert", [0.5, 1.0, 1.5])
def test_soft_tissue_image_cancels_a_bone_insert(bone_insert):
    # Uniform 15 g/cm^2 soft-tissue slab (the default reference background); a bone insert of
    # 0.5-1.5 g/cm^2 (~2.5-8 mm cortical bone) adds bone on some rays. Beam hardening makes the
    # cancellation thickness dependent (docs/xray_physics.md): exact at 1 g/cm^2, < 2 % in this range.
    images = _slab_images([15.0, 15.0], [0.0, bone_insert])
    bone_contrast = float(images["high"][1] - images["high"][0])
    residual = float(images["de_soft"][1] - images["de_soft"][0])
    assert bone_contrast > 0.1
    assert abs(residual) < 0.02 * bone_contrast
    # ... and the bone image keeps that contrast.
    assert float(images["de_bone"][1] - images["de_bone"][0]) > 0.9 * bone_contrast


def test_bone_image_cancels_a_soft_tissue_step():
    images = _slab_images([15.0, 17.0], [0.5, 0.5])
    step = float(images["high"][1] - images["high"][0])
    assert abs(float(images["de_bone"][1] - images["de_bone"][0])) < 0.02 * step
    assert float(images["de_soft"][1] - images["de_soft"][0]) > 0.9 * step


def test_weights_and_decomposition_identity():
    w_bone, w_soft = cancellation_weight("bone"), cancellation_weight("soft_tissue")
    assert 0.3 < w_bone < w_soft < 1.0  # bone's attenuation drops faster with energy
    low, high = torch.tensor([2.0, 3.0]), torch.tensor([1.5, 2.0])
    de = dual_energy_subtraction(low, high)
    torch.testing.assert_close(de["de_soft"] + de["de_bone"], high)
    with pytest.raises(KeyError):
        cancellation_weight("iodine")


def test_reference_background_sets_where_cancellation_is_exact():
    lines = torch.tensor([[20.0, 20.0], [0.0, 1.0]])
    default = xray_images(lines)
    tuned = xray_images(lines, background_soft_tissue_g_cm2=20.0)
    contrast = float(default["high"][1] - default["high"][0])
    assert abs(float(tuned["de_soft"][1] - tuned["de_soft"][0])) < 1e-3 * contrast
    assert abs(float(default["de_soft"][1] - default["de_soft"][0])) > 5e-3 * contrast
