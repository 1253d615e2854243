"""The sCT model card: what training records, and inference settings that obey it."""

from __future__ import annotations

import json

import pytest

from pipeline.engine.model_card import card_hash, write_model_card
from pipeline.sct.model_card import MODEL_CARD_NAME, find_model_card, inference_settings, training_card

TRAINED = dict(mode="2.5d", patch_size=64, slab_size=5, target_spacing=[1.0, 1.0, 2.0], num_downs=6,
               base_channels=32, attention=False)


@pytest.fixture
def run_folder(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,mr,ct,mask,split\n1BA001,a,b,c,train\n")
    models = tmp_path / "run" / "models"
    card = training_card(**TRAINED, manifest=manifest)
    write_model_card(models / MODEL_CARD_NAME, card)
    (models / "model.pt").write_bytes(b"weights")
    return models, card


def test_training_card_records_settings_window_manifest_and_version(run_folder, tmp_path):
    models, card = run_folder
    stored = json.loads((models / MODEL_CARD_NAME).read_text())
    assert {k: stored[k] for k in TRAINED} == TRAINED
    assert stored["hu_window"] == [-1024.0, 3000.0] and stored["task"] == "mri_to_ct"
    assert len(stored["manifest_sha256"]) == 12 and stored["rtsynth_version"]
    other = tmp_path / "other.csv"
    other.write_text("subject_id,mr,ct,mask,split\n1BA002,a,b,c,train\n")
    assert training_card(**TRAINED, manifest=other)["manifest_sha256"] != stored["manifest_sha256"]


def test_inference_takes_the_cards_values(run_folder):
    models, card = run_folder
    settings = inference_settings(models / "model.pt")
    assert {k: settings[k] for k in TRAINED} == TRAINED
    assert settings["model_id"] == card_hash(card) and settings["card_path"] == str(models / MODEL_CARD_NAME)
    # a training checkpoint in checkpoints/ finds the run's card too
    assert find_model_card(models.parent / "checkpoints" / "latest.pt") == models / MODEL_CARD_NAME
    # agreeing overrides are fine (64 == 64.0, lists vs tuples)
    assert inference_settings(models / "model.pt", patch_size=64.0, target_spacing=(1, 1, 2))["patch_size"] == 64


@pytest.mark.parametrize(("key", "value"), [("patch_size", 32), ("target_spacing", [1.0, 1.0, 1.0]),
                                            ("mode", "3d"), ("num_downs", 5), ("planes", "all"),
                                            ("upsample", "resize"), ("position_channels", True)])
def test_an_override_that_differs_from_the_card_is_refused_naming_both(run_folder, key, value):
    models, _ = run_folder
    with pytest.raises(ValueError) as error:
        inference_settings(models / "model.pt", **{key: value})
    message = str(error.value)
    trained = {"planes": ["axial"], "upsample": "transpose", "position_channels": False, **TRAINED}[key]  # the card's defaults where TRAINED is silent
    asked = ["axial", "coronal", "sagittal"] if value == "all" else value
    assert f"{key} = {asked!r} was asked for" in message and f"trained with {key} = {trained!r}" in message


def test_multi_plane_card_and_a_card_older_than_planes(run_folder, tmp_path):
    models, card = run_folder
    assert card["planes"] == ["axial"]
    multi = tmp_path / "multi" / MODEL_CARD_NAME
    write_model_card(multi, training_card(**TRAINED, planes="all"))
    settings = inference_settings(multi.parent / "model.pt", planes=["axial", "coronal", "sagittal"])
    assert settings["planes"] == ["axial", "coronal", "sagittal"]
    # a card written before planes existed: its model is axial-only, and its hash (the sCT provenance) is unchanged
    older = {k: v for k, v in card.items() if k != "planes"}
    (models / MODEL_CARD_NAME).write_text(json.dumps(older))
    settings = inference_settings(models / "model.pt")
    assert settings["planes"] == ["axial"] and settings["model_id"] == card_hash(older)


def test_upsample_is_on_the_card_and_a_card_older_than_it_means_transposed_convolutions(run_folder, tmp_path):
    models, card = run_folder
    assert card["upsample"] == "transpose"
    resize = tmp_path / "resize" / MODEL_CARD_NAME
    write_model_card(resize, training_card(**TRAINED, upsample="resize"))
    assert inference_settings(resize.parent / "model.pt")["upsample"] == "resize"
    older = {k: v for k, v in card.items() if k != "upsample"}
    (models / MODEL_CARD_NAME).write_text(json.dumps(older))
    settings = inference_settings(models / "model.pt")
    assert settings["upsample"] == "transpose" and settings["model_id"] == card_hash(older)
    with pytest.raises(ValueError, match="upsample = 'resize' was asked for"):
        inference_settings(models / "model.pt", upsample="resize")


def test_position_channels_are_on_the_card_and_a_card_older_than_them_means_none(run_folder, tmp_path):
    models, card = run_folder
    assert card["position_channels"] is False
    with_position = tmp_path / "position" / MODEL_CARD_NAME
    write_model_card(with_position, training_card(**TRAINED, position_channels="true"))
    assert inference_settings(with_position.parent / "model.pt")["position_channels"] is True
    older = {k: v for k, v in card.items() if k != "position_channels"}
    (models / MODEL_CARD_NAME).write_text(json.dumps(older))
    settings = inference_settings(models / "model.pt")
    assert settings["position_channels"] is False and settings["model_id"] == card_hash(older)


def test_without_a_card_the_configured_values_are_used(tmp_path, caplog):
    settings = inference_settings(tmp_path / "model.pt", defaults={"mode": "2.5d", "patch_size": 64}, patch_size=32)
    assert settings["patch_size"] == 32 and settings["mode"] == "2.5d" and settings["model_id"] is None
    assert "cannot be checked" in caplog.text


def test_a_card_for_another_task_or_hu_window_is_refused(run_folder):
    models, card = run_folder
    (models / MODEL_CARD_NAME).write_text(json.dumps({**card, "hu_window": [-1000.0, 2000.0]}))
    with pytest.raises(ValueError, match="HU window"):
        inference_settings(models / "model.pt")
    (models / MODEL_CARD_NAME).write_text(json.dumps({**card, "task": "xray_dual_energy"}))
    with pytest.raises(ValueError, match="task"):
        inference_settings(models / "model.pt")


def test_resumed_run_must_match_the_stored_card_except_the_version(run_folder):
    models, card = run_folder
    write_model_card(models / MODEL_CARD_NAME, {**card, "rtsynth_version": "9.9"})  # newer code resuming: fine
    with pytest.raises(ValueError, match="patch_size"):
        write_model_card(models / MODEL_CARD_NAME, {**card, "patch_size": 32})
    assert json.loads((models / MODEL_CARD_NAME).read_text())["patch_size"] == 64
