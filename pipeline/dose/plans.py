"""pyRadPlan wrapper: a photon or proton plan optimised on the CT, then recomputed (same beams, same
beamlet weights) on another HU volume.

Coordinate conventions. pyRadPlan (like matRad) works in the DICOM/LPS patient frame: x to the
patient's Left, y Posterior, z Superior; gantry 0 irradiates from anterior, gantry 90 from the left.
:func:`to_lps` reorders a NIfTI volume (whose affine maps voxels to RAS world mm) so its voxel axes
are the closest to L, P, S; the volume is then handed to pyRadPlan with origin 0 and identity
direction, i.e. voxel ``(i, j, k)`` sits at ``(i, j, k) * spacing`` mm. Any residual obliquity of the
scan (a few degrees in the phantoms) stays in the affine: beam angles are relative to the voxel axes.
:func:`dose_grid_affine` maps the pyRadPlan dose grid back to RAS world mm for writing NIfTI.

Units: HU in, Gy out (dose per fraction, ``num_of_fractions = 1``), mm for all lengths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline.dose.calibration import MATRAD_GENERIC, Calibration

logger = logging.getLogger(__name__)

__all__ = ["DoseGrid", "PlanResult", "PlanSettings", "dose_grid_affine", "optimise_plan", "recompute_dose",
           "to_dose_grid", "to_lps"]


@dataclass(frozen=True)
class PlanSettings:
    """Beam and optimisation settings of one plan.

    Attributes:
        modality: ``"photons"`` (SVD pencil beam, generic 6 MV machine) or ``"protons"`` (Hong pencil
            beam, generic machine), both from pyRadPlan.
        gantry_angles: coplanar beam angles (degrees, matRad/IEC convention).
        bixel_width_mm: photon beamlet width / proton lateral spot spacing (mm).
        dose_grid_mm: isotropic dose-grid spacing (mm).
        prescription_gy: mean target dose after normalisation (Gy, one fraction).
        max_iter: optimiser iterations (pyRadPlan's scipy L-BFGS-B solver).
        oar_max_fraction: body-minus-target over-dose threshold, as a fraction of the prescription.
        calibration: HU -> water-equivalent ratio table handed to the dose engine.
    """

    modality: str
    gantry_angles: tuple[float, ...]
    bixel_width_mm: float = 5.0
    dose_grid_mm: float = 3.0
    prescription_gy: float = 2.0
    max_iter: int = 100
    oar_max_fraction: float = 0.5
    calibration: Calibration = MATRAD_GENERIC

    def __post_init__(self) -> None:
        if self.modality not in ("photons", "protons"):
            raise ValueError(f"modality must be 'photons' or 'protons', got {self.modality!r}")
        if not self.gantry_angles:
            raise ValueError("need at least one gantry angle")


@dataclass(frozen=True)
class DoseGrid:
    """Dose grid in the LPS voxel frame of :func:`to_lps`: voxel ``n`` at ``origin_mm + n * spacing_mm``."""

    shape: tuple[int, int, int]
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]


@dataclass
class PlanResult:
    """An optimised plan: ``dose`` (Gy) on ``grid`` in ``(i, j, k)`` LPS order, beamlet ``weights``."""

    settings: PlanSettings
    dose: np.ndarray
    grid: DoseGrid
    weights: np.ndarray
    spacing_mm: tuple[float, float, float]
    _stf: Any = field(repr=False, default=None)
    _pln: Any = field(repr=False, default=None)


def to_lps(image: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """Voxel data of ``image`` reordered to the closest L, P, S axes, and the matching affine (to RAS mm)."""
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(image.affine),
                                                nib.orientations.axcodes2ornt(("L", "P", "S")))
    reoriented = image.as_reoriented(transform)
    return np.asarray(reoriented.dataobj, dtype=np.float32), reoriented.affine


def dose_grid_affine(affine_lps: np.ndarray, grid: DoseGrid) -> np.ndarray:
    """Affine (dose-grid voxel -> RAS world mm) from the LPS-ordered volume's affine and the dose grid."""
    linear = np.asarray(affine_lps, float)[:3, :3]
    zooms = np.linalg.norm(linear, axis=0)
    out = np.eye(4)
    out[:3, :3] = linear @ np.diag(np.asarray(grid.spacing_mm) / zooms)
    out[:3, 3] = linear @ (np.asarray(grid.origin_mm) / zooms) + np.asarray(affine_lps, float)[:3, 3]
    return out


def to_dose_grid(volume: np.ndarray, *, spacing_mm: Sequence[float], grid: DoseGrid, order: int = 0) -> np.ndarray:
    """Sample a CT-grid volume at the dose-grid voxel centres (order 0: nearest, for masks; 1: linear)."""
    axes = [(grid.origin_mm[a] + np.arange(grid.shape[a]) * grid.spacing_mm[a]) / spacing_mm[a] for a in range(3)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0)
    return ndimage.map_coordinates(np.asarray(volume, np.float32), coords, order=order, mode="nearest")


def _sitk(array: np.ndarray, spacing_mm: Sequence[float], dtype) -> Any:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=dtype).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing_mm))
    image.SetOrigin((0.0, 0.0, 0.0))
    return image


