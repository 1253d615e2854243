"""Evaluation of 2-D paired predictions (SE -> DE, or any pair such as MR -> CT slices): image metrics,
bone suppression, baseline, figure.

Per held-out image and target key, inside the body (:func:`pipeline.xray.data.body_mask_2d` of the
input image, e.g. SE or MR; all values in the images' own units, e.g. log attenuation ``-ln(I/I0)``, or
grey levels / 255 for 8-bit PNG/JPEG):

- ``mae``: mean |pred - true|;
- ``psnr``: ``10 log10(R^2 / MSE)``, both images clipped to the true image's [min, max], ``R`` its
  range (:func:`pipeline.report.metrics.psnr`);
- ``ssim``: scikit-image's SSIM definition in 2-D (7x7 uniform window, sample covariance, K1 0.01, K2
  0.03, data range ``R``), outside the body set to the minimum, 3-pixel border cropped, mean over body
  pixels (:func:`pipeline.report.metrics.structural_similarity_map`), as SynthRAD does in 3-D.

Bone suppression in the soft-tissue image (``soft_key``/``bone_key`` both among the targets):

- ``bone_leak``: the bone coefficient of the least-squares fit ``pred_soft - true_soft ~ gain * true_soft
  + leak * true_bone + c`` over body pixels (:func:`bone_leak_fit`): the fraction of the bone signal
  left in (> 0) or over-subtracted from (< 0) the predicted soft-tissue image. 0 for the true soft image
  and for any gain of it; exactly 1 for ``soft + bone``. ``bone_leak_se`` is the same for the SE image
  (~0.6 on the chest phantoms: with realism the DE pair is scatter-corrected and SE is not).
- ``bone_leak_fine``: the same fit after subtracting each image's Gaussian blur (sigma
  :data:`FINE_SIGMA_MM` at the detector, from the record's ``pixel_spacing_mm``; left out without it):
  the leak of rib-sized and smaller structures, what a reader sees as rib shadows. The whole-image
  ``bone_leak`` is dominated by the spine and the large-scale bone load, so a model can lower it with a
  smooth correction while the rib edges stay (a training loss on it did exactly that in a 6-minute
  benchmark: whole-image 0.07 -> 0.04, fine 0.13 -> 0.18, PSNR -1.3 dB; not adopted).
- ``bone_leak_lung``: the same fit over the lung fields only (body pixels whose ray crosses at least
  :data:`LUNG_FIELD_MIN_MM` of lung, from the record's ``lung_path`` image, :mod:`pipeline.xray.drr_dataset`;
  left out without it), with ``bone_leak_se_lung`` for the SE image: the ribs over the lungs, where a lung
  tumour hides, without the spine, the mediastinum and the heart, where a real CT's iodinated vessels and
  bolus count as bone in the decomposition and dominate the whole-image leak.
- ``soft_gain``: the ``gain`` of the same fit: the soft-tissue scale error (0.05 = 5 % too bright where
  tissue is thick). Fitted beside the leak because soft and bone line integrals rise together (thick
  paths cross both; the slope of soft on bone is ~3 in a chest): the slope of the error on bone alone,
  this module's definition before bundle 0.3.0, reports a gain error as leak (``1.05 * soft`` "leaked" 0.15)
  and let a scaled SE look almost bone-free (0.23).
- ``edge_gain`` (region = the bone key): how sharp the predicted bone image is, the slope of its edge band
  (0.5 px blur minus :data:`EDGE_SIGMA_MM` blur) on the noiseless true bone image's (:func:`edge_gain`):
  1 = as sharp as the truth, ~0.5 = blurred by the band's scale. Reported beside the leak because a model
  can lower the leak by blurring, and a blurred bone image hides the ribs it should show; and
  ``checkerboard_ratio``: the period-2 texture transposed convolutions leave, relative to the noiseless
  true bone image's (:func:`checkerboard_ratio`; ~1 like the truth, >> 1 checkerboard).
- ``soft_bone_corr``: Pearson correlation of ``pred_soft`` with ``true_bone`` over body pixels, with
  ``soft_bone_corr_true`` (the true soft image; not 0, since thick body paths also cross more bone) and
  ``soft_bone_corr_se`` (the SE image) for reference. It needs no true soft image, but mixes anatomy
  with leakage, so ``bone_leak`` is the primary number.

Baseline ``<image_key>_scaled`` (``se_scaled``): each target predicted as ``a_k * SE`` with ``a_k`` the
least-squares factor over the training split (what a network that learnt nothing but the mean split
would do).

Outputs (atomic; refused up front when present unless ``overwrite``, as are missing predictions):
``results.csv``, ``summary.csv``, ``summary.md`` in the one long format of :mod:`pipeline.report.tables`
(``image_id`` filled, ``region`` = the target key, e.g. ``de_soft`` or ``ct``, metric ``mae``/``psnr``/
``ssim`` and the bone-suppression numbers) and ``figure.png`` (input | predicted | true | error per target
for the first held-out images).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.engine.model_card import read_model_card
from pipeline.errors import InputError, as_flag
from pipeline.io.images2d import image_info, load_image_2d
from pipeline.report import tables
from pipeline.xray import visibility
from pipeline.xray.data import body_mask_2d, load_records, split_settings
from pipeline.xray.image_measures import (
    EDGE_SIGMA_MM,
    FINE_SIGMA_MM,
    bone_leak_fit,
    bone_suppression,
    checkerboard_ratio,
    edge_gain,
    image_metrics,
)

logger = logging.getLogger(__name__)

#: Lung fields: pixels whose ray crosses at least this much lung (mm); a lung is 100-200 mm deep front to back, so
#: this keeps the lungs and leaves out the mediastinum, the spine and the thin partial-volume shell of the skin.
LUNG_FIELD_MIN_MM = 30.0
#: Fewest lung-field pixels for a lung-field leak (a fit over fewer is noise).
LUNG_FIELD_MIN_PIXELS = 200

#: Where a prediction is looked for, in this order (the float NIfTI first when several formats were written).
PREDICTION_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg")
def fit_se_baseline(records: Sequence[Mapping[str, Any]], *, image_key: str, target_keys: Sequence[str],
                    png_scale: float | None = None) -> dict[str, float]:
    """``{key: a}`` minimising ``sum (a * SE - target)^2`` over all pixels of ``records`` (training split)."""
    sums = {k: [0.0, 0.0] for k in target_keys}
    for record in records:
        image = _load(record, image_key, png_scale).astype(np.float64)
        for key in target_keys:
            target = _load(record, key, png_scale).astype(np.float64)
            sums[key][0] += float((image * target).sum())
            sums[key][1] += float((image * image).sum())
    return {k: (num / den if den > 0 else 0.0) for k, (num, den) in sums.items()}


def _load(record: Mapping[str, Any], key: str, png_scale: float | None) -> np.ndarray:
    """``(H, W)`` image of ``record[key]``; problems are :class:`InputError` naming the subject."""
    return load_image_2d(record[key], png_scale=png_scale, subject_id=record["subject_id"])[0]


def find_prediction(prediction_dir: Path, key: str, image_id: str) -> Path | None:
    for suffix in PREDICTION_SUFFIXES:
        path = prediction_dir / key / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def check_predictions(records: Sequence[Mapping[str, Any]], prediction_dir: str | os.PathLike,
                      target_keys: Sequence[str]) -> None:
    """Refuse (one :class:`InputError` listing them) before any metric when predictions are missing."""
    missing = [(r["subject_id"], f"{key}/{r['image_id']}") for r in records for key in target_keys
               if find_prediction(Path(prediction_dir), key, r["image_id"]) is None]
    if missing:
        shown = ", ".join(name for _, name in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{missing[0][0]}: no prediction for {len(missing)} of {len(records) * len(target_keys)} "
                         f"held-out image(s) in {prediction_dir} ({shown}; any of {', '.join(PREDICTION_SUFFIXES)}): "
                         "run inference with the same --split first")


def require_prediction(prediction_dir: Path, key: str, image_id: str, *, subject_id: str) -> Path:
    """:func:`find_prediction`, or one :class:`InputError` naming the subject, the image and the folder."""
    path = find_prediction(prediction_dir, key, image_id)
    if path is None:
        raise InputError(f"{subject_id}: no {key} prediction for {image_id} in {prediction_dir / key} "
                         f"(expected {image_id}.nii.gz)")
    return path


def _load_prediction(record: Mapping[str, Any], prediction_dir: Path, key: str, png_scale: float | None) -> np.ndarray:
    path = require_prediction(prediction_dir, key, record["image_id"], subject_id=record["subject_id"])
    return load_image_2d(path, png_scale=png_scale, subject_id=record["subject_id"])[0]


def evaluate_images(records: Sequence[Mapping[str, Any]], *, prediction_dir: str | os.PathLike | None,
                    image_key: str, target_keys: Sequence[str], soft_key: str | None = "de_soft",
                    bone_key: str | None = "de_bone", baseline: Mapping[str, float] | None = None,
                    png_scale: float | None = None, body_fraction: float = 0.05,
                    label_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The long results table (:func:`pipeline.report.tables.results_frame`) of every (method, image):
    ``pix2pix`` from ``prediction_dir``, ``<image_key>_scaled`` from ``baseline``; region = target key.

    Records with ``tumour_mask`` and ``bone_path`` images (chest DRRs; relative paths are taken from
    ``label_root``, the manifest's folder) add tumour visibility (:mod:`pipeline.xray.visibility`): the
    CNR of each tumour in the soft-tissue image of every method, and of the true DE-soft image as
    method ``true_de_soft``, in regions ``tumour`` and ``tumour_behind_rib`` (``image_id`` =
    ``<image>/tumour<k>``). The SE baseline's CNR is SE's (CNR is scale-free).
    """
    rows, noisy_references = [], 0
    with_suppression = soft_key in target_keys and bone_key in target_keys
    for record in records:
        image = _load(record, image_key, png_scale)
        truth = {k: _load(record, k, png_scale) for k in target_keys}
        shapes = {tuple(a.shape) for a in (image, *truth.values())}
        if len(shapes) > 1:
            raise InputError(f"{record['subject_id']}: {record['image_id']} images differ in shape {shapes}")
        body = body_mask_2d(image, fraction=body_fraction)
        if with_suppression:
            soft, bone, noiseless = leak_references(record, truth, soft_key=soft_key, bone_key=bone_key,
                                                    root=Path(label_root or "."), png_scale=png_scale)
            noisy_references += not noiseless
            spacing = float(record.get("pixel_spacing_mm") or "nan")
            fine_sigma = FINE_SIGMA_MM / spacing if np.isfinite(spacing) and spacing > 0 else None
            edge_sigma = EDGE_SIGMA_MM / spacing if np.isfinite(spacing) and spacing > 0 else 1.0
            lung = lung_fields(record, body, root=Path(label_root or "."), png_scale=png_scale)
            # the same for every method: computed once per image
            se_scores = bone_suppression(image, soft, bone, body)
            references = {"bone_leak_se": se_scores["bone_leak"],
                          "soft_bone_corr_true": bone_suppression(soft, soft, bone, body)["soft_bone_corr"],
                          "soft_bone_corr_se": se_scores["soft_bone_corr"]}
            if lung is not None:
                references["bone_leak_se_lung"] = bone_suppression(image, soft, bone, lung)["bone_leak"]
        methods: dict[str, dict[str, np.ndarray]] = {}
        if prediction_dir is not None:
            methods["pix2pix"] = {k: _load_prediction(record, Path(prediction_dir), k, png_scale) for k in target_keys}
        if baseline:
            methods[f"{image_key}_scaled"] = {k: baseline[k] * image for k in target_keys}
        for method, predicted in methods.items():
            ids = {"method": method, "subject_id": record["subject_id"], "image_id": record["image_id"]}
            for key in target_keys:
                if predicted[key].shape != truth[key].shape:
                    raise InputError(f"{record['subject_id']}: {key} prediction for {record['image_id']} has shape "
                                     f"{predicted[key].shape}, the true image {truth[key].shape}")
                rows += [{**ids, "region": key, "metric": name, "value": value}
                         for name, value in image_metrics(predicted[key], truth[key], body).items()]
            if with_suppression:
                suppression = {**bone_suppression(predicted[soft_key], soft, bone, body, fine_sigma_px=fine_sigma),
                               **references}
                if lung is not None:
                    suppression["bone_leak_lung"] = bone_suppression(predicted[soft_key], soft, bone, lung)["bone_leak"]
                rows += [{**ids, "region": soft_key, "metric": name, "value": value} for name, value in suppression.items()]
                rows += [{**ids, "region": bone_key, "metric": "edge_gain",
                          "value": edge_gain(predicted[bone_key], bone, body, sigma_px=edge_sigma)},
                         {**ids, "region": bone_key, "metric": "checkerboard_ratio",
                          "value": checkerboard_ratio(predicted[bone_key], bone, body)}]
        if soft_key in target_keys and record.get("tumour_mask") and record.get("bone_path"):
            soft_images = {"true_de_soft": truth[soft_key], **{m: p[soft_key] for m, p in methods.items()}}
            rows += _visibility_rows(record, soft_images, root=Path(label_root or "."), png_scale=png_scale)
    if noisy_references:
        logger.info("bone leak of %d of %d images measured against the noisy true images (no %s_noiseless / "
                    "%s_noiseless in the manifest): biased upwards if the DE images carry quantum noise",
                    noisy_references, len(records), soft_key, bone_key)
    return tables.results_frame(rows)


