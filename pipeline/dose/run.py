"""Dose evaluation of a test set: subjects, predictions and baselines in, long tables, dose NIfTIs and
figures out (entry point of ``bundles/mri_to_ct/configs/evaluate_dose.json`` and of
``python -m pipeline.dose.run`` / ``scripts/evaluate_dose.py``). Per-subject work: :mod:`pipeline.dose.evaluate`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.dose.calibration import load_calibration
from pipeline.dose.evaluate import DoseConfig, _prefix, evaluate_subject
from pipeline.errors import InputError, as_flag

__all__ = ["main", "run_dose_evaluation"]
PREFIX = "dose_"  # files dose_results.csv, dose_summary.csv, dose_summary.md


def _records(data_root, manifest, split) -> list[dict]:
    if (data_root is None) == (manifest is None):
        raise ValueError("give exactly one of data_root (ROOT/<ID>/{ct,mr,mask}.nii.gz) and manifest")
    if manifest is not None:
        from pipeline.data.manifest import load_split

        return load_split(manifest, split)
    from pipeline.data.manifest import find_subjects

    frame = find_subjects(data_root)
    return [{k: v for k, v in row.items() if v is not None} for row in frame.to_dict("records")]


def _planned_outputs(output_dir: Path, subject_ids, methods, config: DoseConfig) -> list[Path]:
    from pipeline.report.tables import table_paths

    paths = list(table_paths(output_dir, prefix=PREFIX).values())
    for index, sid in enumerate(subject_ids):
        for modality in config.modalities:
            p = _prefix(modality)
            paths += [output_dir / "doses" / sid / f"{m}_{p}_dose.nii.gz" for m in ("ct", *methods)]
            if index < config.n_figure_subjects:
                paths += [output_dir / "figures" / m / f"{sid}_{p}_{kind}.png" for m in methods for kind in ("dvh", "slices")]
    return paths


def run_dose_evaluation(
    *,
    output_dir: str,
    data_root: str | None = None,
    manifest: str | None = None,
    split: str = "test",
    prediction_dir: str | None = None,
    model_name: str = "pix2pix",
    methods: Mapping[str, str] | None = None,
    baselines: Sequence[str] = (),
    train_split: str = "train",
    train_root: str | None = None,
    subjects: Sequence[str] | None = None,
    calibration_file: str | None = None,
    overwrite: bool = False,
    **config_overrides,
) -> dict[str, Path]:
    """Dose-evaluate every method for the subjects of ``data_root`` or of ``split`` of ``manifest``.

    Args:
        prediction_dir: the model's predictions (``<ID>/sct.nii.gz``), reported as ``model_name``.
        methods: further ``{name: folder}`` of predictions.
        baselines: any of ``"bulk_density"``, ``"tissue_lookup"``: written to ``output_dir/baselines/<name>``
            and evaluated like a model. ``tissue_lookup`` is fitted on ``train_split`` of ``manifest`` or on
            the subjects of ``train_root``.
        subjects: restrict to these subject IDs.
        calibration_file: two-column ``HU, RSP`` table replacing the default matRad curve.
        config_overrides: fields of :class:`DoseConfig` (tuples may be given as lists).

    Writes ``dose_results.csv``, ``dose_summary.csv``, ``dose_summary.md`` (:mod:`pipeline.report.tables`),
    ``doses/<ID>/{ct,<method>}_{photon,proton}_dose.nii.gz`` and figures; refuses to replace existing outputs
    unless ``overwrite`` (checked before any computation). Returns the table paths.
    """
    from pipeline.report.tables import write_tables
    from pipeline.sct.evaluation import find_prediction

    overrides = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                 for k, v in config_overrides.items()}
    config = replace(DoseConfig(), **overrides)
    if calibration_file:
        config = replace(config, calibration=load_calibration(calibration_file))
    records = _records(data_root, manifest, split)
    if subjects:
        records = [r for r in records if str(r["subject_id"]) in set(map(str, subjects))]
    if not records:
        raise ValueError("no subjects to evaluate")
    output_dir = Path(output_dir)
    folders = {name: Path(folder) for name, folder in (methods or {}).items()}
    if prediction_dir is not None:
        folders = {model_name: Path(prediction_dir), **folders}
    unknown = set(baselines) - {"bulk_density", "tissue_lookup"}
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}: choose bulk_density, tissue_lookup")
    names = list(folders) + [b for b in baselines if b not in folders]
    if not names:
        raise ValueError("nothing to evaluate: give prediction_dir, methods and/or baselines")
    subject_ids = [str(r["subject_id"]) for r in records]
    planned = _planned_outputs(output_dir, subject_ids, names, config)
    existing = [p for p in planned if p.exists()]
    overwrite = as_flag(overwrite, name="overwrite")
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} dose output(s) in {output_dir}); "
                              "pass overwrite=True / --overwrite to replace them")
    for sid, record in zip(subject_ids, records):  # every prediction found before the slow part
        for name, folder in folders.items():
            if find_prediction(folder, sid) is None:
                raise InputError(f"{sid}: no {name} sCT in {folder} (expected {folder / sid / 'sct.nii.gz'})")
    if baselines:
        folders.update(_write_baselines(records, baselines, output_dir / "baselines", manifest=manifest,
                                        train_split=train_split, train_root=train_root, overwrite=overwrite))
    rows = []
    for index, (sid, record) in enumerate(zip(subject_ids, records)):
        predictions = {name: find_prediction(folder, sid) for name, folder in folders.items()}
        rows += evaluate_subject(record, predictions, config=config, output_dir=output_dir,
                                 make_figures=index < config.n_figure_subjects, overwrite=overwrite)
    return write_tables(rows, output_dir, prefix=PREFIX, overwrite=overwrite, title="Dosimetric evaluation (sCT vs CT)")


def _write_baselines(records, names, folder: Path, *, manifest, train_split, train_root, overwrite) -> dict[str, Path]:
    from pipeline.sct.baselines import bulk_density, fit_tissue_lookup, write_baseline_predictions

    predictors = {}
    if "bulk_density" in names:
        predictors["bulk_density"] = bulk_density
    if "tissue_lookup" in names:
        if manifest is None and train_root is None:
            raise ValueError("the tissue_lookup baseline needs training subjects: give manifest (train_split) or train_root")
        train = _records(train_root, None, None) if manifest is None else _records(None, manifest, train_split)
        predictors["tissue_lookup"] = fit_tissue_lookup(train, progress=False).predict
    return write_baseline_predictions(records, output_dir=folder, predictors=predictors, overwrite=overwrite,
                                      progress=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.dose.run", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", help="ROOT/<ID>/{ct,mr,mask}.nii.gz test subjects")
    source.add_argument("--manifest", help="manifest CSV (with --split)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--prediction-dir", help="model predictions <ID>/sct.nii.gz")
    parser.add_argument("--model-name", default="pix2pix")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=FOLDER", help="further predictions")
    parser.add_argument("--baselines", nargs="*", default=[], choices=["bulk_density", "tissue_lookup"])
    parser.add_argument("--train-root", help="training subjects for the tissue_lookup baseline (without --manifest)")
    parser.add_argument("--subjects", nargs="*", help="only these subject IDs")
    parser.add_argument("--dose-grid-mm", type=float, default=DoseConfig.dose_grid_mm)
    parser.add_argument("--photon-angles", type=float, nargs="+", default=list(DoseConfig.photon_angles))
    parser.add_argument("--proton-angles", type=float, nargs="+", default=list(DoseConfig.proton_angles))
    parser.add_argument("--modalities", nargs="+", default=list(DoseConfig.modalities), choices=["photons", "protons"])
    parser.add_argument("--target-radius-mm", type=float, default=DoseConfig.target_radius_mm)
    parser.add_argument("--calibration-file", help="two-column HU, RSP table (default: matRad generic HLUT)")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; bad input prints one line naming subject and file and returns 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        methods = dict(item.split("=", 1) for item in args.method)
    except ValueError:
        print(f"error: --method takes NAME=FOLDER, got {args.method}", file=sys.stderr)
        return 2
    try:
        paths = run_dose_evaluation(
            output_dir=args.output_dir, data_root=args.data_root, manifest=args.manifest, split=args.split,
            prediction_dir=args.prediction_dir, model_name=args.model_name, methods=methods,
            baselines=args.baselines, train_root=args.train_root, subjects=args.subjects,
            calibration_file=args.calibration_file, overwrite=args.overwrite, dose_grid_mm=args.dose_grid_mm,
            photon_angles=args.photon_angles, proton_angles=args.proton_angles, modalities=args.modalities,
            target_radius_mm=args.target_radius_mm)
    except (InputError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
