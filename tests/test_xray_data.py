"""X-ray training data: intensity windows, paired-image transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.xray.data import IntensityWindow, fit_window, load_records, training_transforms


def test_window_roundtrip_and_fit() -> None:
    window = fit_window([np.array([0.0, 1.0, 4.0])])
    assert window.lo <= 0.0 and window.hi >= 4.0
    x = torch.linspace(-0.5, 5.0, 11)
    assert torch.allclose(window.from_unit(window.to_unit(x)), x, atol=1e-6)
    assert float(window.to_unit(torch.tensor(window.hi))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        IntensityWindow(1.0, 1.0)


def test_training_transforms_concatenate_targets_and_flip_columns(tmp_path: Path) -> None:
    from pipeline.io.images2d import save_image_2d

    rows, cols = np.mgrid[:8, :8].astype(np.float32)
    ramp = 0.8 * rows + 0.1 * cols  # distinct values, increasing down the rows and along the columns
    for key, scale in (("se", 1.0), ("de_soft", 0.7), ("de_bone", 0.3)):
        save_image_2d(ramp * scale, tmp_path / key / "A_p000.nii.gz")
    record = load_records(tmp_path, keys=["se", "de_soft", "de_bone"])[0]
    windows = {"image": IntensityWindow(0.0, 6.3), "target": IntensityWindow(0.0, 6.3)}
    chain = training_transforms(image_key="se", target_keys=["de_soft", "de_bone"], windows=windows, divisor=8,
                                flip_lr=True)
    chain.set_random_state(seed=1)
    column_orders = set()
    for _ in range(8):
        sample = chain(dict(record))
        image, target = sample["se"], sample["target"]
        assert image.shape == (1, 8, 8) and target.shape == (2, 8, 8)
        assert float(image.min()) == pytest.approx(-1.0) and float(image.max()) == pytest.approx(1.0)
        # targets move with the image; rows (superior -> inferior) are never flipped
        physical = windows["image"].from_unit(image[0])
        assert torch.allclose(windows["target"].from_unit(target[0]), 0.7 * physical, atol=1e-5)
        assert torch.allclose(windows["target"].from_unit(target[1]), 0.3 * physical, atol=1e-5)
        assert bool((image[0, 1:] > image[0, :-1]).all())
        column_orders.add(bool(image[0, 0, 1] > image[0, 0, 0]))
    assert column_orders == {True, False}  # left-right flips do happen


def test_body_mask_for_masked_l1_moves_with_the_images(tmp_path: Path) -> None:
    from pipeline.io.images2d import save_image_2d

    image = np.zeros((8, 8), np.float32)
    image[2:6, 1:4] = 5.0  # the body: left part of the image
    for key in ("se", "de_soft", "de_bone"):
        save_image_2d(image, tmp_path / key / "A_p000.nii.gz")
    record = load_records(tmp_path, keys=["se", "de_soft", "de_bone"])[0]
    windows = {"image": IntensityWindow(0.0, 6.0), "target": IntensityWindow(0.0, 6.0)}
    chain = training_transforms(image_key="se", target_keys=["de_soft", "de_bone"], windows=windows, divisor=8,
                                flip_lr=True, body_mask=True)
    chain.set_random_state(seed=3)
    for _ in range(6):
        sample = chain(dict(record))
        assert sample["mask"].shape == sample["target"].shape == (2, 8, 8)
        body = windows["image"].from_unit(sample["se"][0]) > 1.0
        assert torch.equal(sample["mask"][0] > 0, body) and torch.equal(sample["mask"][1] > 0, body)
    assert "mask" not in training_transforms(image_key="se", target_keys=["de_soft", "de_bone"], windows=windows,
                                             divisor=8)(dict(record))


def test_a_manifest_mixing_labelled_and_unlabelled_cts_collates(tmp_path: Path) -> None:
    """Chest phantoms have tumour labels, the real CT's deformed variants do not: their rows leave those
    cells empty, the loader drops empty keys, and the batch must still form (training and validation)."""
    import pandas as pd

    from pipeline.data.loaders import make_loader
    from pipeline.io.images2d import save_image_2d
    from pipeline.xray.data import validation_transforms

    rows = []
    for index, subject in enumerate(("2TP001", "CXR001-D01")):
        name = f"{subject}_p000"
        for key in ("se", "de_soft", "de_bone") + (("tumour_mask",) if index == 0 else ()):
            save_image_2d(np.full((8, 8), 1.0 + index, np.float32), tmp_path / key / f"{name}.nii.gz")
        rows.append({"subject_id": subject, "projection_id": name, "split": "train",
                     "tumour_mask": f"tumour_mask/{name}.nii.gz" if index == 0 else "",
                     **{k: f"{k}/{name}.nii.gz" for k in ("se", "de_soft", "de_bone")}})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    records = load_records(tmp_path / "manifest.csv", keys=["se", "de_soft", "de_bone"], split="train")
    windows = {"image": IntensityWindow(0.0, 4.0), "target": IntensityWindow(0.0, 4.0)}
    options = {"image_key": "se", "target_keys": ["de_soft", "de_bone"], "windows": windows}
    for chain, size in ((training_transforms(divisor=8, **options), 2), (validation_transforms(**options), 2)):
        batch = next(iter(make_loader(records, chain, batch_size=size, shuffle=False)))
        assert set(batch) == {"se", "target"} and batch["target"].shape == (2, 2, 8, 8)


def test_a_folder_is_split_by_subject_with_the_one_split_function(tmp_path: Path) -> None:
    from pipeline.data.manifest import subject_splits
    from pipeline.errors import InputError
    from pipeline.xray.data import select_split

    records = [{"subject_id": f"S{i}", "image_id": f"S{i}_p{k}"} for i in range(12) for k in range(3)]
    reference = subject_splits([f"S{i}" for i in range(12)], val_fraction=0.25, test_fraction=0.25, seed=5)
    for split in ("train", "val", "test"):
        chosen = select_split(records, split, source="DIR", val_fraction=0.25, test_fraction=0.25, seed=5)
        assert {r["subject_id"] for r in chosen} == {s for s, v in reference.items() if v == split}
        assert len(chosen) == 3 * sum(v == split for v in reference.values())  # every slice of a subject
    for everything in (None, "all", "null", "ALL"):
        assert len(select_split(records, everything, source="DIR")) == 36
    labelled = [{**r, "split": "test" if r["subject_id"] == "S0" else "train"} for r in records]
    assert len(select_split(labelled, "test", source="DIR")) == 3  # a split column wins
    with pytest.raises(InputError, match=r"^DIR: no images in split 'val' \(splits: test, train; --split all"):
        select_split(labelled, "val", source="DIR")


def test_the_model_card_records_the_split_and_a_resumed_run_keeps_it(tmp_path: Path) -> None:
    from pipeline.engine.model_card import write_model_card
    from pipeline.errors import InputError
    from pipeline.xray.data import DEFAULT_SPLIT_SETTINGS, split_settings, training_card

    split = {"val_fraction": 0.2, "test_fraction": 0.1, "seed": 3}
    options = {"card_path": tmp_path / "card.json", "image_key": "mr", "target_keys": ["ct"],
               "windows": {"image": [0, 1], "target": [0, 1]}}
    card = training_card([], split=split, **options)
    assert card["split"] == split
    write_model_card(tmp_path / "card.json", card)
    assert training_card([], split=split, **options) == card  # resumed: the same
    with pytest.raises(InputError, match="--seed 0: the model was trained with seed 3"):
        training_card([], split={**split, "seed": 0}, **options)
    assert split_settings(card) == split and split_settings(card, seed=3, val_fraction=None) == split
    assert split_settings({"image_key": "se"}) == DEFAULT_SPLIT_SETTINGS  # cards before 0.4.0, or none:
    assert split_settings(None, seed=2, test_fraction=None) == {**DEFAULT_SPLIT_SETTINGS, "seed": 2}  # as given
    with pytest.raises(InputError, match="--val_fraction 0.1: the model was trained with val_fraction 0.2"):
        split_settings(card, val_fraction=0.1)
def test_noiseless_targets_read_the_references_under_the_target_names(tmp_path: Path) -> None:
    import pandas as pd

    from pipeline.errors import InputError
    from pipeline.io.images2d import save_image_2d
    from pipeline.xray.data import training_records

    rows = []
    for i in range(2):
        row = {"subject_id": f"S{i}", "projection_id": f"S{i}_p000", "split": "train"}
        for key, value in (("se", 3.0), ("de_soft", 2.0), ("de_bone", 1.0), ("de_soft_noiseless", 2.5),
                           ("de_bone_noiseless", 0.5)):
            save_image_2d(np.full((8, 8), value + i, np.float32), tmp_path / key / f"S{i}.nii.gz")
            row[key] = f"{key}/S{i}.nii.gz"
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    plain = training_records(tmp_path / "m.csv", image_key="se", target_keys=["de_soft", "de_bone"], split="train")
    clean = training_records(tmp_path / "m.csv", image_key="se", target_keys=["de_soft", "de_bone"], split="train",
                             noiseless_targets=True)
    assert plain[0]["de_soft"].endswith("de_soft/S0.nii.gz")
    assert clean[0]["de_soft"].endswith("de_soft_noiseless/S0.nii.gz")
    assert clean[1]["de_bone"].endswith("de_bone_noiseless/S1.nii.gz") and clean[1]["se"] == plain[1]["se"]
    rows[1]["de_bone_noiseless"] = ""  # a CT rendered without realism has no reference
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputError, match="S1: no de_bone_noiseless for S1_p000"):
        training_records(tmp_path / "m.csv", image_key="se", target_keys=["de_soft", "de_bone"], split="train",
                         noiseless_targets=True)
