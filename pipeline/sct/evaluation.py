"""SynthRAD2023-style evaluation of sCT volumes: per subject, per region, summary tables and figures.

Inputs per subject are NIfTI/MHA files that must share one grid (shape and affine): the real CT
(HU), the body mask (> 0 = evaluated) and one sCT (HU) per method, found as
``<method folder>/<subject_id>/sct.nii.gz`` (also ``.nii``, or flat ``<subject_id>_sct.nii.gz``).
Metrics are those of :mod:`pipeline.report.metrics`. Outputs in ``output_dir``:

- ``results.csv``, ``summary.csv``, ``summary.md``: the long table of :mod:`pipeline.report.tables`
  (region ``body``: mae_hu, me_hu, psnr_db, ssim, dice_bone_<t>hu; regions ``air``, ``soft_tissue``,
  ``bone`` and label-map regions: n_voxels, mae_hu, me_hu, sd_hu; with an uncertainty map
  ``sct_std.nii.gz`` beside a method's sCT also spearman_std_abs_error per region), mean ± SD over
  subjects (ddof = 1);
- ``figures/<method>/<subject_id>_slices.png`` and ``_hu_hist.png`` (first few subjects), and
  ``figures/region_mae.png``.

All files are written atomically and existing outputs are only replaced with ``overwrite=True``
(checked before any computation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline.data.manifest import load_split
from pipeline.errors import InputError, as_flag
from pipeline.io.atomic import atomic_write
from pipeline.io.geometry import check_same_grid, read_geometry
from pipeline.io.volumes import GRID_ATOL_MM, read_volume, read_volumes_on_one_grid
from pipeline.report import metrics, tables
from pipeline.sct.baselines import BASELINE_NAMES, bulk_density, fit_tissue_lookup, write_baseline_predictions
from pipeline.sct.tta import std_path_for

logger = logging.getLogger(__name__)

__all__ = [
    "PREDICTION_NAMES",
    "evaluate_predictions",
    "evaluate_subject",
    "find_prediction",
    "run_evaluation",
    "subject_metrics",
]

#: Where a method's sCT for a subject may be, tried in this order.
PREDICTION_NAMES = ("{sid}/sct.nii.gz", "{sid}/sct.nii", "{sid}_sct.nii.gz", "{sid}_sct.nii")
METRIC_LABELS = {"mae_hu": ("MAE (HU) ↓", 1), "me_hu": ("ME (HU)", 1), "psnr_db": ("PSNR (dB) ↑", 2),
                 "ssim": ("SSIM ↑", 4), "spearman_std_abs_error": ("Spearman ρ(std, |error|) ↑", 3), "ms_ssim": ("MS-SSIM 2025 ↑", 4), "sd_hu": ("SD of error (HU)", 1), "n_voxels": ("voxels", 0)}
NOTES = ("All metrics inside the body mask (mask > 0). Mean ± SD over subjects (SD with ddof = 1). "
         "ME = mean(sCT − CT): positive means the sCT is too dense. PSNR and SSIM use the [−1024, 3000] HU "
         "window (data range 4024 HU); SSIM is scikit-image's (7×7×7 uniform window, sample covariance) and "
         "excludes a 3-voxel border, as in the official SynthRAD2023 code. MS-SSIM 2025 is SynthRAD2025's "
         "masked 3-D multi-scale SSIM on [−1024, 3071] HU. Regions from the real CT inside the mask: "
         "air < −200 HU ≤ soft tissue < 250 HU ≤ bone (plus label-map regions when given).")


# --------------------------------------------------------------------------------------------- loading
def _read_prediction(subject_id: str, method: str, path: Path, ct_path: str) -> np.ndarray:
    """A method's sCT, after checking its header against the CT's grid."""
    check_same_grid(read_geometry(ct_path, subject_id=subject_id), read_geometry(path, subject_id=subject_id),
                    subject_id=subject_id, names=("ct", f"{method} sCT"), atol_mm=GRID_ATOL_MM)
    try:
        return read_volume(path)[0]
    except (OSError, ValueError) as error:
        raise InputError(f"{subject_id}: cannot read {method} sCT file {path}: {error}") from error


def find_prediction(folder: str | os.PathLike, subject_id: str) -> Path | None:
    """First existing ``folder/<PREDICTION_NAMES>`` for ``subject_id``, or None."""
    for pattern in PREDICTION_NAMES:
        candidate = Path(folder) / pattern.format(sid=subject_id)
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------- metrics
def _dice_column(threshold: float) -> str:
    return f"dice_bone_{threshold:g}hu".replace("-", "m").replace(".", "p")


def subject_metrics(
    sct: np.ndarray,
    ct: np.ndarray,
    mask: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names: Mapping[int, str] | None = None,
    bone_thresholds: Sequence[float] = (metrics.BONE_HU,),
) -> dict:
    """All metrics for one sCT: ``mae_hu, me_hu, psnr_db, ssim, ms_ssim, dice_bone_<t>hu...`` and ``regions``
    (the list of :func:`pipeline.report.metrics.region_statistics`). Arrays ``(X, Y, Z)`` in HU."""
    result = {
        "mae_hu": metrics.mae(sct, ct, mask),
        "me_hu": metrics.me(sct, ct, mask),
        "psnr_db": metrics.psnr(sct, ct, mask),
        "ssim": metrics.ssim(sct, ct, mask),
        "ms_ssim": metrics.ms_ssim(sct, ct, mask),
    }
    for threshold, dice in metrics.bone_dice_at(sct, ct, mask, thresholds=bone_thresholds).items():
        result[_dice_column(threshold)] = dice
    result["regions"] = metrics.region_statistics(sct, ct, mask, labels=labels, label_names=label_names)
    return result


def _subject_metrics_named(subject_id: str, method: str, *args, **kwargs) -> dict:
    try:
        return subject_metrics(*args, **kwargs)
    except ValueError as error:  # metric input checks (NaN, empty mask...): say whose data it is
        raise InputError(f"{subject_id}: {method} sCT: {error}") from error


def evaluate_subject(
    *,
    sct_path: str | os.PathLike,
    ct_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    subject_id: str,
    label_path: str | os.PathLike | None = None,
    label_names: Mapping[int, str] | None = None,
    bone_thresholds: Sequence[float] = (metrics.BONE_HU,),
) -> dict:
    """Load one subject's CT, mask, sCT (and label map) on a common grid and return
    ``{"subject_id", "mae_hu", "me_hu", "psnr_db", "ssim", "dice_bone_<t>hu"..., "regions": [...]}``."""
    record = {"subject_id": subject_id, "ct": ct_path, "mask": mask_path, "sct": sct_path}
    keys = ["ct", "mask", "sct"]
    if label_path:
        record["labels"] = label_path
        keys.append("labels")
    volumes, _ = read_volumes_on_one_grid(record, keys)
    labels = np.rint(volumes["labels"]).astype(np.int64) if label_path else None
    return {"subject_id": subject_id, **_subject_metrics_named(
        subject_id, "sct", volumes["sct"], volumes["ct"], volumes["mask"],
        labels=labels, label_names=label_names, bone_thresholds=bone_thresholds)}


# --------------------------------------------------------------------------------------------- driver
def _figure_paths(output_dir: Path, method: str, subject_id: str) -> tuple[Path, Path]:
    folder = output_dir / "figures" / method
    return folder / f"{subject_id}_slices.png", folder / f"{subject_id}_hu_hist.png"


def _result_rows(method: str, subject_id: str, result: Mapping) -> list[dict]:
    """One subject's metrics as long-table rows: whole-mask metrics in region ``body`` (the region
    statistics' own ``body`` entry repeats mae/me, so only its ``sd_hu`` and ``n_voxels`` are added)."""
    ids = {"method": method, "subject_id": subject_id}
    rows = [{**ids, "region": "body", "metric": k, "value": v} for k, v in result.items() if k != "regions"]
    for region in result["regions"]:
        for metric, value in region.items():
            if metric != "region" and not (region["region"] == "body" and metric in result):
                rows.append({**ids, "region": region["region"], "metric": metric, "value": value})
    return rows