def _ct_and_cst(hu: np.ndarray, target: np.ndarray, body: np.ndarray, spacing_mm, settings: PlanSettings):
    from pyRadPlan import validate_cst, validate_ct
    from pyRadPlan.optimization.objectives import SquaredDeviation, SquaredOverdosing

    ct = validate_ct(cube_hu=_sitk(hu, spacing_mm, np.float32))
    rx = settings.prescription_gy
    vois = [
        {"name": "target", "voi_type": "TARGET", "mask": _sitk(target, spacing_mm, np.uint8),
         "objectives": [SquaredDeviation(priority=1000.0, d_ref=rx)]},
        {"name": "body", "voi_type": "OAR", "mask": _sitk(body & ~target, spacing_mm, np.uint8),
         "objectives": [SquaredOverdosing(priority=10.0, d_max=settings.oar_max_fraction * rx)]},
    ]
    return ct, validate_cst({"vois": vois}, ct=ct)


def _plan(settings: PlanSettings):
    from pyRadPlan import IonPlan, PhotonPlan

    common = {"machine": "Generic", "num_of_fractions": 1, "prescribed_dose": settings.prescription_gy}
    pln = IonPlan(radiation_mode="protons", **common) if settings.modality == "protons" else PhotonPlan(**common)
    pln.prop_stf = {"gantry_angles": [float(a) for a in settings.gantry_angles],
                    "couch_angles": [0.0] * len(settings.gantry_angles), "bixel_width": settings.bixel_width_mm}
    g = settings.dose_grid_mm
    pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": g, "y": g, "z": g}},
                          "hlut": settings.calibration.as_table()}
    pln.prop_opt = {"solver": "scipy", "max_iter": settings.max_iter}
    return pln


def _dose_array(dij, weights: np.ndarray) -> tuple[np.ndarray, DoseGrid]:
    import SimpleITK as sitk

    image = dij.compute_result_dose_grid(weights)["physical_dose"]
    dose = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    grid = DoseGrid(shape=tuple(int(n) for n in dose.shape), origin_mm=tuple(float(o) for o in image.GetOrigin()),
                    spacing_mm=tuple(float(s) for s in image.GetSpacing()))
    return dose, grid


def _check_inputs(hu: np.ndarray, target: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not (np.shape(hu) == np.shape(target) == np.shape(body)) or np.ndim(hu) != 3:
        raise ValueError(f"HU, target and body must be 3-D and equally shaped: {np.shape(hu)}, "
                         f"{np.shape(target)}, {np.shape(body)}")
    target, body = np.asarray(target) > 0, np.asarray(body) > 0
    if not target.any():
        raise ValueError("target mask is empty")
    return target, body | target


def optimise_plan(
    hu: np.ndarray, *, target: np.ndarray, body: np.ndarray, spacing_mm: Sequence[float], settings: PlanSettings
) -> PlanResult:
    """Build and optimise a plan on ``hu`` (HU, LPS voxel order, see :func:`to_lps`).

    The target gets a squared-deviation objective at the prescription, the rest of the body a squared
    over-dose objective; weights are then scaled so the mean target dose equals the prescription (Gy).
    """
    from pyRadPlan import calc_dose_influence, fluence_optimization, generate_stf

    target, body = _check_inputs(hu, target, body)
    spacing = tuple(float(s) for s in spacing_mm)
    ct, cst = _ct_and_cst(hu, target, body, spacing, settings)
    pln = _plan(settings)
    stf = generate_stf(ct, cst, pln)
    dij = calc_dose_influence(ct, cst, stf, pln)
    weights = np.asarray(fluence_optimization(ct, cst, stf, dij, pln), dtype=np.float64)
    dose, grid = _dose_array(dij, weights)
    target_dose = to_dose_grid(target, spacing_mm=spacing, grid=grid) > 0.5
    mean_target = float(dose[target_dose].mean()) if target_dose.any() else 0.0
    if not mean_target > 0:
        raise RuntimeError(f"{settings.modality} plan delivers no dose to the target (mean {mean_target} Gy)")
    scale = settings.prescription_gy / mean_target
    logger.info("%s plan: %d beamlets, normalisation x%.3f", settings.modality, weights.size, scale)
    return PlanResult(settings=settings, dose=dose * np.float32(scale), grid=grid, weights=weights * scale,
                      spacing_mm=spacing, _stf=stf, _pln=pln)


def recompute_dose(plan: PlanResult, hu: np.ndarray, *, target: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Dose (Gy) of ``plan`` (same beams, spots/beamlets and weights) on another HU volume on the same grid."""
    from pyRadPlan import calc_dose_influence

    target, body = _check_inputs(hu, target, body)
    ct, cst = _ct_and_cst(hu, target, body, plan.spacing_mm, plan.settings)
    dij = calc_dose_influence(ct, cst, plan._stf, plan._pln)
    dose, grid = _dose_array(dij, plan.weights)
    if grid.shape != plan.grid.shape or not np.allclose(grid.origin_mm, plan.grid.origin_mm):
        raise ValueError(f"recomputed dose grid {grid} differs from the plan's {plan.grid}")
    return dose
