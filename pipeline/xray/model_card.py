"""The X-ray model card's network settings: written by training, obeyed by inference.

Training stores ``network`` (:func:`network_card`: ``num_downs``, ``base_channels``, ``upsample``,
``attention``, ``norm``, and ``dropout`` for the record) in ``models/xray_model.json`` beside the windows
(:func:`pipeline.xray.data.training_card`). Inference builds the generator from the card
(:func:`inference_settings`); an inference option given that differs from the card is refused in one
line naming both values (before this, a mismatch surfaced as a page of state-dict errors). A model
trained before cards carried the network runs with the configured values and a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.engine.model_card import card_hash, check_settings, find_card, read_model_card
from pipeline.xray.data import MODEL_CARD_NAME

__all__ = ["NETWORK_SETTINGS", "network_card", "inference_settings"]

logger = logging.getLogger(__name__)

#: What shapes the generator's weights, so inference must match it (dropout does not: it is off there).
NETWORK_SETTINGS = ("num_downs", "base_channels", "upsample", "attention", "norm")


def network_card(*, num_downs: int, base_channels: int, upsample: str, attention: bool, dropout: float,
                 norm: str = "instance") -> dict[str, Any]:
    """The card's ``network`` entry (JSON-ready)."""
    return {"num_downs": int(num_downs), "base_channels": int(base_channels), "upsample": str(upsample),
            "attention": bool(attention), "norm": str(norm), "dropout": float(dropout)}


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
    check_settings(card["network"], overrides, path=path)
    return {**{k: card["network"][k] for k in NETWORK_SETTINGS}, "model_id": card_hash(card), "card_path": str(path)}
