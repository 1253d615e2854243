"""Tests for pipeline.xray.inference: ``predict_unit_image`` (edge padding to the divisor and cropping
back, eval mode and no gradients during the call, training mode restored), ``find_inputs`` (manifest,
key sub-folder, plain folder; the split a folder gets is training's), ``output_format`` (like the input),
and ``DEPredictor`` with identity-like generators: intensity windows map predictions back to physical
units, weights, windows and split settings come from the checkpoint and model card, and
``predict_inputs`` writes one image per target key plus ``predictions.csv`` without overwriting, PNG/JPEG
inputs as 8-bit PNG at their own scale, and carries on past a bad input; flip TTA averages the image's and
its mirror's predictions.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.engine.handlers import atomic_torch_save
from pipeline.errors import InputError
from pipeline.io.images2d import ImageInfo, load_image_2d, save_image_2d
from pipeline.xray.data import MODEL_CARD_NAME, IntensityWindow, load_records
from pipeline.xray.inference import DEPredictor, find_inputs, output_format, predict_unit_image

WINDOWS = {"image": IntensityWindow(0.0, 4.0), "target": IntensityWindow(0.0, 2.0)}


class Recorder(torch.nn.Module):
    """Identity that records what it was called with and in which state."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[dict] = []

    def forward(self, x):
        self.calls.append({"input": x.clone(), "training": self.training, "grad": torch.is_grad_enabled()})
        return x


