"""SynthRAD2023-style evaluation of sCT volumes: per subject, per region, summary tables and figures.

Inputs per subject are NIfTI/MHA files that must share one grid (shape and affine): the real CT
(HU), the body mask (> 0 = evaluated) and one sCT (HU) per method, found as
``<method folder>/<subject_id>/sct.nii.gz`` (also ``.nii``, or flat ``<subject_id>_sct.nii.gz``).
Metrics are those of :mod:`pipeline.report.metrics`. Outputs in ``output_dir``:

- ``per_subject.csv``: method, subject_id, mae_hu, me_hu, psnr_db, ssim, dice_bone_<t>hu ...
- ``per_region.csv``: method, subject_id, region, n_voxels, mae_hu, me_hu, sd_hu
- ``summary.csv`` / ``summary.md``: mean ± SD over subjects per method (SD with ddof=1)
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

from pipeline.report import metrics
from pipeline.io import volumes as writers
from pipeline.io.volumes import atomic_write, read_volume

logger = logging.getLogger(__name__)

__all__ = [
    "PREDICTION_NAMES",
    "evaluate_predictions",
    "evaluate_subject",
    "find_prediction",
    "load_volumes",
    "run_evaluation",
    "subject_metrics",
    "summarise",
]

#: Where a method's sCT for a subject may be, tried in this order.
PREDICTION_NAMES = ("{sid}/sct.nii.gz", "{sid}/sct.nii", "{sid}_sct.nii.gz", "{sid}_sct.nii")
AFFINE_ATOL_MM = 1e-3  # NIfTI stores affines as float32: allow round-off, nothing a voxel would notice
TABLE_FILES = ("per_subject.csv", "per_region.csv", "summary.csv", "summary.md")


# --------------------------------------------------------------------------------------------- loading
def _input_error(message: str) -> Exception:
    """``pipeline.data.checks.InputError`` (a ValueError by contract); plain ValueError until that exists."""
    try:
        from pipeline.data.checks import InputError
    except ImportError:
        return ValueError(message)
    return InputError(message)


def _read(subject_id: str, key: str, path: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    if not path:
        raise _input_error(f"{subject_id}: no '{key}' path given")
    try:
        return read_volume(path)
    except (OSError, ValueError) as error:  # missing, unreadable or not 3-D
        raise _input_error(f"{subject_id}: cannot read {key} file {path}: {error}") from error


def _check_same_grid(subject_id: str, key: str, path, ref_key: str, ref_path) -> None:
    """Header-only check that ``path`` is on ``ref_path``'s grid (shape, spacing, orientation, affine)."""
    try:
        from pipeline.data.checks import check_same_grid, read_geometry
    except ImportError:  # pipeline.data.checks not available: plain shape/affine comparison
        (shape, affine), (ref_shape, ref_affine) = writers.read_geometry(path), writers.read_geometry(ref_path)
        if shape != ref_shape or not np.allclose(affine, ref_affine, rtol=0.0, atol=AFFINE_ATOL_MM):
            raise _input_error(f"{subject_id}: {ref_key} ({Path(ref_path).name}) and {key} ({Path(path).name}) are "
                               f"not on the same grid: shape {ref_shape} vs {shape}, affine max difference "
                               f"{float(np.abs(affine - ref_affine).max()):.3g}") from None
        return
    check_same_grid(read_geometry(ref_path, subject_id=subject_id), read_geometry(path, subject_id=subject_id),
                    subject_id=subject_id, names=(ref_key, key), atol_mm=AFFINE_ATOL_MM)


