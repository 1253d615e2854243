"""The sCT model card: what training used, and the settings inference must take from it.

Training writes ``models/model_card.json`` (through :func:`pipeline.engine.model_card.write_model_card`)
when it starts; inference reads it and uses its values by default (:func:`inference_settings`). An
explicit inference option that differs from the card is refused, naming both values: a 2.5D model run
with another patch size, slab size or spacing sees inputs it was never trained on, and its HU are
silently wrong.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.data.loaders import check_mode, planes_for_mode
from pipeline.engine.model_card import card_hash, check_patch_size, check_settings, find_card, read_model_card
from pipeline.errors import InputError, as_flag
from transforms.intensity import HU_MAX, HU_MIN
from transforms.plane import check_planes

__all__ = ["MODEL_CARD_NAME", "SETTINGS", "find_model_card", "inference_settings", "rtsynth_version",
           "training_card"]

logger = logging.getLogger(__name__)

MODEL_CARD_NAME = "model_card.json"
#: What inference must match: the network's input geometry and architecture.
SETTINGS = ("mode", "patch_size", "slab_size", "target_spacing", "num_downs", "base_channels", "attention", "norm",
            "planes", "upsample", "position_channels")
#: Values of settings added after the first cards were written: what those older models were trained with.
OLDER_CARD_DEFAULTS = {"planes": ["axial"], "upsample": "transpose", "position_channels": False}
MR_NORMALISATION = "per subject: zero signal -> -1, 99.5th percentile inside the body mask -> +1, clipped"


def rtsynth_version() -> str:
    try:
        return importlib.metadata.version("rtsynth")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _file_hash(path: str | os.PathLike | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def training_card(*, mode: str, patch_size: int, slab_size: int, target_spacing: Sequence[float] | None,
                  num_downs: int, base_channels: int, attention: bool, norm: str = "instance",
                  planes: Sequence[str] | str = ("axial",), upsample: str = "transpose",
                  position_channels: bool = False, manifest: str | os.PathLike | None = None) -> dict[str, Any]:
    """The card of an sCT training run (JSON-ready): the :data:`SETTINGS`, the HU window and MR
    normalisation the network was trained in, the training manifest's hash and the code version.

    Raises :class:`InputError` (one line, before any training) when ``patch_size`` is not a multiple of
    ``2 ** num_downs``: the U-Net halves the window ``num_downs`` times and would fail on the first batch,
    and when ``position_channels`` is asked for in 3D mode (:mod:`transforms.position` serves 2D/2.5D)."""
    check_patch_size(patch_size, divisor=2 ** int(num_downs))
    position_channels = as_flag(position_channels, name="position_channels")
    if position_channels and check_mode(mode) == "3d":
        raise InputError("--position_channels true: position channels follow 2D/2.5D slabs; 3D mode takes none")
    return {
        "task": "mri_to_ct",
        "mode": str(mode),
        "patch_size": int(patch_size),
        "slab_size": int(slab_size),
        "target_spacing": None if target_spacing is None else [float(s) for s in target_spacing],
        "num_downs": int(num_downs),
        "base_channels": int(base_channels),
        "attention": bool(attention),
        "norm": str(norm),
        "planes": list(planes_for_mode(mode, planes)),
        "upsample": str(upsample),
        "position_channels": position_channels,
        "hu_window": [HU_MIN, HU_MAX],
        "mr_normalisation": MR_NORMALISATION,
        "manifest_sha256": _file_hash(manifest),
        "rtsynth_version": rtsynth_version(),
    }


def find_model_card(checkpoint: str | os.PathLike) -> Path | None:
    """The card for ``checkpoint``: ``model_card.json`` beside it (``models/model.pt``) or, for a
    training checkpoint in ``checkpoints/``, in the run's ``models/`` folder. None when there is none."""
    return find_card(checkpoint, MODEL_CARD_NAME)


def inference_settings(checkpoint: str | os.PathLike, *, card_path: str | os.PathLike | None = None,
                       defaults: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Settings for inference with ``checkpoint``: the model card's :data:`SETTINGS`, plus
    ``model_id`` (the card's hash, for provenance) and ``card_path``.

    ``overrides`` (None = not given) must agree with the card; a differing one raises :class:`InputError`
    naming the option and both values. Without a card (a model trained before cards existed) the
    overrides, then ``defaults``, are used and a warning says that nothing could be checked.
    """
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown inference setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    path = Path(card_path) if card_path is not None else find_model_card(checkpoint)
    given = {k: v for k, v in overrides.items() if v is not None}
    if path is None:
        logger.warning("no %s found for %s: using the configured settings, which cannot be checked against "
                       "what the model was trained with", MODEL_CARD_NAME, checkpoint)
        settings = {**dict(defaults or {}), **given}
        return {**settings, "model_id": None, "card_path": None}
    written = read_model_card(path)
    card = {**OLDER_CARD_DEFAULTS, **written}
    if card.get("task") != "mri_to_ct":
        raise ValueError(f"{path}: this model card is for task {card.get('task')!r}, not mri_to_ct")
    if [float(v) for v in card["hu_window"]] != [HU_MIN, HU_MAX]:
        raise ValueError(f"{path}: the model was trained in the HU window {card['hu_window']}, this code uses "
                         f"[{HU_MIN:g}, {HU_MAX:g}]")
    # "all" or one plane name, as training accepts
    check_settings(card, given, path=path,
                   normalise=lambda key, value: list(check_planes(value)) if key == "planes" else value)
    return {**{key: card[key] for key in SETTINGS}, "model_id": card_hash(written), "card_path": str(path)}
