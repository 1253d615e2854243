"""The X-ray model card's network settings: written by training, obeyed by inference.

Training stores ``network`` (:func:`network_card`: ``num_downs``, ``base_channels``, ``upsample``,
``attention``, ``norm``, ``soft_output``, and ``dropout`` for the record) in ``models/xray_model.json`` beside
the windows (:func:`pipeline.xray.data.training_card`). Inference builds the generator from the card
(:func:`inference_settings`, :func:`make_generator`); an inference option given that differs from the card is
refused in one line naming both values (before this, a mismatch surfaced as a page of state-dict errors). A model
trained before cards carried the network runs with the configured values and a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from networks import BoneSubtractionUNet, Pix2PixUNet
from pipeline.engine.model_card import card_hash, check_settings, find_card, read_model_card
from pipeline.errors import InputError
from pipeline.xray.data import MODEL_CARD_NAME, OLDER_NETWORK_DEFAULTS, IntensityWindow, read_windows

__all__ = ["BONE_DETAIL_SIGMA_PX", "NETWORK_SETTINGS", "SOFT_OUTPUTS", "card_windows", "inference_settings",
           "make_generator", "network_card"]

logger = logging.getLogger(__name__)

#: What shapes the generator's weights or the meaning of its outputs, so inference must match it (dropout
#: does not: it is off there).
NETWORK_SETTINGS = ("num_downs", "base_channels", "upsample", "attention", "norm", "soft_output")
#: How the soft-tissue channel is made: ``direct`` (a channel of its own, as Pix2Pix), ``se_minus_bone``
#: (the SE input minus the bone channel plus a learned correction: :class:`networks.BoneSubtractionUNet`) or
#: ``se_minus_bone_detail`` (the same, subtracting only the bone channel's detail finer than
#: :data:`BONE_DETAIL_SIGMA_PX`).
SOFT_OUTPUTS = ("direct", "se_minus_bone", "se_minus_bone_detail")
#: The scale of ``se_minus_bone_detail`` (pixels): the detail L1's default, ~10 mm on the chest benchmark's
#: 256-pixel detector (ribs, not the spine's broad load). A constant, so the card's name says it all.
BONE_DETAIL_SIGMA_PX = 4.0


def check_soft_output(soft_output: str) -> str:
    """``soft_output`` if it is one of :data:`SOFT_OUTPUTS`, else :class:`InputError` in one line."""
    if soft_output not in SOFT_OUTPUTS:
        raise InputError(f"soft_output must be one of {', '.join(SOFT_OUTPUTS)}, got {soft_output!r}")
    return soft_output


def network_card(*, num_downs: int, base_channels: int, upsample: str, attention: bool, dropout: float,
                 norm: str = "instance", soft_output: str = "direct") -> dict[str, Any]:
    """The card's ``network`` entry (JSON-ready)."""
    return {"num_downs": int(num_downs), "base_channels": int(base_channels), "upsample": str(upsample),
            "attention": bool(attention), "norm": str(norm), "soft_output": check_soft_output(str(soft_output)),
            "dropout": float(dropout)}


def make_generator(*, soft_output: str = "direct", windows: Mapping[str, IntensityWindow] | None = None,
                   target_keys: Sequence[str] = ("de_soft", "de_bone"), **unet: Any) -> Pix2PixUNet:
    """The X-ray generator: a :class:`networks.Pix2PixUNet` (``soft_output`` ``direct``) or a
    :class:`networks.BoneSubtractionUNet` (``se_minus_bone``, ``se_minus_bone_detail``: needs the card's
    ``windows`` and the targets ``de_soft`` and ``de_bone``). ``unet``: the U-Net's options. They have the same
    state-dict keys."""
    if check_soft_output(soft_output) == "direct":
        return Pix2PixUNet(**unet)
    keys = list(target_keys)
    if sorted(keys) != ["de_bone", "de_soft"]:
        raise InputError(f"soft_output {soft_output} needs the targets de_soft and de_bone, got {keys}")
    if windows is None:
        raise InputError(f"soft_output {soft_output} needs the model card's intensity windows (none were found)")
    return BoneSubtractionUNet(input_window=windows["image"].as_list(), target_window=windows["target"].as_list(),
                               soft_channel=keys.index("de_soft"), bone_channel=keys.index("de_bone"),
                               bone_detail_sigma_px=BONE_DETAIL_SIGMA_PX if soft_output.endswith("_detail") else None,
                               **unet)


def card_windows(settings: Mapping[str, Any]) -> dict[str, IntensityWindow] | None:
    """The intensity windows of the card that :func:`inference_settings` found (None without a card)."""
    return read_windows(read_model_card(settings["card_path"])) if settings.get("card_path") else None


def inference_settings(checkpoint: str | os.PathLike, *, card_path: str | os.PathLike | None = None,
                       defaults: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The :data:`NETWORK_SETTINGS` for ``checkpoint`` from its card (``xray_model.json`` beside it, or
    ``card_path``), plus ``model_id`` (the card's hash) and ``card_path``. ``overrides`` (None = not given)
    must agree with the card: a differing one raises :class:`pipeline.errors.InputError`. Without a card
    or without its ``network`` entry the overrides, then ``defaults``, are used with a warning."""
    unknown = sorted(set(overrides) - set(NETWORK_SETTINGS))
    if unknown:
        raise ValueError(f"unknown network setting(s) {unknown}; known: {', '.join(NETWORK_SETTINGS)}")
    path = Path(card_path) if card_path is not None else find_card(checkpoint, MODEL_CARD_NAME)
    card = read_model_card(path) if path is not None else {}
    if "network" not in card:
        logger.warning("%s: no network settings in the model card; using the configured ones, which cannot be "
                       "checked against what the model was trained with", path or checkpoint)
        given = {k: v for k, v in overrides.items() if v is not None}
        return {**dict(defaults or {}), **given, "model_id": card_hash(card) if card else None,
                "card_path": str(path) if path else None}
    network = {**OLDER_NETWORK_DEFAULTS, **card["network"]}
    check_settings(network, overrides, path=path)
    return {**{k: network[k] for k in NETWORK_SETTINGS}, "model_id": card_hash(card), "card_path": str(path)}