class PlusMinus(torch.nn.Module):
    """Two output channels: ``gain * x`` and ``-gain * x`` (``gain`` is a weight, so loading it matters)."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(gain))

    def forward(self, x):
        return torch.cat([self.gain * x, -self.gain * x], dim=1)


def ramp_image(h: int = 13, w: int = 21) -> np.ndarray:
    rows, cols = np.mgrid[:h, :w].astype(np.float32)
    return (0.15 * rows + 0.05 * cols)[None]  # (1, H, W), values in [0, 2.8]


# ------------------------------------------------------------------------------------------------- predict_unit_image


def test_pads_with_edge_values_to_the_divisor_and_crops_back():
    image = torch.rand(1, 13, 21, generator=torch.Generator().manual_seed(0)) * 2 - 1
    generator = Recorder().train()
    out = predict_unit_image(generator, image, divisor=8)
    (call,) = generator.calls
    seen = call["input"]
    assert seen.shape == (1, 1, 16, 24)
    torch.testing.assert_close(seen[0, :, :13, :21], image)
    torch.testing.assert_close(seen[0, 0, 13:, :21], image[0, 12:13, :].expand(3, 21))  # last row repeated
    torch.testing.assert_close(seen[0, 0, :13, 21:], image[0, :, 20:21].expand(13, 3))  # last column repeated
    torch.testing.assert_close(seen[0, 0, 13:, 21:], image[0, 12, 20].expand(3, 3))
    assert out.shape == (1, 13, 21) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, image)  # identity in, identity out
    assert call["training"] is False and call["grad"] is False
    assert generator.training  # the caller's mode is restored


def test_no_padding_when_already_divisible_and_eval_mode_is_kept():
    image = torch.linspace(-1, 1, 2 * 16 * 8).reshape(2, 16, 8)  # two condition channels
    generator = Recorder().eval()
    out = predict_unit_image(generator, image.numpy(), divisor=8)
    assert generator.calls[0]["input"].shape == (1, 2, 16, 8)
    torch.testing.assert_close(out, image)
    assert not generator.training


def test_output_channels_come_from_the_generator():
    image = torch.full((1, 5, 7), 0.25)
    out = predict_unit_image(PlusMinus(), image, divisor=4)
    assert out.shape == (2, 5, 7)
    torch.testing.assert_close(out[0], torch.full((5, 7), 0.25))
    torch.testing.assert_close(out[1], torch.full((5, 7), -0.25))


def test_mode_is_restored_when_the_generator_fails():
    class Broken(Recorder):
        def forward(self, x):
            raise RuntimeError("boom")

    generator = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        predict_unit_image(generator, torch.zeros(1, 4, 4), divisor=4)
    assert generator.training


# ---------------------------------------------------------------------------------------------------- find_inputs


def test_find_inputs_from_a_plain_folder(tmp_path):
    save_image_2d(np.ones((4, 5)), tmp_path / "CXR002_p001.nii.gz")
    save_image_2d(np.ones((4, 5)), tmp_path / "CXR001_p003.png", png_scale=0.01)
    save_image_2d(np.ones((4, 5)), tmp_path / "single.nii")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    records = find_inputs(tmp_path, image_key="se")
    assert records == [
        {"subject_id": "CXR001", "image_id": "CXR001_p003", "se": str(tmp_path / "CXR001_p003.png")},
        {"subject_id": "CXR002", "image_id": "CXR002_p001", "se": str(tmp_path / "CXR002_p001.nii.gz")},
        {"subject_id": "single", "image_id": "single", "se": str(tmp_path / "single.nii")},
    ]


def test_find_inputs_prefers_the_key_sub_folder(tmp_path):
    save_image_2d(np.ones((4, 5)), tmp_path / "se" / "A_p000.nii.gz")
    save_image_2d(np.ones((4, 5)), tmp_path / "de_soft" / "A_p000.nii.gz")
    save_image_2d(np.ones((4, 5)), tmp_path / "stray.nii.gz")
    records = find_inputs(tmp_path, image_key="se")
    assert records == [{"subject_id": "A", "image_id": "A_p000", "se": str(tmp_path / "se" / "A_p000.nii.gz")}]


def test_find_inputs_from_a_manifest_with_splits(tmp_path):
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        save_image_2d(np.ones((4, 5)), tmp_path / "images" / name)
    pd.DataFrame({"subject_id": ["S1", "S1", "S2"], "projection_id": ["S1_p0", "S1_p1", "S2_p0"],
                  "se": ["images/a.nii.gz", "images/b.nii.gz", "images/c.nii.gz"],
                  "split": ["test", "test", "train"]}).to_csv(tmp_path / "manifest.csv", index=False)
    for source in (tmp_path / "manifest.csv", tmp_path):  # the CSV, or the folder holding it
        records = find_inputs(source, image_key="se", split="test")
        assert [(r["subject_id"], r["image_id"]) for r in records] == [("S1", "S1_p0"), ("S1", "S1_p1")]
        assert records[1]["se"] == str(tmp_path / "images" / "b.nii.gz")
    assert len(find_inputs(tmp_path, image_key="se")) == 3


def test_find_inputs_errors(tmp_path):
    with pytest.raises(InputError, match="neither a manifest CSV nor a folder"):
        find_inputs(tmp_path / "missing", image_key="se")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"no images \(PNG, JPEG or NIfTI\); found only .md files"):
        find_inputs(tmp_path / "empty", image_key="se")


# ---------------------------------------------------------------------------------------------------- DEPredictor


def test_predict_image_maps_network_units_back_to_target_units():
    image = ramp_image()
    predictor = DEPredictor(generator=PlusMinus(), divisor=8, windows=WINDOWS)
    out = predictor.predict_image(image)
    assert out.shape == (2, 13, 21) and out.dtype == np.float32
    # channel 0: unit u = image / 2 - 1 passes through, target [0, 2] -> value = u + 1 = image / 2
    np.testing.assert_allclose(out[0], image[0] / 2.0, atol=1e-5)
    # channel 1: -u, i.e. value = -u + 1 = 2 - image / 2
    np.testing.assert_allclose(out[1], 2.0 - image[0] / 2.0, atol=1e-5)


def test_predict_image_checks_windows_and_shape():
    with pytest.raises(RuntimeError, match="load_weights"):
        DEPredictor(generator=PlusMinus(), divisor=8).predict_image(ramp_image())
    predictor = DEPredictor(generator=PlusMinus(), divisor=8, windows=WINDOWS)
    for bad in (ramp_image()[0], np.concatenate([ramp_image()] * 2)):
        with pytest.raises(ValueError, match=r"\(1, H, W\)"):
            predictor.predict_image(bad)


class ColumnRamp(torch.nn.Module):
    """One channel ``x + 0.1 * column``: not mirror-symmetric, so flip TTA changes the prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + 0.1 * torch.arange(x.shape[-1], dtype=x.dtype)


