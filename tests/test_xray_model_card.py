"""The X-ray model card's network settings (pipeline/xray/model_card.py): inference takes them from the
card, refuses a differing one in one line, and falls back (with a warning) for cards without them."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.errors import InputError
from pipeline.xray.data import MODEL_CARD_NAME, training_card
from pipeline.xray.model_card import inference_settings, network_card


def _card(tmp_path, **network):
    models = tmp_path / "models"
    models.mkdir()
    card = {"image_key": "se", "target_keys": ["de_soft", "de_bone"], "windows": {"image": [0, 1], "target": [0, 1]}}
    if network:
        card["network"] = network_card(**network)
    (models / MODEL_CARD_NAME).write_text(json.dumps(card))
    return models / "model.pt"


def test_settings_come_from_the_card_and_a_mismatch_is_refused(tmp_path):
    checkpoint = _card(tmp_path, num_downs=7, base_channels=16, upsample="pixelshuffle", attention=True, dropout=0.5)
    got = inference_settings(checkpoint, num_downs=None, upsample=None)
    assert (got["num_downs"], got["base_channels"], got["upsample"], got["attention"], got["norm"]) == \
        (7, 16, "pixelshuffle", True, "instance")
    assert len(got["model_id"]) == 12
    assert inference_settings(checkpoint, num_downs=7, attention="true")["num_downs"] == 7  # agreeing: fine
    with pytest.raises(InputError, match="upsample = 'transpose' was asked for, but the model was trained with "
                                         "upsample = 'pixelshuffle'"):
        inference_settings(checkpoint, upsample="transpose")
    with pytest.raises(InputError, match="attention = False"):
        inference_settings(checkpoint, attention="false")
    with pytest.raises(ValueError, match="unknown network setting"):
        inference_settings(checkpoint, dropout=0.0)


def test_older_card_without_network_uses_configured_values(tmp_path, caplog):
    checkpoint = _card(tmp_path)
    with caplog.at_level(logging.WARNING):
        got = inference_settings(checkpoint, defaults={"num_downs": 6, "base_channels": 32}, num_downs=5)
    assert (got["num_downs"], got["base_channels"]) == (5, 32) and "cannot be checked" in caplog.text


def test_training_refuses_another_network_in_the_same_output_folder(tmp_path):
    checkpoint = _card(tmp_path, num_downs=6, base_channels=32, upsample="transpose", attention=False, dropout=0.0)
    card_path = checkpoint.parent / MODEL_CARD_NAME
    same = network_card(num_downs=6, base_channels=32, upsample="transpose", attention=False, dropout=0.0)
    assert training_card([], card_path=card_path, image_key="se", target_keys=["de_soft", "de_bone"],
                         network=same)["network"] == same
    other = {**same, "upsample": "resize"}
    with pytest.raises(ValueError, match="upsample = 'transpose', this run asks for 'resize'"):
        training_card([], card_path=card_path, image_key="se", target_keys=["de_soft", "de_bone"], network=other)
