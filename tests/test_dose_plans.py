"""pyRadPlan wrapper: geometry round trip (NIfTI RAS -> LPS -> dose grid -> RAS), recomputation on the
same and on a denser volume (proton range pull-back from the stopping-power curve)."""

import nibabel as nib
import numpy as np
import pytest

from pipeline.dose.plans import (
    DoseGrid,
    PlanSettings,
    dose_grid_affine,
    optimise_plan,
    recompute_dose,
    to_dose_grid,
    to_lps,
)

SPACING = 3.0
TARGET_RAS_VOXEL = (26, 20, 15)


def _phantom_image():
    """RAS-ordered water box in air (40 x 40 x 30 at 3 mm) and a 12 mm target sphere off-centre."""
    hu = np.full((40, 40, 30), -1000.0, np.float32)
    hu[5:35, 5:35, 3:27] = 0.0
    grid = np.ogrid[:40, :40, :30]
    target = sum(((g - c) * SPACING) ** 2 for g, c in zip(grid, TARGET_RAS_VOXEL)) <= 12.0**2
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = (-50.0, 20.0, 7.0)
    return nib.Nifti1Image(hu, affine), nib.Nifti1Image(target.astype(np.uint8), affine)


@pytest.fixture(scope="module")
def proton_case():
    ct_image, target_image = _phantom_image()
    hu, affine_lps = to_lps(ct_image)
    target = to_lps(target_image)[0] > 0
    body = hu > -500
    settings = PlanSettings(modality="protons", gantry_angles=(90.0,), dose_grid_mm=3.0, bixel_width_mm=5.0)
    plan = optimise_plan(hu, target=target, body=body, spacing_mm=(SPACING,) * 3, settings=settings)
    return ct_image, hu, affine_lps, target, body, plan


def test_to_lps_keeps_world_positions():
    ct_image, target_image = _phantom_image()
    target_lps, affine_lps = to_lps(target_image)
    assert nib.aff2axcodes(affine_lps) == ("L", "P", "S")
    world_ras = (target_image.affine @ [*np.argwhere(target_image.get_fdata() > 0).mean(0), 1])[:3]
    world_lps = (affine_lps @ [*np.argwhere(target_lps > 0).mean(0), 1])[:3]
    np.testing.assert_allclose(world_lps, world_ras, atol=1e-6)


def test_dose_grid_affine_and_sampling():
    affine_lps = np.diag([-2.0, -2.0, 2.5, 1.0])
    affine_lps[:3, 3] = (10.0, 20.0, -30.0)
    grid = DoseGrid(shape=(5, 5, 4), origin_mm=(0.0, 0.0, 0.0), spacing_mm=(4.0, 4.0, 5.0))
    out = dose_grid_affine(affine_lps, grid)
    # dose voxel (1, 2, 3) sits at LPS-frame mm (4, 8, 15) = CT voxel (2, 4, 6)
    np.testing.assert_allclose((out @ [1, 2, 3, 1])[:3], (affine_lps @ [2, 4, 6, 1])[:3])
    volume = np.zeros((10, 10, 12), np.float32)
    volume[2, 4, 6] = 1.0
    assert to_dose_grid(volume, spacing_mm=(2.0, 2.0, 2.5), grid=grid)[1, 2, 3] == 1.0


def test_proton_high_dose_lands_on_the_target_in_world_coordinates(proton_case):
    ct_image, hu, affine_lps, target, body, plan = proton_case
    assert plan.dose.max() > 0
    high = np.argwhere(plan.dose >= 0.9 * plan.settings.prescription_gy).mean(0)
    world_dose = (dose_grid_affine(affine_lps, plan.grid) @ [*high, 1])[:3]
    world_target = (ct_image.affine @ [*TARGET_RAS_VOXEL, 1])[:3]
    np.testing.assert_allclose(world_dose, world_target, atol=4.0)


def _distal_r50_mm(profile: np.ndarray, level: float) -> float:
    """Position (mm, LPS x) where the dose first rises above ``level`` coming from low x (the distal side
    of a beam travelling towards -x)."""
    i = int(np.argmax(profile >= level))
    return SPACING * (i - 1 + (level - profile[i - 1]) / (profile[i] - profile[i - 1]))


def test_same_volume_recomputes_same_dose_and_denser_sct_pulls_range_back(proton_case):
    ct_image, hu, affine_lps, target, body, plan = proton_case
    same = recompute_dose(plan, hu, target=target, body=body)
    np.testing.assert_allclose(same, plan.dose, atol=1e-5)
    denser = recompute_dose(plan, np.where(body, hu + 50.0, hu), target=target, body=body)
    centre = np.rint(np.argwhere(target).mean(0)).astype(int)
    level = 0.5 * plan.settings.prescription_gy
    r_ct = _distal_r50_mm(plan.dose[:, centre[1], centre[2]], level)
    r_sct = _distal_r50_mm(denser[:, centre[1], centre[2]], level)
    entry_mm = 34.5 * SPACING  # water face the beam enters (LPS x), beam travels towards -x
    path = entry_mm - r_ct
    drsp = 50.0 * (1.095 - 1.0) / 100.0  # slope of the matRad table between 0 and 100 HU
    # denser sCT: the distal edge moves upstream (towards the entry, +x) by path * drsp / (1 + drsp)
    assert r_sct - r_ct == pytest.approx(path * drsp / (1 + drsp), abs=0.6)


def test_photon_plan_recompute_and_denser_volume_attenuates():
    ct_image, target_image = _phantom_image()
    hu, _ = to_lps(ct_image)
    target = to_lps(target_image)[0] > 0
    body = hu > -500
    settings = PlanSettings(modality="photons", gantry_angles=(0.0, 120.0, 240.0), dose_grid_mm=6.0, max_iter=50)
    plan = optimise_plan(hu, target=target, body=body, spacing_mm=(SPACING,) * 3, settings=settings)
    target_d = to_dose_grid(target, spacing_mm=(SPACING,) * 3, grid=plan.grid) > 0.5
    assert plan.dose[target_d].mean() == pytest.approx(2.0, rel=1e-4)  # normalised to the prescription
    np.testing.assert_allclose(recompute_dose(plan, hu, target=target, body=body), plan.dose, atol=1e-5)
    denser = recompute_dose(plan, np.where(body, hu + 300.0, hu), target=target, body=body)
    assert denser[target_d].mean() < plan.dose[target_d].mean() - 0.02  # more attenuation upstream