def test_tta_averages_the_image_and_its_mirror():
    image = ramp_image()
    plain = DEPredictor(generator=ColumnRamp(), target_keys=["de_soft"], divisor=8, windows=WINDOWS)
    tta = DEPredictor(generator=ColumnRamp(), target_keys=["de_soft"], divisor=8, windows=WINDOWS, tta=True)
    columns = 0.1 * np.arange(image.shape[-1], dtype=np.float32)
    # unit u = image / 2 - 1; plain: u + ramp; mirrored and flipped back: u + reversed ramp; target [0, 2]: value = unit + 1
    np.testing.assert_allclose(plain.predict_image(image)[0], image[0] / 2 + columns, atol=1e-5)
    np.testing.assert_allclose(tta.predict_image(image)[0], image[0] / 2 + (columns + columns[::-1]) / 2, atol=1e-5)
    symmetric = DEPredictor(generator=PlusMinus(), divisor=8, windows=WINDOWS, tta="true")
    np.testing.assert_allclose(symmetric.predict_image(image), DEPredictor(
        generator=PlusMinus(), divisor=8, windows=WINDOWS).predict_image(image), atol=1e-6)


def write_model(folder, *, gain: float, image_key: str = "se", target_keys=("de_soft", "de_bone"), split=None):
    models = folder / "models"
    atomic_torch_save((PlusMinus(gain) if len(target_keys) == 2 else Gain(gain)).state_dict(), models / "model.pt")
    card = {"image_key": image_key, "target_keys": list(target_keys),
            "windows": {k: w.as_list() for k, w in (WINDOWS if split is None else UNIT_WINDOWS).items()},
            **({"split": split} if split else {})}
    (models / MODEL_CARD_NAME).write_text(json.dumps(card), encoding="utf-8")
    return models / "model.pt"


def test_load_weights_reads_the_generator_and_the_model_card(tmp_path):
    checkpoint = write_model(tmp_path, gain=0.5)
    predictor = DEPredictor(generator=PlusMinus(1.0), divisor=8).load_weights(checkpoint)
    assert predictor.windows == WINDOWS
    image = ramp_image()
    out = predictor.predict_image(image)
    unit = image[0] / 2.0 - 1.0  # image window [0, 4]
    np.testing.assert_allclose(out[0], 0.5 * unit + 1.0, atol=1e-5)  # gain 0.5 loaded, target window [0, 2]
    # a training checkpoint in checkpoints/ finds the card in the run's models/ folder
    state = {"generator": PlusMinus(0.25).state_dict(), "discriminator": {}}
    latest = atomic_torch_save(state, tmp_path / "checkpoints" / "latest.pt")
    out = DEPredictor(generator=PlusMinus(1.0), divisor=8).load_weights(latest).predict_image(image)
    np.testing.assert_allclose(out[0], 0.25 * unit + 1.0, atol=1e-5)


def test_load_weights_refuses_a_model_for_other_keys(tmp_path):
    checkpoint = write_model(tmp_path, gain=1.0, target_keys=("de_bone", "de_soft"))
    with pytest.raises(ValueError, match=r"maps se -> \['de_bone', 'de_soft'\]"):
        DEPredictor(generator=PlusMinus(), divisor=8).load_weights(checkpoint)