def _read_std(subject_id: str, method: str, sct_path: Path, ct_path: str) -> np.ndarray | None:
    """The uncertainty map beside a method's sCT (flip TTA's ``sct_std.nii.gz``), grid-checked, or None."""
    std_path = std_path_for(sct_path)
    return _read_prediction(subject_id, f"{method} std", std_path, ct_path) if std_path.is_file() else None


def _uncertainty_rows(method: str, subject_id: str, std: np.ndarray, sct: np.ndarray, volumes: Mapping) -> list[dict]:
    """Rows ``spearman_std_abs_error`` per region: how well the map's ranking of voxels follows the true
    |error| (Spearman rho)."""
    rho = metrics.uncertainty_rank_correlation(std, sct, volumes["ct"], volumes["mask"])
    return [{"method": method, "subject_id": subject_id, "region": region, "metric": "spearman_std_abs_error",
             "value": value} for region, value in rho.items()]


def _planned_outputs(output_dir: Path, methods: Sequence[str], subject_ids: Sequence[str], n_figure_subjects: int) -> list[Path]:
    paths = [output_dir / name for name in tables.TABLE_FILES] + [output_dir / "figures" / "region_mae.png"]
    for method in methods:
        for subject_id in subject_ids[:n_figure_subjects]:
            paths += _figure_paths(output_dir, method, subject_id)
    return paths


