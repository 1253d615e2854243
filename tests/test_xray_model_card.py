"""The X-ray model card's network settings (pipeline/xray/model_card.py): inference takes them from the
card, refuses a differing one in one line, and falls back (with a warning) for cards without them; the
generator is built as the card says (``soft_output``)."""

from __future__ import annotations

import json
import logging

import pytest

from networks import BoneSubtractionUNet, Pix2PixUNet
from pipeline.errors import InputError
from pipeline.xray.data import MODEL_CARD_NAME, training_card
from pipeline.xray.model_card import card_windows, inference_settings, make_generator, network_card


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


def _write_card(tmp_path, network):
    models = tmp_path / "models"
    models.mkdir()
    card = {"image_key": "se", "target_keys": ["de_soft", "de_bone"], "windows": {"image": [0, 6], "target": [-1, 7]},
            "network": network}
    (models / MODEL_CARD_NAME).write_text(json.dumps(card))
    return models / "model.pt"


def test_a_card_written_before_soft_output_means_direct(tmp_path):
    older = {"num_downs": 6, "base_channels": 32, "upsample": "resize", "attention": False, "norm": "instance",
             "dropout": 0.0}  # as 0.5.4 wrote it
    checkpoint = _write_card(tmp_path, older)
    assert inference_settings(checkpoint)["soft_output"] == "direct"
    with pytest.raises(InputError, match="soft_output = 'se_minus_bone' was asked for, but the model was trained "
                                         "with soft_output = 'direct'"):
        inference_settings(checkpoint, soft_output="se_minus_bone")
    # resuming such a run with today's (direct) settings is the same network, not a refusal
    today = network_card(num_downs=6, base_channels=32, upsample="resize", attention=False, dropout=0.0)
    card = training_card([], card_path=checkpoint.parent / MODEL_CARD_NAME, image_key="se",
                         target_keys=["de_soft", "de_bone"], network=today)
    assert card["network"] == older  # the stored card is not rewritten


def test_make_generator_builds_what_the_card_says(tmp_path):
    checkpoint = _write_card(tmp_path, network_card(num_downs=4, base_channels=4, upsample="resize", attention=False,
                                                    dropout=0.0, soft_output="se_minus_bone"))
    settings = inference_settings(checkpoint)
    windows = card_windows(settings)
    unet = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "num_downs": 4, "base_channels": 4,
            "upsample": "resize"}
    generator = make_generator(soft_output=settings["soft_output"], windows=windows, **unet)
    assert isinstance(generator, BoneSubtractionUNet)
    assert (generator.input_window, generator.target_window) == ((0.0, 6.0), (-1.0, 7.0))
    swapped = make_generator(soft_output="se_minus_bone", windows=windows, target_keys=["de_bone", "de_soft"], **unet)
    assert (swapped.soft_channel, swapped.bone_channel) == (1, 0) and swapped.bone_detail_sigma_px is None
    detail = make_generator(soft_output="se_minus_bone_detail", windows=windows, **unet)
    assert isinstance(detail, BoneSubtractionUNet) and detail.bone_detail_sigma_px == 4.0
    direct = make_generator(soft_output="direct", windows=None, **unet)
    assert type(direct) is Pix2PixUNet and set(direct.state_dict()) == set(generator.state_dict())
    with pytest.raises(InputError, match="needs the model card's intensity windows"):
        make_generator(soft_output="se_minus_bone", windows=None, **unet)
    with pytest.raises(InputError, match="needs the targets de_soft and de_bone, got \\['ct'\\]"):
        make_generator(soft_output="se_minus_bone", windows=windows, target_keys=["ct"], **{**unet, "out_channels": 1})
    with pytest.raises(InputError, match="soft_output must be one of direct, se_minus_bone, se_minus_bone_detail, "
                                         "got 'bone'"):
        network_card(num_downs=4, base_channels=4, upsample="resize", attention=False, dropout=0.0, soft_output="bone")