def _load_on_one_grid(record: Mapping[str, str], keys: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Check every file against the first key's grid (headers only, before any voxel is read), then load."""
    subject_id = str(record.get("subject_id", "?"))
    for key in keys:
        if not record.get(key):
            raise _input_error(f"{subject_id}: no '{key}' path given")
    for key in keys[1:]:
        _check_same_grid(subject_id, key, record[key], keys[0], record[keys[0]])
    arrays, affine = {}, None
    for key in keys:
        arrays[key], file_affine = _read(subject_id, key, record[key])
        affine = file_affine if affine is None else affine
    return arrays, affine


def load_volumes(record: Mapping[str, str], *, keys: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Load ``record[key]`` for each key as float32 ``(X, Y, Z)`` (file voxel order, NIfTI scaling
    applied, so CT is HU), checking that all share the first key's shape and affine.

    Raises ``InputError`` (``ValueError`` until :mod:`pipeline.data.checks` exists) naming the subject,
    the file and the problem.
    """
    arrays, _ = _load_on_one_grid(record, keys)
    return tuple(arrays[key] for key in keys)


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
    """All metrics for one sCT: ``mae_hu, me_hu, psnr_db, ssim, dice_bone_<t>hu...`` and ``regions``
    (the list of :func:`pipeline.report.metrics.region_statistics`). Arrays ``(X, Y, Z)`` in HU."""
    result = {
        "mae_hu": metrics.mae(sct, ct, mask),
        "me_hu": metrics.me(sct, ct, mask),
        "psnr_db": metrics.psnr(sct, ct, mask),
        "ssim": metrics.ssim(sct, ct, mask),
    }
    for threshold, dice in metrics.bone_dice_at(sct, ct, mask, thresholds=bone_thresholds).items():
        result[_dice_column(threshold)] = dice
    result["regions"] = metrics.region_statistics(sct, ct, mask, labels=labels, label_names=label_names)
    return result


def _subject_metrics_named(subject_id: str, method: str, *args, **kwargs) -> dict:
    try:
        return subject_metrics(*args, **kwargs)
    except ValueError as error:  # metric input checks (NaN, empty mask...): say whose data it is
        raise _input_error(f"{subject_id}: {method} sCT: {error}") from error


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
    volumes, _ = _load_on_one_grid(record, keys)
    labels = np.rint(volumes["labels"]).astype(np.int64) if label_path else None
    return {"subject_id": subject_id, **_subject_metrics_named(
        subject_id, "sct", volumes["sct"], volumes["ct"], volumes["mask"],
        labels=labels, label_names=label_names, bone_thresholds=bone_thresholds)}


# --------------------------------------------------------------------------------------------- tables
_METRIC_LABELS = {"mae_hu": ("MAE (HU) ↓", 1), "me_hu": ("ME (HU)", 1), "psnr_db": ("PSNR (dB) ↑", 2),
                  "ssim": ("SSIM ↑", 4)}


def _metric_columns(per_subject: pd.DataFrame) -> list[str]:
    return [c for c in per_subject.columns if c in _METRIC_LABELS or c.startswith("dice_bone_")]


def summarise(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD (ddof=1; NaN for one subject) over subjects per method.

    Returns one row per method (first-seen order) with ``n_subjects`` and ``<metric>_mean``,
    ``<metric>_sd`` columns; ``method`` is a column, not the index.
    """
    columns = _metric_columns(per_subject)
    grouped = per_subject.groupby("method", sort=False)
    rows = []
    for method, group in grouped:
        row = {"method": method, "n_subjects": int(group["subject_id"].nunique())}
        for column in columns:
            row[f"{column}_mean"] = float(group[column].mean())
            row[f"{column}_sd"] = float(group[column].std(ddof=1)) if len(group) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _format(mean: float, sd: float, decimals: int) -> str:
    if not np.isfinite(mean):
        return "–" if np.isnan(mean) else f"{mean}"
    return f"{mean:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if np.isfinite(sd) else "")


def _markdown_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(summary: pd.DataFrame, per_region: pd.DataFrame, *, n_subjects: int) -> str:
    """Markdown report: metric table (mean ± SD per method) and MAE per CT-defined region."""
    metric_names = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]

    def label(name: str) -> tuple[str, int]:
        if name.startswith("dice_bone_"):
            return f"Dice bone ≥ {name[len('dice_bone_'):-2].replace('m', '-').replace('p', '.')} HU ↑", 3
        return _METRIC_LABELS[name]

    header = ["Method", "n"] + [label(m)[0] for m in metric_names]
    rows = [[str(r["method"]), str(r["n_subjects"])] + [_format(r[f"{m}_mean"], r[f"{m}_sd"], label(m)[1])
                                                        for m in metric_names] for _, r in summary.iterrows()]
    parts = [
        "# sCT evaluation (SynthRAD2023 image metrics)",
        "",
        f"{n_subjects} subject(s); all metrics inside the body mask (mask > 0). Mean ± SD over subjects "
        "(SD with ddof = 1). ME = mean(sCT − CT): positive means the sCT is too dense. PSNR and SSIM use "
        "the [−1024, 3000] HU window (data range 4024 HU); SSIM excludes a 3-voxel border.",
        "",
        _markdown_table(header, rows, [":---", "--:"] + ["--:"] * len(metric_names)),
    ]
    if len(per_region):
        regions = list(dict.fromkeys(per_region["region"]))
        stats = per_region.groupby(["method", "region"], sort=False)["mae_hu"].agg(["mean", "std"])
        region_rows = [[str(method)] + [_format(stats["mean"].get((method, r), np.nan),
                                                stats["std"].get((method, r), np.nan), 1) for r in regions]
                       for method in summary["method"]]
        parts += [
            "",
            "## MAE per region (HU)",
            "",
            "Regions from the real CT inside the mask: air < −200 HU ≤ soft tissue < 250 HU ≤ bone"
            " (plus label-map regions when given).",
            "",
            _markdown_table(["Method"] + [r.replace("_", " ") for r in regions], region_rows,
                            [":---"] + ["--:"] * len(regions)),
        ]
    return "\n".join(parts) + "\n"


def _write_csv(table: pd.DataFrame, path: Path, *, overwrite: bool) -> None:
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"), overwrite=overwrite)


def _write_text(text: str, path: Path, *, overwrite: bool) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)