def _resolve_predictions(methods: Mapping[str, Path], subject_ids: Sequence[str]) -> dict[tuple[str, str], Path]:
    found, missing = {}, []
    for method, folder in methods.items():
        for subject_id in subject_ids:
            path = find_prediction(folder, subject_id)
            if path is None:
                missing.append((subject_id, f"{subject_id} ({method}: {Path(folder) / subject_id / 'sct.nii.gz'})"))
            else:
                found[(method, subject_id)] = path
    if missing:
        shown = "; ".join(text for _, text in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{missing[0][0]}: no sCT prediction found for {len(missing)} "
                           f"method/subject pair(s): {shown}")
    return found


def evaluate_predictions(
    *,
    manifest_rows: Sequence[Mapping[str, str]],
    output_dir: str | os.PathLike,
    prediction_dir: str | os.PathLike | None = None,
    methods: Mapping[str, str | os.PathLike] | None = None,
    model_name: str = "pix2pix",
    bone_thresholds: Sequence[float] = (metrics.BONE_HU,),
    label_names: Mapping[int, str] | None = None,
    n_figure_subjects: int = 3,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate every method's sCT for every subject and write tables and figures to ``output_dir``.

    Args:
        manifest_rows: dicts with ``subject_id``, ``ct`` and ``mask`` paths; optional ``mr`` (shown in
            the slice figures) and ``labels`` (an integer label map for extra regions).
        prediction_dir: the model's predictions, reported as ``model_name``.
        methods: further ``{name: prediction folder}`` (e.g. baselines), evaluated into the same tables.
        n_figure_subjects: slice and histogram figures for this many subjects (first in order) per method.
        overwrite: replace existing output files (otherwise ``FileExistsError`` before any work).

    Returns:
        The summary table (:func:`pipeline.report.tables.summarise`), also written to ``summary.csv``.
    """
    all_methods: dict[str, Path] = {}
    if prediction_dir is not None:
        all_methods[model_name] = Path(prediction_dir)
    if prediction_dir is not None and model_name in (methods or {}):
        raise ValueError(f"method name {model_name!r} given twice (model_name and a key of methods)")
    all_methods.update({name: Path(folder) for name, folder in (methods or {}).items()})
    if not all_methods:
        raise ValueError("nothing to evaluate: give prediction_dir and/or methods")
    if not manifest_rows:
        raise ValueError("no subjects to evaluate (empty manifest rows)")
    subject_ids = [str(row["subject_id"]) for row in manifest_rows]
    if len(set(subject_ids)) != len(subject_ids):
        raise ValueError(f"duplicate subject IDs in the manifest rows: {sorted({s for s in subject_ids if subject_ids.count(s) > 1})}")
    output_dir = Path(output_dir)
    tables.refuse_existing_outputs(_planned_outputs(output_dir, list(all_methods), subject_ids, n_figure_subjects), overwrite=overwrite)
    predictions = _resolve_predictions(all_methods, subject_ids)

    from pipeline.report import figures  # matplotlib only when figures are actually made

    rows = []
    for index, row in enumerate(tqdm(manifest_rows, desc="evaluate", unit="subject", disable=not progress)):
        subject_id = subject_ids[index]
        make_figures = index < n_figure_subjects
        # the MR is only needed (and only loaded) for the slice figures
        keys = ["ct", "mask"] + [k for k in ("labels",) if row.get(k)] + (["mr"] if make_figures and row.get("mr") else [])
        volumes, affine = read_volumes_on_one_grid({**row, "subject_id": subject_id}, keys)
        labels = np.rint(volumes["labels"]).astype(np.int64) if "labels" in volumes else None
        for method in all_methods:
            path = predictions[(method, subject_id)]
            sct = _read_prediction(subject_id, method, path, row["ct"])
            result = _subject_metrics_named(subject_id, method, sct, volumes["ct"], volumes["mask"], labels=labels,
                                            label_names=label_names, bone_thresholds=bone_thresholds)
            rows += _result_rows(method, subject_id, result)
            std = _read_std(subject_id, method, path, row["ct"])
            if std is not None:
                rows += _uncertainty_rows(method, subject_id, std, sct, volumes)
            if make_figures:
                slices_png, hist_png = _figure_paths(output_dir, method, subject_id)
                title = f"{subject_id} — {method}: MAE {result['mae_hu']:.1f} HU, ME {result['me_hu']:+.1f} HU"
                figures.save_error_slices(ct=volumes["ct"], sct=sct, mask=volumes["mask"], affine=affine,
                                          mr=volumes.get("mr"), std=std, out_path=slices_png, title=title,
                                          overwrite=overwrite)
                figures.save_hu_histograms(ct=volumes["ct"], sct=sct, mask=volumes["mask"], out_path=hist_png,
                                           title=title, overwrite=overwrite)
            logger.info("%s %s: MAE %.1f HU", subject_id, method, result["mae_hu"])

    results = tables.results_frame(rows)
    region_mae = results[(results["metric"] == "mae_hu") & (results["region"] != "body")].rename(columns={"value": "mae_hu"})
    figures.save_region_bars(region_mae, out_path=output_dir / "figures" / "region_mae.png", overwrite=overwrite)
    tables.write_tables(results, output_dir, title="sCT evaluation (SynthRAD2023 image metrics)",
                        notes=f"{len(subject_ids)} subject(s). {NOTES}", labels=_labels(results),
                        region_titles={"body": "Whole body mask"}, overwrite=overwrite)
    return tables.summarise(results)


def _labels(results: pd.DataFrame) -> dict[str, tuple[str, int]]:
    labels = dict(METRIC_LABELS)
    for name in results["metric"].unique():
        if name.startswith("dice_bone_"):
            threshold = name[len("dice_bone_"):-2].replace("m", "-").replace("p", ".")
            labels[name] = (f"Dice bone ≥ {threshold} HU ↑", 3)
    return labels


def run_evaluation(
    *,
    manifest: str,
    split: str = "test",
    prediction_dir: str,
    output_dir: str,
    baselines: bool = True,
    train_split: str = "train",
    overwrite: bool = False,
    bone_thresholds: Sequence[float] = (metrics.BONE_HU,),
    model_name: str = "pix2pix",
    n_bins: int = 16,
    n_figure_subjects: int = 3,
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate the model's predictions for ``split`` of ``manifest``, with baselines (entry point of
    the bundle's ``evaluate.json``).

    With ``baselines``: a :class:`~pipeline.sct.baselines.TissueLookup` is fitted on ``train_split`` and
    saved to ``output_dir/baselines/tissue_lookup.json``; bulk-density and tissue-lookup sCTs of the
    evaluated subjects are written to ``output_dir/baselines/<name>/<subject_id>/sct.nii.gz`` (int16,
    MR header) and evaluated in the same tables as the model. Returns the summary table.
    """
    baselines, overwrite = as_flag(baselines, name="baselines"), as_flag(overwrite, name="overwrite")
    rows = load_split(manifest, split)
    if not rows:
        raise ValueError(f"split '{split}' of {manifest} has no subjects")
    output_dir = Path(output_dir)
    subject_ids = [str(r["subject_id"]) for r in rows]
    methods = {model_name: Path(prediction_dir)}
    if baselines:
        # fail before the slow part: outputs in the way, or model predictions missing
        lookup_json = output_dir / "baselines" / "tissue_lookup.json"
        planned = _planned_outputs(output_dir, [model_name, *BASELINE_NAMES], subject_ids, n_figure_subjects)
        tables.refuse_existing_outputs([lookup_json, *planned], overwrite=overwrite)
        _resolve_predictions(methods, subject_ids)
        train_rows = load_split(manifest, train_split)
        lookup = fit_tissue_lookup(train_rows, n_bins=n_bins, progress=progress)
        atomic_write(lookup_json, lambda tmp: Path(tmp).write_text(lookup.to_json(), encoding="utf-8"), overwrite=overwrite)
        methods.update(write_baseline_predictions(
            rows, output_dir=output_dir / "baselines", overwrite=overwrite, progress=progress,
            predictors={"bulk_density": bulk_density, "tissue_lookup": lookup.predict}))
    return evaluate_predictions(manifest_rows=rows, methods=methods, output_dir=output_dir,
                                bone_thresholds=tuple(bone_thresholds), n_figure_subjects=n_figure_subjects,
                                overwrite=overwrite, progress=progress)
