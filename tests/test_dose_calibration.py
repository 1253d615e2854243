"""HU -> RSP/RED curves: node values, interpolation, clamping, file loading, agreement with pyRadPlan."""

import numpy as np
import pytest

from pipeline.dose.calibration import MATRAD_GENERIC, Calibration, hu_to_red, hu_to_rsp, load_calibration


def test_water_air_and_interpolation_between_nodes():
    # the documented table: 0 HU -> 1.0, 100 HU -> 1.095, -1000 HU -> 0.001
    assert hu_to_rsp(np.array([0.0]))[0] == pytest.approx(1.0)
    assert hu_to_rsp(np.array([50.0]))[0] == pytest.approx(1.0475, abs=1e-6)
    assert hu_to_rsp(np.array([-1000.0]))[0] == pytest.approx(0.001)
    assert hu_to_red(np.array([225.0]))[0] == pytest.approx((1.095 + 1.199) / 2, abs=1e-6)


def test_clamped_outside_table_and_monotone():
    values = hu_to_rsp(np.array([-3000.0, 5000.0]))
    assert values[0] == pytest.approx(0.001) and values[1] == pytest.approx(2.505)
    grid = hu_to_rsp(np.linspace(-1100, 3100, 500))
    assert np.all(np.diff(grid) >= 0)


def test_slope_of_soft_tissue_segment():
    assert MATRAD_GENERIC.slope(50.0) == pytest.approx(0.095 / 100.0)


def test_invalid_tables_rejected():
    with pytest.raises(ValueError):
        Calibration(hu=(0.0, 0.0), value=(1.0, 1.0))
    with pytest.raises(ValueError):
        Calibration(hu=(0.0, 1.0), value=(1.0, -1.0))


def test_load_calibration_file(tmp_path):
    path = tmp_path / "hlut.csv"
    path.write_text("HU,RSP\n# comment\n1000, 1.5\n-1000, 0.0\n0, 1.0\n")
    cal = load_calibration(path)
    assert cal.hu == (-1000.0, 0.0, 1000.0)
    assert cal(np.array([500.0]))[0] == pytest.approx(1.25)


def test_default_matches_pyradplan_engine_table():
    import pyRadPlan.ct as ct
    np.testing.assert_allclose(MATRAD_GENERIC.as_table(), ct.default_hlut())
