"""Inference for 2-D paired translation (SE -> DE): whole images in, one file per target key out.

The generator sees the whole image (padded by edge replication to a multiple of ``2 ** num_downs``,
then cropped back), as in validation: instance-norm statistics then match training on whole images.
Outputs are in the units of the training targets (``IntensityWindow.from_unit``), written as float32
NIfTI ``OUT/<target_key>/<image_id>.nii.gz`` (pixel spacing copied from a NIfTI input) and optionally
16-bit PNG (``value = count * png_scale``), atomically, never replacing a file unless ``overwrite``.
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

from pipeline.engine.handlers import load_generator_state
from pipeline.engine.model_card import find_card, read_model_card
from pipeline.engine.trainer import plain_tensor, unwrap_ddp
from pipeline.errors import InputError, as_flag
from pipeline.io.atomic import atomic_path
from pipeline.io.images2d import IMAGE_SUFFIXES, image_stem, image_suffix, load_image_2d, save_image_2d
from pipeline.xray.data import MODEL_CARD_NAME, IntensityWindow, load_records, read_windows

logger = logging.getLogger(__name__)


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


def find_inputs(source: str | os.PathLike, *, image_key: str, split: str | None = None,
                ) -> list[dict[str, Any]]:
    """Records ``{"subject_id", "image_id", image_key: path}`` from a manifest CSV (or a folder holding
    ``manifest.csv``), a folder with an ``image_key`` sub-folder, or a folder of image files."""
    source = Path(source)
    if source.is_file() or (source / "manifest.csv").is_file():
        return load_records(source, keys=[image_key], split=split)
    folder = source / image_key if (source / image_key).is_dir() else source
    if not folder.is_dir():
        raise FileNotFoundError(f"{source}: neither a manifest CSV nor a folder")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and image_suffix(p) in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise ValueError(f"{folder}: no PNG/NIfTI images found")
    stems = [image_stem(p) for p in files]
    return [{"subject_id": stem.rsplit("_p", 1)[0] if "_p" in stem else stem, "image_id": stem, image_key: str(p)}
            for stem, p in zip(stems, files)]


class DEPredictor:
    """Runs a trained 2-D generator over condition images and writes one image per target key.

    Args:
        generator: the network (``out_channels == len(target_keys)``).
        image_key, target_keys: as in training; checked against the model card on :meth:`load_weights`.
        divisor: ``2 ** num_downs`` of the generator.
        device: torch device.
        png_scale: physical units per count of 16-bit PNG inputs (None: full range -> [0, 1]) and outputs.
    """

    def __init__(self, *, generator: torch.nn.Module, image_key: str = "se",
                 target_keys: Sequence[str] = ("de_soft", "de_bone"), divisor: int, device: torch.device | str = "cpu",
                 png_scale: float | None = None, windows: Mapping[str, IntensityWindow] | None = None) -> None:
        self.device = torch.device(device)
        self.generator = generator.to(self.device)
        self.image_key = image_key
        self.target_keys = list(target_keys)
        self.divisor = int(divisor)
        self.png_scale = png_scale
        self.windows = dict(windows) if windows else None

    def load_weights(self, checkpoint: str | os.PathLike, *, model_card: str | os.PathLike | None = None) -> "DEPredictor":
        """Generator weights (``model.pt`` state dict, or a training checkpoint with a ``generator``
        entry) and the intensity windows from the model card (default: ``xray_model.json`` beside
        ``models/model.pt``; for a checkpoint in ``checkpoints/``, the run's ``models/`` folder)."""
        checkpoint = Path(checkpoint)
        self.generator.load_state_dict(load_generator_state(checkpoint))
        if model_card is None:
            model_card = find_card(checkpoint, MODEL_CARD_NAME) or checkpoint.parent / MODEL_CARD_NAME
        card = read_model_card(model_card)
        if card["image_key"] != self.image_key or list(card["target_keys"]) != self.target_keys:
            raise ValueError(f"{model_card}: the model maps {card['image_key']} -> {card['target_keys']}, but "
                             f"inference was configured for {self.image_key} -> {self.target_keys}")
        self.windows = read_windows(card)
        return self

    def predict_image(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(1, H, W)`` condition in physical units -> ``(len(target_keys), H, W)`` float32, target units."""
        if self.windows is None:
            raise RuntimeError("no intensity windows: call load_weights() first")
        image = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) image, got shape {tuple(image.shape)}")
        unit = predict_unit_image(self.generator, self.windows["image"].to_unit(image), divisor=self.divisor,
                                  device=self.device)
        return self.windows["target"].from_unit(unit).numpy().astype(np.float32)

    def output_paths(self, output_dir: Path, image_id: str, formats: Sequence[str]) -> list[Path]:
        return [output_dir / key / f"{image_id}.{fmt}" for key in self.target_keys for fmt in formats]

    def predict_inputs(self, source: str | os.PathLike, *, output_dir: str | os.PathLike, split: str | None = None,
                       formats: Sequence[str] = ("nii.gz",), overwrite: bool = False) -> Path:
        """Predict every input of ``source`` (:func:`find_inputs`); returns ``OUT/predictions.csv``
        (subject_id, image_id, input, one path column per target key and format, relative to OUT).

        Refuses (``FileExistsError``, before any prediction) when an output exists and not ``overwrite``.
        """
        overwrite = as_flag(overwrite, name="overwrite")
        formats = [f.lstrip(".") for f in formats]
        unknown = [f for f in formats if f not in ("nii.gz", "nii", "png")]
        if unknown:
            raise ValueError(f"output formats must be nii.gz, nii or png, got {unknown}")
        if "png" in formats and not self.png_scale:
            raise ValueError("16-bit PNG output needs png_scale (physical units per count)")
        out = Path(output_dir)
        records = find_inputs(source, image_key=self.image_key, split=split)
        ids = [r["image_id"] for r in records]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"{source}: duplicate image IDs {duplicates[:5]} would write the same output file")
        table_path = out / "predictions.csv"
        planned = [table_path] + [p for r in records for p in self.output_paths(out, r["image_id"], formats)]
        existing = [str(p) for p in planned if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; "
                                  "pass overwrite=True (--overwrite true) to replace them")
        rows = []
        for record in records:
            path = Path(record[self.image_key])
            try:
                image = load_image_2d(path, png_scale=self.png_scale)
            except (OSError, ValueError) as err:
                raise InputError(f"{record['subject_id']}: cannot read {self.image_key} image {path}: {err}") from err
            prediction = self.predict_image(image)
            spacing = _pixel_spacing(path)
            row = {"subject_id": record["subject_id"], "image_id": record["image_id"], "input": str(path.resolve())}
            for channel, key in enumerate(self.target_keys):
                for fmt in formats:
                    target = out / key / f"{record['image_id']}.{fmt}"
                    save_image_2d(prediction[channel], target, png_scale=self.png_scale if fmt == "png" else None,
                                  pixel_spacing_mm=spacing, overwrite=overwrite)
                    row[key if fmt == formats[0] else f"{key}_{fmt.replace('.', '_')}"] = f"{key}/{target.name}"
            rows.append(row)
            logger.info("%s: wrote %s", record["image_id"], ", ".join(self.target_keys))
        with atomic_path(table_path, overwrite=overwrite) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        logger.info("wrote %d predictions to %s", len(rows), out)
        return table_path


__all__: Sequence[str] = ["predict_unit_image", "find_inputs", "DEPredictor"]
