"""Dose comparison: gamma index (pymedphys), DVH metrics and dose differences.

All doses are in Gy on one grid, reference = dose on the real CT, evaluated = the same plan on the sCT.
Differences are reported as percent of the prescription (``100 * (eval - ref) / prescription_gy``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["DVH_METRICS", "dose_difference_metrics", "dvh_curve", "dvh_differences", "dvh_metrics", "gamma_index",
           "gamma_pass_rate"]

#: DVH points reported: D98, D50, D2 (dose to the hottest 98/50/2 % of the volume) and the mean dose.
DVH_METRICS = ("D98", "D50", "D2", "Dmean")


def _check_pair(reference: np.ndarray, evaluated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, evaluated = np.asarray(reference, np.float64), np.asarray(evaluated, np.float64)
    if reference.shape != evaluated.shape:
        raise ValueError(f"dose grids differ: {reference.shape} vs {evaluated.shape}")
    return reference, evaluated


def gamma_index(
    reference: np.ndarray,
    evaluated: np.ndarray,
    *,
    spacing_mm: Sequence[float],
    dose_percent: float = 2.0,
    distance_mm: float = 2.0,
    normalisation_gy: float,
    cutoff_percent: float = 10.0,
    max_gamma: float = 2.0,
    interp_fraction: int = 5,
) -> np.ndarray:
    """Global 3-D gamma map (pymedphys, scipy interpolation) of ``evaluated`` against ``reference``.

    Args:
        spacing_mm: voxel size of both dose grids (mm).
        dose_percent, distance_mm: criteria (% of ``normalisation_gy``, mm).
        normalisation_gy: global dose normalisation, normally the prescription (Gy).
        cutoff_percent: reference voxels below this % of ``normalisation_gy`` are not evaluated (NaN).
        max_gamma: search stops at this gamma (values above are reported as ``max_gamma`` or more).
        interp_fraction: sub-voxel steps of the distance search.
    """
    import pymedphys

    reference, evaluated = _check_pair(reference, evaluated)
    axes = tuple(np.arange(n) * float(s) for n, s in zip(reference.shape, spacing_mm))
    with warnings.catch_warnings():  # pymedphys 0.41 deprecates `quiet` but prints without it
        warnings.filterwarnings("ignore", message=".*quiet.*", category=DeprecationWarning)
        return pymedphys.gamma(axes, reference, axes, evaluated, dose_percent, distance_mm,
                               lower_percent_dose_cutoff=cutoff_percent, interp_fraction=interp_fraction,
                               max_gamma=max_gamma, local_gamma=False, global_normalisation=normalisation_gy,
                               quiet=True, interp_algo="scipy")


def gamma_pass_rate(gamma: np.ndarray, *, region: np.ndarray | None = None) -> float:
    """Percent of evaluated (non-NaN) voxels, optionally within ``region``, with gamma <= 1 (NaN if none)."""
    values = np.asarray(gamma, float)
    if region is not None:
        values = values[np.asarray(region, bool)]
    values = values[np.isfinite(values)]
    return float(100.0 * np.mean(values <= 1.0)) if values.size else float("nan")


def dvh_metrics(dose: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """D98, D50, D2 and Dmean (Gy) of ``dose`` inside ``mask`` (Dx = minimum dose of the hottest x %)."""
    values = np.asarray(dose, np.float64)[np.asarray(mask, bool)]
    if values.size == 0:
        raise ValueError("empty structure: no voxel to compute DVH metrics on")
    return {"D98": float(np.percentile(values, 2.0)), "D50": float(np.percentile(values, 50.0)),
            "D2": float(np.percentile(values, 98.0)), "Dmean": float(values.mean())}


def dvh_differences(
    reference: np.ndarray, evaluated: np.ndarray, mask: np.ndarray, *, prescription_gy: float
) -> dict[str, float]:
    """``<metric>_diff_pct``: evaluated minus reference DVH metric, % of the prescription."""
    reference, evaluated = _check_pair(reference, evaluated)
    ref, ev = dvh_metrics(reference, mask), dvh_metrics(evaluated, mask)
    return {f"{name}_diff_pct": 100.0 * (ev[name] - ref[name]) / prescription_gy for name in DVH_METRICS}


def dose_difference_metrics(
    reference: np.ndarray, evaluated: np.ndarray, region: np.ndarray, *, prescription_gy: float
) -> dict[str, float]:
    """Mean absolute and mean signed dose difference in ``region``, % of the prescription.

    For the high-dose region pass ``reference >= 0.9 * prescription_gy`` (the reference dose decides).
    """
    reference, evaluated = _check_pair(reference, evaluated)
    region = np.asarray(region, bool)
    if not region.any():
        return {"dose_mae_pct": float("nan"), "dose_me_pct": float("nan")}
    diff = (evaluated - reference)[region]
    return {"dose_mae_pct": float(100.0 * np.abs(diff).mean() / prescription_gy),
            "dose_me_pct": float(100.0 * diff.mean() / prescription_gy)}


def dvh_curve(dose: np.ndarray, mask: np.ndarray, *, bins_gy: np.ndarray) -> np.ndarray:
    """Cumulative DVH: percent of ``mask`` volume receiving at least each dose in ``bins_gy`` (Gy)."""
    values = np.sort(np.asarray(dose, np.float64)[np.asarray(mask, bool)])
    if values.size == 0:
        return np.zeros(len(bins_gy))
    return 100.0 * (values.size - np.searchsorted(values, np.asarray(bins_gy), side="left")) / values.size