def _load_reference(record: Mapping[str, Any], key: str, *, root: Path, png_scale: float | None) -> np.ndarray:
    """An evaluation-only image of ``record`` (labels, bone path, noiseless references); relative paths
    from ``root`` (the manifest's folder)."""
    path = Path(record[key])
    return load_image_2d(path if path.is_absolute() else root / path, png_scale=png_scale)[0]


def lung_fields(record: Mapping[str, Any], body: np.ndarray, *, root: Path,
                png_scale: float | None) -> np.ndarray | None:
    """``body`` pixels whose ray crosses at least :data:`LUNG_FIELD_MIN_MM` of lung (the record's ``lung_path``
    image, mm); None without that image or with fewer than :data:`LUNG_FIELD_MIN_PIXELS` such pixels."""
    if not record.get("lung_path"):
        return None
    lung_path = _load_reference(record, "lung_path", root=root, png_scale=png_scale)
    if lung_path.shape != body.shape:
        raise InputError(f"{record['subject_id']}: lung_path of {record['image_id']} has shape {lung_path.shape}, "
                         f"the image {body.shape}")
    fields = np.asarray(body, bool) & (lung_path >= LUNG_FIELD_MIN_MM)
    return fields if fields.sum() >= LUNG_FIELD_MIN_PIXELS else None


