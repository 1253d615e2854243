"""Per-subject dosimetric evaluation of sCT volumes and its command line.

For each subject a photon and a proton plan are optimised on the real CT for a target (``target`` file
of the record, else a sphere, see :func:`default_target`), then recomputed with the same beams and
weights on every method's sCT. Rows of the long table (``subject, method, region, metric, value``):

- metric ``{photon,proton}_gamma_{D}mm{P}pct`` (global gamma pass rate %, region ``body``/``target``),
- ``{photon,proton}_{D98,D50,D2,Dmean}_diff_pct`` (sCT - CT, % of prescription; ``target``/``body``),
- ``{photon,proton}_dose_mae_pct`` / ``_dose_me_pct`` in ``high_dose`` (CT dose >= 90 % of prescription),
- ``proton_range_shift_{mean,abs_mean,max_abs}_mm`` and ``proton_wepl_diff_mean_mm`` per ``beam<n>``
  (:mod:`pipeline.dose.wepl`).

Inputs follow :mod:`pipeline.sct.evaluation`: records ``{subject_id, ct, mask[, mr, target]}`` (a data folder
``ROOT/<ID>/{ct,mr,mask}.nii.gz`` or a manifest split) and per method a folder holding
``<ID>/sct.nii.gz`` (:func:`pipeline.sct.evaluation.find_prediction`); baselines are written and evaluated
the same way as in :func:`pipeline.sct.evaluation.run_evaluation` (see :mod:`pipeline.dose.run`, which also
holds the command line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline.dose import compare, plans, wepl
from pipeline.dose.calibration import MATRAD_GENERIC, Calibration
from pipeline.errors import InputError
from pipeline.io.volumes import write_nifti

logger = logging.getLogger(__name__)

__all__ = ["DoseConfig", "check_same_grid", "compare_doses", "default_target", "evaluate_subject", "load_nifti"]
AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class DoseConfig:
    """Plan and analysis settings (angles in degrees, lengths in mm, doses in Gy)."""

    photon_angles: tuple[float, ...] = (0.0, 72.0, 144.0, 216.0, 288.0)
    proton_angles: tuple[float, ...] = (90.0, 270.0)
    dose_grid_mm: float = 3.0
    bixel_width_mm: float = 5.0
    prescription_gy: float = 2.0
    max_iter: int = 100
    target_radius_mm: float = 15.0
    gamma_criteria: tuple[tuple[float, float], ...] = ((2.0, 2.0), (1.0, 1.0))  # (mm, %): SynthRAD 2%/2 mm and the strict 1%/1 mm
    gamma_cutoff_pct: float = 10.0
    calibration: Calibration = MATRAD_GENERIC
    modalities: tuple[str, ...] = ("photons", "protons")
    n_figure_subjects: int = 3

    def plan_settings(self, modality: str) -> plans.PlanSettings:
        angles = self.photon_angles if modality == "photons" else self.proton_angles
        return plans.PlanSettings(modality=modality, gantry_angles=tuple(angles), bixel_width_mm=self.bixel_width_mm,
                                  dose_grid_mm=self.dose_grid_mm, prescription_gy=self.prescription_gy,
                                  max_iter=self.max_iter, calibration=self.calibration)


@dataclass
class _Subject:
    subject_id: str
    hu: np.ndarray
    body: np.ndarray
    target: np.ndarray
    affine_lps: np.ndarray
    spacing_mm: tuple[float, float, float]
    image: nib.spatialimages.SpatialImage = field(repr=False)


def load_nifti(subject_id: str, role: str, path) -> nib.spatialimages.SpatialImage:
    """nibabel image of a 3-D file, or ``InputError`` naming subject, role and file."""
    if not path or not Path(path).is_file():
        raise InputError(f"{subject_id}: {role} file {path} does not exist")
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises several types for unreadable files
        raise InputError(f"{subject_id}: cannot read {role} file {path}: {error}") from error
    if len(image.shape) != 3:
        raise InputError(f"{subject_id}: {role} file {path} is not a 3-D volume (shape {image.shape})")
    return image


def check_same_grid(subject_id: str, role: str, image, path, reference) -> None:
    """``InputError`` unless ``image`` has the shape and affine (within 1e-3 mm) of ``reference`` (the CT)."""
    if image.shape != reference.shape or not np.allclose(image.affine, reference.affine, rtol=0.0, atol=AFFINE_ATOL_MM):
        raise InputError(f"{subject_id}: {role} file {path} is not on the CT grid (shape {image.shape} vs "
                         f"{reference.shape}, affine max difference "
                         f"{float(np.abs(image.affine - reference.affine).max()):.3g} mm)")


def default_target(body: np.ndarray, *, spacing_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """Sphere of ``radius_mm`` (mm) inside ``body``: centred on the body centroid if the sphere fits there
    (with one voxel of margin), else on the body voxel deepest inside (distance transform maximum)."""
    body = np.asarray(body) > 0
    if not body.any():
        raise ValueError("body mask is empty")
    spacing = np.asarray(spacing_mm, float)
    depth = ndimage.distance_transform_edt(body, sampling=spacing)
    centre = np.rint(ndimage.center_of_mass(body)).astype(int)
    if depth[tuple(centre)] < radius_mm + spacing.max():
        centre = np.array(np.unravel_index(np.argmax(depth), body.shape))
    grids = np.ogrid[tuple(slice(0, n) for n in body.shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return (distance2 <= radius_mm**2) & body


def _load_subject(record: Mapping, config: DoseConfig) -> _Subject:
    sid = str(record["subject_id"])
    ct = load_nifti(sid, "ct", record.get("ct"))
    mask = load_nifti(sid, "mask", record.get("mask"))
    check_same_grid(sid, "mask", mask, record["mask"], ct)
    hu, affine_lps = plans.to_lps(ct)
    body = plans.to_lps(mask)[0] > 0
    spacing = tuple(float(z) for z in np.linalg.norm(affine_lps[:3, :3], axis=0))
    if record.get("target"):
        target_image = load_nifti(sid, "target", record["target"])
        check_same_grid(sid, "target", target_image, record["target"], ct)
        target = plans.to_lps(target_image)[0] > 0
        if not target.any():
            raise InputError(f"{sid}: target file {record['target']} is empty")
    else:
        target = default_target(body, spacing_mm=spacing, radius_mm=config.target_radius_mm)
    return _Subject(sid, hu, body, target, affine_lps, spacing, ct)


def _prefix(modality: str) -> str:
    return "photon" if modality == "photons" else "proton"


def _range_rows(subject: _Subject, sct_hu: np.ndarray, config: DoseConfig) -> list[tuple[str, str, float]]:
    rsp_ct = config.calibration(subject.hu)
    rsp_sct = config.calibration(sct_hu)
    out = []
    for beam, angle in enumerate(config.proton_angles):
        result = wepl.range_shift(rsp_ct, rsp_sct, subject.target, spacing_mm=subject.spacing_mm,
                                  direction=wepl.beam_direction(angle))
        shift = result["range_shift_mm"]
        out += [(f"beam{beam}", "proton_range_shift_mean_mm", float(shift.mean())),
                (f"beam{beam}", "proton_range_shift_abs_mean_mm", float(np.abs(shift).mean())),
                (f"beam{beam}", "proton_range_shift_abs_p95_mm", float(np.percentile(np.abs(shift), 95.0))),
                (f"beam{beam}", "proton_range_shift_max_abs_mm", float(np.abs(shift).max())),
                (f"beam{beam}", "proton_wepl_diff_mean_mm", float(result["wepl_diff_mm"].mean()))]
    return out


def compare_doses(
    reference: np.ndarray, evaluated: np.ndarray, *, target: np.ndarray, body: np.ndarray,
    spacing_mm: Sequence[float], modality: str, config: DoseConfig,
) -> tuple[list[tuple[str, str, float]], dict[str, np.ndarray]]:
    """(region, metric, value) triples of one sCT dose against the CT dose (both Gy, same dose grid), and
    the gamma maps by metric name."""
    p, rx = _prefix(modality), config.prescription_gy
    rows, gammas = [], {}
    for distance, percent in config.gamma_criteria:
        name = f"{p}_gamma_{distance:g}mm{percent:g}pct"
        gamma = compare.gamma_index(reference, evaluated, spacing_mm=spacing_mm, dose_percent=percent,
                                    distance_mm=distance, normalisation_gy=rx, cutoff_percent=config.gamma_cutoff_pct)
        gammas[name] = gamma
        rows += [("body", name, compare.gamma_pass_rate(gamma, region=body)),
                 ("target", name, compare.gamma_pass_rate(gamma, region=target))]
    for region, mask in (("target", target), ("body", body)):
        rows += [(region, f"{p}_{k}", v) for k, v in
                 compare.dvh_differences(reference, evaluated, mask, prescription_gy=rx).items()]
    high = reference >= 0.9 * rx
    rows += [("high_dose", f"{p}_{k}", v) for k, v in
             compare.dose_difference_metrics(reference, evaluated, high, prescription_gy=rx).items()]
    return rows, gammas


def evaluate_subject(
    record: Mapping, predictions: Mapping[str, Path], *, config: DoseConfig, output_dir: Path,
    make_figures: bool = False, overwrite: bool = False,
) -> list[dict]:
    """Plan on the CT, recompute on each method's sCT, write doses/figures; return the long-table rows."""
    subject = _load_subject(record, config)
    sid = subject.subject_id
    scts = {}
    for method, path in predictions.items():
        image = load_nifti(sid, f"{method} sCT", path)
        check_same_grid(sid, f"{method} sCT", image, path, subject.image)
        scts[method] = plans.to_lps(image)[0]
    rows = []
    dose_dir = output_dir / "doses" / sid
    for modality in config.modalities:
        plan = plans.optimise_plan(subject.hu, target=subject.target, body=subject.body,
                                   spacing_mm=subject.spacing_mm, settings=config.plan_settings(modality))
        affine = plans.dose_grid_affine(subject.affine_lps, plan.grid)
        write_nifti(plan.dose.astype(np.float32), affine, dose_dir / f"ct_{_prefix(modality)}_dose.nii.gz", overwrite=overwrite)
        target_d = plans.to_dose_grid(subject.target, spacing_mm=subject.spacing_mm, grid=plan.grid) > 0.5
        body_d = plans.to_dose_grid(subject.body, spacing_mm=subject.spacing_mm, grid=plan.grid) > 0.5
        for method, sct_hu in scts.items():
            dose = plans.recompute_dose(plan, sct_hu, target=subject.target, body=subject.body)
            write_nifti(dose.astype(np.float32), affine, dose_dir / f"{method}_{_prefix(modality)}_dose.nii.gz", overwrite=overwrite)
            triples, gammas = compare_doses(plan.dose, dose, target=target_d, body=body_d,
                                            spacing_mm=plan.grid.spacing_mm, modality=modality, config=config)
            if modality == "protons":
                triples += _range_rows(subject, sct_hu, config)
            rows += [{"subject_id": sid, "method": method, "region": r, "metric": m, "value": v} for r, m, v in triples]
            if make_figures:
                _figures(plan, dose, gammas, target_d, body_d, output_dir / "figures" / method, sid, method,
                         modality, config, overwrite)
        logger.info("%s: %s plan done for %d method(s)", sid, modality, len(scts))
    return rows


def _figures(plan, dose, gammas, target_d, body_d, folder: Path, sid, method, modality, config, overwrite) -> None:
    from pipeline.dose import figures

    p = _prefix(modality)
    name, gamma = next(iter(gammas.items()))
    rate = compare.gamma_pass_rate(gamma, region=body_d)
    title = f"{sid} {method} {modality}: {name.split('_', 2)[2]} pass {rate:.1f} %"
    figures.save_dvh(reference=plan.dose, evaluated=dose, structures={"target": target_d, "body": body_d},
                     prescription_gy=config.prescription_gy, out_path=folder / f"{sid}_{p}_dvh.png", title=title,
                     overwrite=overwrite)
    k = int(round(np.argwhere(target_d)[:, 2].mean()))
    figures.save_dose_slices(reference=plan.dose, evaluated=dose, gamma=gamma, spacing_mm=plan.grid.spacing_mm,
                             slice_index=k, prescription_gy=config.prescription_gy, gamma_label=name,
                             out_path=folder / f"{sid}_{p}_slices.png", title=title, overwrite=overwrite)

