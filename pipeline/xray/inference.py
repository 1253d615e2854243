"""Inference for 2-D paired translation (SE -> DE, MR -> CT slices): whole images in, one file per target key out.

The generator sees the whole image (padded by edge replication to a multiple of ``2 ** num_downs``,
then cropped back), as in validation: instance-norm statistics then match training on whole images.
Outputs are in the units of the training targets (``IntensityWindow.from_unit``), written by default
like the input (:func:`output_format`): NIfTI in, float32 NIfTI out (pixel spacing copied); 8/16-bit PNG
in, PNG of the same bit depth and scale out (``value = count * png_scale``); JPEG in, 8-bit PNG out
(lossless); greyscale whatever the input's colour model. ``--formats`` adds or replaces formats. Files are
written atomically, never replacing one unless ``overwrite``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.engine.handlers import load_generator_state
from pipeline.engine.mirror import mirror_members
from pipeline.engine.model_card import find_card, read_model_card
from pipeline.engine.trainer import plain_tensor, unwrap_ddp
from pipeline.errors import InputError, as_flag
from pipeline.io.atomic import atomic_path
from pipeline.io.images2d import (
    IMAGE_SUFFIXES,
    ImageInfo,
    find_images,
    image_info,
    image_stem,
    image_suffix,
    load_image_2d,
    save_image_2d,
    subject_from_image_id,
)
from pipeline.xray.data import (
    MODEL_CARD_NAME,
    IntensityWindow,
    load_records,
    read_windows,
    select_split,
    split_settings,
)
from pipeline.xray.drr_dataset import MANIFEST_NAME

logger = logging.getLogger(__name__)

#: What ``--formats`` may name (:func:`output_format`).
OUTPUT_FORMATS = ("input", "png", "jpg", "nii.gz", "nii")


def predict_unit_image(generator: torch.nn.Module, image_unit: torch.Tensor, *, divisor: int,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """``(C, H, W)`` condition in [-1, 1] -> ``(out_channels, H, W)`` prediction in [-1, 1] (CPU).

    Pads (edge) to a multiple of ``divisor`` and crops back; eval mode, no gradients.
    """
    generator = unwrap_ddp(generator)
    x = plain_tensor(torch.as_tensor(image_unit, dtype=torch.float32))
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % divisor, (-w) % divisor
    x = x[None].to(device)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            out = generator(x)[0, :, :h, :w]
    finally:
        generator.train(was_training)
    return out.float().cpu()


def _pixel_spacing(path: Path) -> tuple[float, float]:
    if image_suffix(path) in (".nii", ".nii.gz"):
        zooms = nib.load(path).header.get_zooms()
        return float(zooms[0]), float(zooms[1]) if len(zooms) > 1 else float(zooms[0])
    return (1.0, 1.0)


def find_inputs(source: str | os.PathLike, *, image_key: str, split: str | None = None, val_fraction: float = 0.1,
                test_fraction: float = 0.1, seed: int = 0) -> list[dict[str, Any]]:
    """Records ``{"subject_id", "image_id", image_key: path}`` of ``split`` from a manifest CSV (or a folder
    holding ``manifest.csv``), a folder with an ``image_key`` sub-folder, a folder of image files, or one
    image file (predicted whatever ``split``).

    A folder has no split column: its subjects are split by :func:`pipeline.xray.data.select_split` with
    the given settings, as training split the same folder (None or ``all``: every image).
    """
    source = Path(source)
    if source.is_file() and image_suffix(source) in IMAGE_SUFFIXES:
        return [{"subject_id": subject_from_image_id(image_stem(source)), "image_id": image_stem(source),
                 image_key: str(source)}]
    if source.is_file() or (source / MANIFEST_NAME).is_file() or (source / image_key).is_dir():
        return load_records(source, keys=[image_key], split=split, val_fraction=val_fraction,
                            test_fraction=test_fraction, seed=seed, check_files=False)
    if not source.is_dir():
        raise InputError(f"{source}: neither a manifest CSV nor a folder")
    records = [{"subject_id": subject_from_image_id(stem), "image_id": stem, image_key: str(path)}
               for stem, path in find_images(source).items()]
    return select_split(records, split, source=source, val_fraction=val_fraction, test_fraction=test_fraction,
                        seed=seed)


def output_format(fmt: str, info: ImageInfo, *, png_scale: float | None) -> tuple[str, int | None]:
    """``(suffix, bits)`` of the prediction for an input described by ``info`` in the requested format.

    ``input``: the input's own format, bit depth and scale, except JPEG, whose predictions are 8-bit PNG
    (lossless: a JPEG would add its compression error to every prediction); ``png``/``jpg``: the input's
    bit depth (JPEG: 8), which for a NIfTI input needs ``png_scale`` (16-bit PNG); ``nii.gz``/``nii``:
    float32 NIfTI in the images' units (count x scale for PNG/JPEG inputs). Raises :class:`InputError`.
    """
    if fmt == "input":
        return (info.suffix, None) if info.kind == "nifti" else (".png", info.bits)
    if fmt in ("nii.gz", "nii"):
        return f".{fmt}", None
    if info.kind == "nifti" and not png_scale:
        raise InputError(f"--formats {fmt} for NIfTI input needs --png_scale (physical units per count of the "
                         f"written {'8' if fmt == 'jpg' else '16'}-bit {fmt.upper()}), e.g. 0.0002 for log images")
    if fmt == "jpg" and (info.bits or 16) > 8:
        raise InputError(f"--formats jpg holds 8 bits; the input is {info.bits or 'float'}-bit: use png")
    return f".{fmt}", 8 if fmt == "jpg" else (info.bits or 16)


class DEPredictor:
    """Runs a trained 2-D generator over condition images and writes one image per target key.

    Args:
        generator: the network (``out_channels == len(target_keys)``).
        image_key, target_keys: as in training; checked against the model card on :meth:`load_weights`.
        divisor: ``2 ** num_downs`` of the generator.
        device: torch device.
        png_scale: physical units per count of PNG/JPEG inputs and outputs (None: the file's full range
            <-> [0, 1]).
        tta: flip test-time augmentation (:mod:`pipeline.engine.mirror`): the prediction is the mean of the
            image's and, flipped back, its left-right mirror's (training flips left-right too); twice the time.
    """

    def __init__(self, *, generator: torch.nn.Module, image_key: str = "se",
                 target_keys: Sequence[str] = ("de_soft", "de_bone"), divisor: int, device: torch.device | str = "cpu",
                 png_scale: float | None = None, windows: Mapping[str, IntensityWindow] | None = None,
                 tta: bool = False) -> None:
        self.device = torch.device(device)
        self.generator = generator.to(self.device)
        self.image_key = image_key
        self.target_keys = list(target_keys)
        self.divisor = int(divisor)
        self.png_scale = png_scale
        self.windows = dict(windows) if windows else None
        self.tta = as_flag(tta, name="tta")
        self.card: dict[str, Any] | None = None

    def load_weights(self, checkpoint: str | os.PathLike, *, model_card: str | os.PathLike | None = None) -> "DEPredictor":
        """Generator weights (``model.pt`` state dict, or a training checkpoint with a ``generator``
        entry) and the intensity windows and split settings from the model card (default:
        ``xray_model.json`` beside ``models/model.pt``; for a checkpoint in ``checkpoints/``, the run's
        ``models/`` folder)."""
        checkpoint = Path(checkpoint)
        self.generator.load_state_dict(load_generator_state(checkpoint))
        if model_card is None:
            model_card = find_card(checkpoint, MODEL_CARD_NAME) or checkpoint.parent / MODEL_CARD_NAME
        card = read_model_card(model_card)
        if card["image_key"] != self.image_key or list(card["target_keys"]) != self.target_keys:
            raise InputError(f"{model_card}: the model maps {card['image_key']} -> {card['target_keys']}, but "
                             f"inference was configured for {self.image_key} -> {self.target_keys} "
                             "(--image_key, --target_keys)")
        self.windows = read_windows(card)
        self.card = card
        return self

    def predict_image(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(1, H, W)`` condition in physical units -> ``(len(target_keys), H, W)`` float32, target units."""
        if self.windows is None:
            raise RuntimeError("no intensity windows: call load_weights() first")
        image = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) image, got shape {tuple(image.shape)}")
        members = mirror_members(lambda unit: predict_unit_image(self.generator, unit, divisor=self.divisor,
                                                                 device=self.device),
                                 self.windows["image"].to_unit(image), dim=-1, flip=self.tta)
        unit = torch.stack(members).mean(dim=0)
        return self.windows["target"].from_unit(unit).numpy().astype(np.float32)

    def output_paths(self, output_dir: Path, record: Mapping[str, Any], formats: Sequence[str]
                     ) -> dict[Path, tuple[str, str, int | None]]:
        """``{path: (target key, format, bits)}`` of one input's predictions (a format that names the same
        file as an earlier one, e.g. ``input`` and ``png`` for a PNG, is written once)."""
        info = image_info(record[self.image_key], subject_id=record["subject_id"])
        paths: dict[Path, tuple[str, str, int | None]] = {}
        for key in self.target_keys:
            for fmt in formats:
                suffix, bits = output_format(fmt, info, png_scale=self.png_scale)
                paths.setdefault(output_dir / key / f"{record['image_id']}{suffix}", (key, fmt, bits))
        return paths

    def _predict_record(self, record: Mapping[str, Any], targets: Mapping[Path, tuple[str, str, int | None]], *,
                        output_dir: Path, formats: Sequence[str], overwrite: bool) -> dict[str, str]:
        path = Path(record[self.image_key])
        image = load_image_2d(path, png_scale=self.png_scale, subject_id=record["subject_id"])
        prediction = self.predict_image(image)
        spacing = _pixel_spacing(path)
        row = {"subject_id": record["subject_id"], "image_id": record["image_id"], "input": str(path.resolve())}
        for target, (key, fmt, bits) in targets.items():
            save_image_2d(prediction[self.target_keys.index(key)], target, png_scale=self.png_scale if bits else None,
                          bits=bits or 16, pixel_spacing_mm=spacing, overwrite=overwrite)
            row[key if fmt == formats[0] else f"{key}_{fmt.replace('.', '_')}"] = str(target.relative_to(output_dir))
        return row

    def predict_inputs(self, source: str | os.PathLike, *, output_dir: str | os.PathLike, split: str | None = None,
                       formats: Sequence[str] = ("input",), overwrite: bool = False, val_fraction: float | None = None,
                       test_fraction: float | None = None, seed: int | None = None) -> Path:
        """Predict every input of ``split`` of ``source`` (:func:`find_inputs`, the split settings from the
        model card: :func:`pipeline.xray.data.split_settings`) into ``OUT/<target key>/<image_id>.<suffix>``
        (:func:`output_format` of each format, default ``input``); returns ``OUT/predictions.csv``
        (subject_id, image_id, input, one path column per target key and format, relative to OUT).

        Refuses (``FileExistsError``, before any prediction) when an output exists and not ``overwrite``.
        A bad input never costs the good ones: each failure is logged as one line, the others are
        written, then an :class:`InputError` lists every failure.
        """
        overwrite = as_flag(overwrite, name="overwrite")
        formats = [str(f).lstrip(".").lower() for f in ([formats] if isinstance(formats, str) else formats)]
        unknown = [f for f in formats if f not in OUTPUT_FORMATS]
        if unknown or not formats:
            raise InputError(f"--formats {unknown or formats}: each must be one of {', '.join(OUTPUT_FORMATS)}")
        settings = split_settings(self.card, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        out = Path(output_dir)
        records = find_inputs(source, image_key=self.image_key, split=split, **settings)
        ids = [r["image_id"] for r in records]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError(f"{source}: duplicate image IDs {duplicates[:5]} would write the same output file")
        plans, failures = [], []
        for record in records:  # headers only: a bad input is known, and outputs in the way refused, up front
            try:
                plans.append((record, self.output_paths(out, record, formats)))
            except InputError as error:
                failures.append(_one_line(error, record))
        table_path = out / "predictions.csv"
        existing = [str(p) for p in [table_path, *(p for _, targets in plans for p in targets)] if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; "
                                  "pass overwrite=True (--overwrite true) to replace them")
        rows = []
        for record, targets in tqdm(plans, desc="predict", unit="image", disable=None):
            try:
                rows.append(self._predict_record(record, targets, output_dir=out, formats=formats, overwrite=overwrite))
            except InputError as error:
                failures.append(_one_line(error, record))
                continue
            logger.info("%s: wrote %s", record["image_id"], ", ".join(str(p.relative_to(out)) for p in targets))
        if failures:
            for failure in failures:
                logger.error("%s", failure)
        if rows:
            with atomic_path(table_path, overwrite=overwrite) as tmp:
                pd.DataFrame(rows).to_csv(tmp, index=False)
            logger.info("wrote %d predictions to %s", len(rows), out)
        if failures:
            raise InputError(f"{len(failures)} of {len(records)} image(s) failed, the other {len(rows)} predictions "
                             "were written: " + " | ".join(failures))
        return table_path


def _one_line(error: BaseException, record: Mapping[str, Any]) -> str:
    message = " ".join(str(error).split())
    return message if message.startswith(record["subject_id"]) else f"{record['subject_id']}: {message}"


__all__: Sequence[str] = ["OUTPUT_FORMATS", "predict_unit_image", "find_inputs", "output_format", "DEPredictor"]