def leak_references(record: Mapping[str, Any], truth: Mapping[str, np.ndarray], *, soft_key: str, bone_key: str,
                    root: Path, png_scale: float | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(soft, bone, noiseless)``: the images the bone leak is measured against. The record's noiseless
    references (``<key>_noiseless``, written by :mod:`pipeline.xray.drr_dataset` with realism) when it has
    them, else the true (noisy) images. Why: a DE subtraction makes the soft and bone images' quantum
    noise anti-correlated, so regressing a prediction's error on the noisy true images gives even a
    perfect denoiser a positive "leak" (0.15 in the constructed unit test; for the chest models the finest-
    scale leak fell from 0.175 to 0.161 with the noiseless references)."""
    names = (f"{soft_key}_noiseless", f"{bone_key}_noiseless")
    if all(record.get(name) for name in names):
        soft, bone = (_load_reference(record, name, root=root, png_scale=png_scale) for name in names)
        return soft, bone, True
    return truth[soft_key], truth[bone_key], False


def _visibility_rows(record: Mapping[str, Any], soft_images: Mapping[str, np.ndarray], *, root: Path,
                     png_scale: float | None) -> list[dict]:
    """Long-table rows of tumour CNR (one per tumour, method and region) of one chest DRR."""
    labels, bone = (_load_reference(record, key, root=root, png_scale=png_scale) for key in ("tumour_mask", "bone_path"))
    values = [int(v) for v in np.unique(np.rint(labels)) if v > 0]
    masks = np.stack([np.rint(labels) == v for v in values]) if values else np.zeros((0, *labels.shape), bool)
    rows = []
    for method, image in soft_images.items():
        for tumour in visibility.tumour_visibility({"soft": image}, masks, bone, labels=values):
            ids = {"method": method, "subject_id": record["subject_id"],
                   "image_id": f"{record['image_id']}/tumour{tumour['label']}", "metric": "cnr",
                   "value": tumour["cnr_soft"]}
            rows.append({**ids, "region": "tumour"})
            if tumour["behind_rib"]:
                rows.append({**ids, "region": "tumour_behind_rib"})
    return rows


def save_figure(records: Sequence[Mapping[str, Any]], path: Path, *, prediction_dir: Path, image_key: str,
                target_keys: Sequence[str], png_scale: float | None = None, rows: int = 3,
                overwrite: bool = False, label_root: Path | None = None) -> Path:
    """Input | predicted k | true k | error k (for each target k) for the first ``rows`` records; each
    pred/true pair shares the grey window of the true image (1st-99.5th percentile); the error
    (predicted - true) is blue-white-red, symmetric about 0 (99.5th percentile of its magnitude).
    Projected tumours (records with a ``tumour_mask``, relative to ``label_root``) are outlined in every panel."""
    from pipeline.report.figures import save_image_grid

    grid = []
    for record in list(records)[:rows]:
        image = _load(record, image_key, png_scale)
        outline = None
        if record.get("tumour_mask"):
            mask_path = Path(record["tumour_mask"])
            mask_path = mask_path if mask_path.is_absolute() else Path(label_root or ".") / mask_path
            outline = load_image_2d(mask_path, png_scale=png_scale, subject_id=record["subject_id"])[0]
        panels = [(image, f"{record['image_id']}\n{image_key}", np.percentile(image, [1.0, 99.5]), outline)]
        for key in target_keys:
            true = _load(record, key, png_scale)
            predicted = _load_prediction(record, prediction_dir, key, png_scale)
            window = np.percentile(true, [1.0, 99.5])
            limit = max(float(np.percentile(np.abs(predicted - true), 99.5)), 1e-6)
            panels += [(predicted, f"predicted {key}", window, outline), (true, f"true {key}", window, outline),
                       (predicted - true, f"error {key} (±{limit:.3g})", (-limit, limit), outline, "RdBu_r")]
        grid.append(panels)
    return save_image_grid(grid, path, overwrite=overwrite, panel_inches=2.45)


def describe_units(record: Mapping[str, Any], key: str, png_scale: float | None) -> str:
    """The units of ``record[key]`` as :func:`pipeline.io.images2d.load_image_2d` returns them, for the summary."""
    info = image_info(record[key], subject_id=record["subject_id"])
    if info.kind == "nifti":
        return "the images' own units (log attenuation -ln(I/I0) for DRR datasets)"
    if png_scale:
        return f"{info.bits}-bit counts × {png_scale:g}"
    return f"grey levels / {2 ** info.bits - 1} ({info.bits}-bit {info.kind.upper()}: full range → [0, 1])"


def run_evaluation(*, dataset: str | os.PathLike, prediction_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   split: str | None = "test", image_key: str = "se",
                   target_keys: Sequence[str] = ("de_soft", "de_bone"), soft_key: str | None = "de_soft",
                   bone_key: str | None = "de_bone", baseline: bool = True, train_split: str = "train",
                   png_scale: float | None = None, val_fraction: float | None = None,
                   test_fraction: float | None = None, seed: int | None = None,
                   model_card: str | os.PathLike | None = None, figure_rows: int = 3, units: str | None = None,
                   overwrite: bool = False) -> dict[str, Path]:
    """Evaluate predictions of ``split`` against the truth of ``dataset`` and write the outputs listed in
    the module docstring; returns their paths. ``dataset``/splits are read as in training
    (:func:`pipeline.xray.data.load_records`), with the split settings of ``model_card`` when that file
    exists (:func:`pipeline.xray.data.split_settings`). ``units`` (None: from the true images' format)
    names the MAE's units in the summary."""
    baseline, overwrite = as_flag(baseline, name="baseline"), as_flag(overwrite, name="overwrite")
    out = Path(output_dir)
    paths = {name: out / name for name in (*tables.TABLE_FILES, "figure.png")}
    tables.refuse_existing_outputs(paths.values(), overwrite=overwrite)
    card = read_model_card(model_card) if model_card is not None and Path(model_card).is_file() else None
    settings = split_settings(card, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    split_options = dict(keys=[image_key, *target_keys], **settings)
    records = load_records(dataset, split=split, **split_options)
    check_predictions(records, prediction_dir, target_keys)
    factors = None
    if baseline:
        try:
            train = load_records(dataset, split=train_split, **split_options)
        except InputError as err:
            logger.warning("no %s baseline: %s", image_key, err)
        else:
            factors = fit_se_baseline(train, image_key=image_key, target_keys=target_keys, png_scale=png_scale)
            logger.info("%s baseline factors (training split): %s", image_key, factors)
    label_root = Path(dataset) if Path(dataset).is_dir() else Path(dataset).parent
    results = evaluate_images(records, prediction_dir=prediction_dir, image_key=image_key, target_keys=target_keys,
                              label_root=label_root,
                              soft_key=soft_key, bone_key=bone_key, baseline=factors, png_scale=png_scale)
    units = units or describe_units(records[0], target_keys[0], png_scale)
    notes = (f"{len(records)} held-out image(s) ({split} split). Mean ± SD over images; MAE in {units}, PSNR in dB; "
             "SSIM, correlations and slopes unitless.")
    if factors:
        notes += (f" {image_key}_scaled baseline: " + ", ".join(f"{k} = {a:.4f} × {image_key}" for k, a in factors.items())
                  + ".")
    dual_energy = soft_key in target_keys and bone_key in target_keys
    title = "Dual-energy evaluation" if dual_energy else f"{image_key} → {', '.join(target_keys)} evaluation"
    tables.write_tables(results, out, title=title, notes=notes, overwrite=overwrite)
    save_figure(records, paths["figure.png"], prediction_dir=Path(prediction_dir), image_key=image_key,
                target_keys=target_keys, png_scale=png_scale, rows=figure_rows, overwrite=overwrite,
                label_root=label_root)
    logger.info("evaluation of %d images written to %s\n%s", len(records), out, paths["summary.md"].read_text())
    return paths


__all__: Sequence[str] = [
    "image_metrics", "bone_leak_fit", "bone_suppression", "edge_gain", "checkerboard_ratio", "fit_se_baseline",
    "find_prediction", "require_prediction", "check_predictions", "evaluate_images", "save_figure", "describe_units",
    "run_evaluation",
]