def test_predict_inputs_writes_each_target_and_a_table(tmp_path):
    inputs = tmp_path / "in"
    images = {"P1_p000": ramp_image(), "P2_p000": ramp_image(9, 6) + 0.5}
    for name, image in images.items():
        save_image_2d(image, inputs / "se" / f"{name}.nii.gz", pixel_spacing_mm=(0.4, 0.6))
    predictor = DEPredictor(generator=PlusMinus(), divisor=8, windows=WINDOWS, png_scale=0.001)
    out = tmp_path / "out"
    table_path = predictor.predict_inputs(inputs, output_dir=out, formats=("nii.gz", "png"))
    table = pd.read_csv(table_path)
    assert table["image_id"].tolist() == ["P1_p000", "P2_p000"]
    assert table["de_soft"].tolist() == ["de_soft/P1_p000.nii.gz", "de_soft/P2_p000.nii.gz"]
    assert table["de_bone_png"].tolist() == ["de_bone/P1_p000.png", "de_bone/P2_p000.png"]
    for name, image in images.items():
        soft = load_image_2d(out / "de_soft" / f"{name}.nii.gz")
        bone = load_image_2d(out / "de_bone" / f"{name}.nii.gz")
        np.testing.assert_allclose(soft, image / 2.0, atol=1e-5)
        np.testing.assert_allclose(bone, 2.0 - image / 2.0, atol=1e-5)
        assert nib.load(out / "de_soft" / f"{name}.nii.gz").header.get_zooms()[:2] == pytest.approx((0.4, 0.6))
        with Image.open(out / "de_bone" / f"{name}.png") as png:
            counts = np.asarray(png).astype(np.float64)
        np.testing.assert_allclose(counts * 0.001, bone[0], atol=0.0005 + 1e-6)  # 16-bit, 0.001 per count
    before = (out / "de_soft" / "P1_p000.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="output file"):
        DEPredictor(generator=PlusMinus(0.5), divisor=8, windows=WINDOWS).predict_inputs(inputs, output_dir=out)
    assert (out / "de_soft" / "P1_p000.nii.gz").read_bytes() == before
    with pytest.raises(ValueError, match="png_scale"):
        DEPredictor(generator=PlusMinus(), divisor=8, windows=WINDOWS).predict_inputs(
            inputs, output_dir=tmp_path / "other", formats=("png",))


# ------------------------------------------------------------------------------------- 2-D image pairs (PNG / JPEG)


class Gain(torch.nn.Module):
    """One output channel, ``gain * x``: with equal windows an identity, so outputs can be compared exactly."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(gain))

    def forward(self, x):
        return self.gain * x


UNIT_WINDOWS = {"image": IntensityWindow(0.0, 1.0), "target": IntensityWindow(0.0, 1.0)}


def grey_counts(seed: int, shape=(12, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_output_format_follows_the_input():
    png8, png16 = ImageInfo("png", ".png", (4, 4), 8, 3), ImageInfo("png", ".png", (4, 4), 16, 1)
    jpeg, nifti = ImageInfo("jpeg", ".jpeg", (4, 4), 8, 3), ImageInfo("nifti", ".nii", (4, 4), None, 1)
    assert output_format("input", png8, png_scale=None) == (".png", 8)
    assert output_format("input", png16, png_scale=None) == (".png", 16)
    assert output_format("input", jpeg, png_scale=None) == (".png", 8)  # lossless, not a second JPEG
    assert output_format("input", nifti, png_scale=None) == (".nii", None)
    assert output_format("png", png8, png_scale=None) == (".png", 8)
    assert output_format("jpg", jpeg, png_scale=None) == (".jpg", 8)
    assert output_format("nii.gz", jpeg, png_scale=None) == (".nii.gz", None)
    assert output_format("png", nifti, png_scale=0.001) == (".png", 16)
    with pytest.raises(InputError, match="png for NIfTI input needs --png_scale"):
        output_format("png", nifti, png_scale=None)
    with pytest.raises(InputError, match="jpg holds 8 bits; the input is 16-bit"):
        output_format("jpg", png16, png_scale=None)


def test_png_and_jpeg_inputs_give_8bit_png_at_the_input_scale(tmp_path):
    """8-bit in, 8-bit out at the same scale (an identity model writes back the input's counts), whatever
    the colour model; JPEG in gives a lossless PNG by default; png, jpg and NIfTI on request."""
    inputs = {"A_p000": grey_counts(0), "B_p000": grey_counts(1), "C_p000": grey_counts(2)}
    folder = tmp_path / "in" / "mr"
    folder.mkdir(parents=True)
    Image.fromarray(inputs["A_p000"]).save(folder / "A_p000.png")
    Image.fromarray(np.stack([inputs["B_p000"]] * 3, -1)).save(folder / "B_p000.png")
    Image.fromarray(np.stack([inputs["C_p000"]] * 3, -1)).save(folder / "C_p000.jpg", quality=90)
    predictor = DEPredictor(generator=Gain(), image_key="mr", target_keys=["ct"], divisor=4, windows=UNIT_WINDOWS)
    out = tmp_path / "out"
    table = pd.read_csv(predictor.predict_inputs(tmp_path / "in", output_dir=out))
    assert table["ct"].tolist() == ["ct/A_p000.png", "ct/B_p000.png", "ct/C_p000.png"]
    for name, counts in inputs.items():
        with Image.open(out / "ct" / f"{name}.png") as png:
            assert png.mode == "L"
            written = np.asarray(png)
        expected = counts if name != "C_p000" else np.asarray(Image.open(folder / "C_p000.jpg").convert("L"))
        np.testing.assert_array_equal(written, expected)
    # the case: --formats "['png']" on 8-bit input, no png_scale
    table = pd.read_csv(predictor.predict_inputs(folder, output_dir=tmp_path / "png", formats=["png", "jpg", "nii.gz"]))
    assert table.columns.tolist() == ["subject_id", "image_id", "input", "ct", "ct_jpg", "ct_nii_gz"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "ct" / "A_p000.png")), inputs["A_p000"])
    np.testing.assert_allclose(load_image_2d(tmp_path / "png" / "ct" / "A_p000.nii.gz")[0], inputs["A_p000"] / 255.0,
                               atol=1e-6)
    assert np.abs(load_image_2d(tmp_path / "png" / "ct" / "A_p000.jpg", png_scale=1.0)[0] - inputs["A_p000"]).max() > 0
    wide = np.random.default_rng(5).integers(0, 65536, (12, 20)).astype(np.uint16)  # 16-bit in, 16-bit out
    Image.fromarray(wide).save(tmp_path / "D_p000.png")
    predictor.predict_inputs(tmp_path / "D_p000.png", output_dir=tmp_path / "16", split="test")  # one file: no split
    with Image.open(tmp_path / "16" / "ct" / "D_p000.png") as png:
        assert png.mode.startswith("I;16")
        np.testing.assert_array_equal(np.asarray(png), wide)


def test_a_bad_input_does_not_cost_the_good_ones(tmp_path):
    folder = tmp_path / "mr"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(grey_counts(i)).save(folder / f"S{i}_p000.png")
    colour = np.stack([grey_counts(9)] * 3, -1)
    colour[..., 0] = 255  # a red-tinted picture, not a greyscale scan
    Image.fromarray(colour).save(folder / "S1_p000.png")
    predictor = DEPredictor(generator=Gain(), image_key="mr", target_keys=["ct"], divisor=4, windows=UNIT_WINDOWS)
    with pytest.raises(InputError, match=r"^1 of 3 image\(s\) failed, the other 2 predictions were written: "
                                         r"S1: .*S1_p000.png: colour image"):
        predictor.predict_inputs(folder, output_dir=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "ct").iterdir()) == ["S0_p000.png", "S2_p000.png"]
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["image_id"].tolist() == ["S0_p000", "S2_p000"]


def pair_folder(root, n_subjects: int = 10, slices: int = 2):
    """``root/{mr,ct}/S<i>_p<k>.png``: tiny 8-bit pairs of ``n_subjects`` subjects."""
    for key in ("mr", "ct"):
        (root / key).mkdir(parents=True, exist_ok=True)
        for i in range(n_subjects):
            for k in range(slices):
                Image.fromarray(grey_counts(100 * i + k, (8, 8))).save(root / key / f"S{i}_p{k:03d}.png")
    return root


def test_split_selects_the_subjects_training_used(tmp_path):
    """A folder has no split column: inference and evaluation split it as training does (the one split
    function, same settings), from the folder, its key sub-folder, or the key folder itself."""
    root = pair_folder(tmp_path / "pairs")
    for split in ("train", "val", "test"):
        trained = [r["image_id"] for r in load_records(root, keys=["mr", "ct"], split=split, seed=4)]
        assert trained, split
        for source in (root, root / "mr"):
            assert [r["image_id"] for r in find_inputs(source, image_key="mr", split=split, seed=4)] == trained
    assert len(find_inputs(root, image_key="mr", split="all")) == 20 == len(find_inputs(root, image_key="mr"))
    assert len(find_inputs(root, image_key="mr", split="null")) == 20  # what the CLI hands over for --split null
    with pytest.raises(InputError, match="no images in split 'tset'"):
        find_inputs(root, image_key="mr", split="tset")


def test_split_settings_come_from_the_model_card(tmp_path):
    root = pair_folder(tmp_path / "pairs")
    checkpoint = write_model(tmp_path / "run", gain=1.0, image_key="mr", target_keys=["ct"],
                             split={"val_fraction": 0.2, "test_fraction": 0.3, "seed": 7})
    predictor = DEPredictor(generator=Gain(), image_key="mr", target_keys=["ct"], divisor=4).load_weights(checkpoint)
    table = pd.read_csv(predictor.predict_inputs(root, output_dir=tmp_path / "out", split="test"))
    expected = load_records(root, keys=["mr", "ct"], split="test", val_fraction=0.2, test_fraction=0.3, seed=7)
    assert table["image_id"].tolist() == [r["image_id"] for r in expected] and len(expected) == 6
    with pytest.raises(InputError, match=r"--seed 0: the model was trained with seed 7 \(model card\)"):
        predictor.predict_inputs(root, output_dir=tmp_path / "other", split="test", seed=0)