# --------------------------------------------------------------------------------------------- driver
def _figure_paths(output_dir: Path, method: str, subject_id: str) -> tuple[Path, Path]:
    folder = output_dir / "figures" / method
    return folder / f"{subject_id}_slices.png", folder / f"{subject_id}_hu_hist.png"


def _planned_outputs(output_dir: Path, methods: Sequence[str], subject_ids: Sequence[str], n_figure_subjects: int) -> list[Path]:
    paths = [output_dir / name for name in TABLE_FILES] + [output_dir / "figures" / "region_mae.png"]
    for method in methods:
        for subject_id in subject_ids[:n_figure_subjects]:
            paths += _figure_paths(output_dir, method, subject_id)
    return paths


def _refuse_existing(paths: Sequence[Path], *, overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} evaluation output file(s) already in "
                              f"{existing[0].parent}); pass overwrite=True to replace them")


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
        raise _input_error(f"{missing[0][0]}: no sCT prediction found for {len(missing)} "
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
        The summary table (see :func:`summarise`), also written to ``summary.csv``.
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
    _refuse_existing(_planned_outputs(output_dir, list(all_methods), subject_ids, n_figure_subjects), overwrite=overwrite)
    predictions = _resolve_predictions(all_methods, subject_ids)

    from pipeline.report import figures  # matplotlib only when figures are actually made

    subject_rows, region_rows = [], []
    for index, row in enumerate(tqdm(manifest_rows, desc="evaluate", unit="subject", disable=not progress)):
        subject_id = subject_ids[index]
        make_figures = index < n_figure_subjects
        # the MR is only needed (and only loaded) for the slice figures
        keys = ["ct", "mask"] + [k for k in ("labels",) if row.get(k)] + (["mr"] if make_figures and row.get("mr") else [])
        volumes, affine = _load_on_one_grid({**row, "subject_id": subject_id}, keys)
        labels = np.rint(volumes["labels"]).astype(np.int64) if "labels" in volumes else None
        for method in all_methods:
            path = predictions[(method, subject_id)]
            _check_same_grid(subject_id, f"{method} sCT", path, "ct", row["ct"])
            sct, _ = _read(subject_id, f"{method} sCT", path)
            result = _subject_metrics_named(subject_id, method, sct, volumes["ct"], volumes["mask"], labels=labels,
                                            label_names=label_names, bone_thresholds=bone_thresholds)
            regions = result.pop("regions")
            subject_rows.append({"method": method, "subject_id": subject_id, **result})
            region_rows += [{"method": method, "subject_id": subject_id, **r} for r in regions]
            if make_figures:
                slices_png, hist_png = _figure_paths(output_dir, method, subject_id)
                title = f"{subject_id} — {method}: MAE {result['mae_hu']:.1f} HU, ME {result['me_hu']:+.1f} HU"
                figures.save_error_slices(ct=volumes["ct"], sct=sct, mask=volumes["mask"], affine=affine,
                                          mr=volumes.get("mr"), out_path=slices_png, title=title, overwrite=overwrite)
                figures.save_hu_histograms(ct=volumes["ct"], sct=sct, mask=volumes["mask"], out_path=hist_png,
                                           title=title, overwrite=overwrite)
            logger.info("%s %s: MAE %.1f HU", subject_id, method, result["mae_hu"])

    per_subject, per_region = pd.DataFrame(subject_rows), pd.DataFrame(region_rows)
    summary = summarise(per_subject)
    figures.save_region_bars(per_region, out_path=output_dir / "figures" / "region_mae.png", overwrite=overwrite)
    _write_csv(per_subject, output_dir / "per_subject.csv", overwrite=overwrite)
    _write_csv(per_region, output_dir / "per_region.csv", overwrite=overwrite)
    _write_csv(summary, output_dir / "summary.csv", overwrite=overwrite)
    _write_text(summary_markdown(summary, per_region, n_subjects=len(subject_ids)), output_dir / "summary.md",
                overwrite=overwrite)
    return summary


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
    from pipeline.data.manifest import load_split  # written in parallel; only needed here

    rows = load_split(manifest, split)
    if not rows:
        raise ValueError(f"split '{split}' of {manifest} has no subjects")
    output_dir = Path(output_dir)
    subject_ids = [str(r["subject_id"]) for r in rows]
    methods = {model_name: Path(prediction_dir)}
    if baselines:
        from pipeline.sct.baselines import BASELINE_NAMES, bulk_density, fit_tissue_lookup, write_baseline_predictions

        # fail before the slow part: outputs in the way, or model predictions missing
        lookup_json = output_dir / "baselines" / "tissue_lookup.json"
        planned = _planned_outputs(output_dir, [model_name, *BASELINE_NAMES], subject_ids, n_figure_subjects)
        _refuse_existing([lookup_json, *planned], overwrite=overwrite)
        _resolve_predictions(methods, subject_ids)
        train_rows = load_split(manifest, train_split)
        lookup = fit_tissue_lookup(train_rows, n_bins=n_bins, progress=progress)
        _write_text(lookup.to_json(), lookup_json, overwrite=overwrite)
        methods.update(write_baseline_predictions(
            rows, output_dir=output_dir / "baselines", overwrite=overwrite, progress=progress,
            predictors={"bulk_density": bulk_density, "tissue_lookup": lookup.predict}))
    return evaluate_predictions(manifest_rows=rows, methods=methods, output_dir=output_dir,
                                bone_thresholds=tuple(bone_thresholds), n_figure_subjects=n_figure_subjects,
                                overwrite=overwrite, progress=progress)
