"""Gamma, DVH metrics and dose differences against hand-computed values."""

import numpy as np
import pytest

from pipeline.dose.compare import (
    dose_difference_metrics,
    dvh_curve,
    dvh_differences,
    dvh_metrics,
    gamma_index,
    gamma_pass_rate,
)


def _dose():
    x = np.arange(20)[:, None, None] * 3.0
    return np.broadcast_to(2.0 * np.exp(-((x - 30.0) / 20.0) ** 2), (20, 12, 10)).copy()


def test_identical_doses_pass_gamma_and_have_no_dvh_difference():
    dose = _dose()
    gamma = gamma_index(dose, dose, spacing_mm=(3, 3, 3), normalisation_gy=2.0)
    assert gamma_pass_rate(gamma) == 100.0
    assert np.nanmax(gamma) == 0.0
    mask = dose > 1.0
    assert all(v == 0.0 for v in dvh_differences(dose, dose, mask, prescription_gy=2.0).values())


def test_gamma_fails_a_dose_error_above_tolerance_and_passes_a_shift_below_dta():
    flat = np.full((10, 10, 10), 2.0)  # uniform: no neighbour can rescue a dose error
    assert gamma_pass_rate(gamma_index(flat, flat * 1.05, spacing_mm=(3, 3, 3), normalisation_gy=2.0)) == 0.0
    assert gamma_pass_rate(gamma_index(flat, flat * 1.015, spacing_mm=(3, 3, 3), normalisation_gy=2.0)) == 100.0
    dose = _dose()
    shifted = np.concatenate([dose[:1], dose[:-1]], axis=0)  # 3 mm shift: fails 2 mm DTA on the gradient, passes 3 mm/3 %
    g2 = gamma_index(dose, shifted, spacing_mm=(3, 3, 3), normalisation_gy=2.0, dose_percent=1.0, distance_mm=2.0)
    g3 = gamma_index(dose, shifted, spacing_mm=(3, 3, 3), normalisation_gy=2.0, dose_percent=3.0, distance_mm=3.5)
    inner = np.zeros(dose.shape, bool)
    inner[:-1] = True  # the shifted match of the last slice lies outside the grid
    assert gamma_pass_rate(g2, region=inner) < 90.0 and gamma_pass_rate(g3, region=inner) == 100.0
    assert gamma_pass_rate(g3) < 100.0


def test_dvh_metrics_of_known_distribution():
    dose = np.arange(1, 101, dtype=float).reshape(100, 1, 1)  # 1..100 Gy, one voxel each
    m = dvh_metrics(dose, np.ones_like(dose, bool))
    assert m["Dmean"] == pytest.approx(50.5)
    assert m["D50"] == pytest.approx(50.5)
    assert m["D98"] == pytest.approx(2.98)  # numpy linear percentile 2 of 1..100
    assert m["D2"] == pytest.approx(98.02)
    curve = dvh_curve(dose, np.ones_like(dose, bool), bins_gy=np.array([0.0, 50.0, 100.0, 101.0]))
    np.testing.assert_allclose(curve, [100.0, 51.0, 1.0, 0.0])


def test_differences_are_percent_of_prescription():
    ref = np.full((4, 4, 4), 2.0)
    ev = ref + 0.1
    diffs = dvh_differences(ref, ev, np.ones(ref.shape, bool), prescription_gy=2.0)
    assert diffs["D98_diff_pct"] == pytest.approx(5.0) and diffs["Dmean_diff_pct"] == pytest.approx(5.0)
    ev[0] -= 0.2
    dd = dose_difference_metrics(ref, ev, ref >= 1.8, prescription_gy=2.0)
    assert dd["dose_mae_pct"] == pytest.approx(5.0)
    assert dd["dose_me_pct"] == pytest.approx((3 * 5.0 - 5.0) / 4)
