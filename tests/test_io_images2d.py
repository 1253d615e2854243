"""Paired 2-D images (pipeline/io/images2d.py): PNG 8/16-bit and NIfTI reading, writing, pairing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.errors import InputError
from pipeline.io.images2d import (
    LoadPairedImaged,
    find_paired_images,
    load_image_2d,
    read_paired_manifest,
    save_image_2d,
)

H, W = 6, 9  # non-square so a transpose would show


def _ramp() -> np.ndarray:
    return np.arange(H * W, dtype=np.float32).reshape(H, W) / 10.0


def test_png_8bit_is_scaled_to_unit_range(tmp_path):
    counts = (np.arange(H * W) * 4).reshape(H, W).astype(np.uint8)
    Image.fromarray(counts).save(tmp_path / "a.png")
    image = load_image_2d(tmp_path / "a.png")
    assert image.shape == (1, H, W) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], counts / 255.0, rtol=1e-6)
    np.testing.assert_allclose(load_image_2d(tmp_path / "a.png", png_scale=1.0)[0], counts)


def test_png_16bit_round_trip_with_scale(tmp_path):
    values = _ramp()
    save_image_2d(values, tmp_path / "b.png", png_scale=2e-4)
    with Image.open(tmp_path / "b.png") as img:
        assert img.mode.startswith("I;16") and img.size == (W, H)
    image = load_image_2d(tmp_path / "b.png", png_scale=2e-4)
    assert image.shape == (1, H, W)
    np.testing.assert_allclose(image[0], values, atol=1e-4 + 1e-6)
    unit = load_image_2d(tmp_path / "b.png")  # default: full 16-bit range -> [0, 1]
    assert float(unit.max()) == pytest.approx(values.max() / 2e-4 / 65535.0, rel=1e-4)


def test_nifti_round_trip_and_layouts(tmp_path):
    values = _ramp()
    save_image_2d(values[None], tmp_path / "c.nii.gz", pixel_spacing_mm=(0.5, 0.7))
    img = nib.load(tmp_path / "c.nii.gz")
    assert img.shape == (H, W) and img.header.get_zooms()[:2] == pytest.approx((0.5, 0.7))
    np.testing.assert_array_equal(load_image_2d(tmp_path / "c.nii.gz")[0], values)
    nib.save(nib.Nifti1Image(values[None], np.eye(4)), tmp_path / "d.nii")  # (1, H, W)
    nib.save(nib.Nifti1Image(values[..., None], np.eye(4)), tmp_path / "e.nii.gz")  # (H, W, 1)
    for name in ("d.nii", "e.nii.gz"):
        np.testing.assert_array_equal(load_image_2d(tmp_path / name)[0], values)


def test_bad_images_and_overwrite_are_refused(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="greyscale"):
        load_image_2d(tmp_path / "rgb.png")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(ValueError, match="2-D"):
        load_image_2d(tmp_path / "vol.nii.gz")
    with pytest.raises(ValueError, match="NaN"):
        save_image_2d(np.full((H, W), np.nan), tmp_path / "nan.nii.gz")
    save_image_2d(_ramp(), tmp_path / "x.nii.gz")
    with pytest.raises(FileExistsError):
        save_image_2d(_ramp() + 1, tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(load_image_2d(tmp_path / "x.nii.gz")[0], _ramp())
    save_image_2d(_ramp() + 1, tmp_path / "x.nii.gz", overwrite=True)
    np.testing.assert_array_equal(load_image_2d(tmp_path / "x.nii.gz")[0], _ramp() + 1)
    with pytest.raises(ValueError, match="png_scale"):
        save_image_2d(_ramp(), tmp_path / "y.png")


def _write_pair_folder(root, names=("S1_p000", "S2_p000")):
    for i, name in enumerate(names):
        save_image_2d(_ramp() + i, root / "se" / f"{name}.png", png_scale=1e-3)
        save_image_2d(_ramp() * 2 + i, root / "de_soft" / f"{name}.nii.gz")
        save_image_2d(_ramp() * 3 + i, root / "de_bone" / f"{name}.nii.gz")


def test_find_paired_images_matches_names_across_formats(tmp_path):
    _write_pair_folder(tmp_path)
    records = find_paired_images(tmp_path)
    assert [r["image_id"] for r in records] == ["S1_p000", "S2_p000"]
    assert records[0]["subject_id"] == "S1"
    data = LoadPairedImaged(["se", "de_soft", "de_bone"], png_scale={"se": 1e-3})(records[1])
    for key, factor in (("se", 1), ("de_soft", 2), ("de_bone", 3)):
        assert isinstance(data[key], torch.Tensor) and data[key].shape == (1, H, W)
        assert data[key].dtype == torch.float32
        np.testing.assert_allclose(data[key][0].numpy(), _ramp() * factor + 1, atol=1e-3)
    (tmp_path / "de_bone" / "S2_p000.nii.gz").unlink()
    with pytest.raises(ValueError, match="partner"):
        find_paired_images(tmp_path)


def test_read_paired_manifest_resolves_paths_and_names_subject(tmp_path):
    _write_pair_folder(tmp_path)
    rows = [{"subject_id": s, "projection_id": f"{s}_p000", "se": f"se/{s}_p000.png",
             "de_soft": f"de_soft/{s}_p000.nii.gz", "de_bone": f"de_bone/{s}_p000.nii.gz", "split": sp}
            for s, sp in (("S1", "train"), ("S2", "val"))]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    records = read_paired_manifest(tmp_path / "manifest.csv", split="val")
    assert len(records) == 1 and records[0]["subject_id"] == "S2" and records[0]["split"] == "val"
    assert records[0]["de_soft"] == str(tmp_path / "de_soft" / "S2_p000.nii.gz")
    (tmp_path / "se" / "S1_p000.png").unlink()
    with pytest.raises(InputError, match="^S1: se file"):
        read_paired_manifest(tmp_path / "manifest.csv")


def test_loader_rejects_pairs_of_different_shapes(tmp_path):
    save_image_2d(np.zeros((4, 4)), tmp_path / "a.nii.gz")
    save_image_2d(np.zeros((4, 5)), tmp_path / "b.nii.gz")
    with pytest.raises(InputError, match="^P7: paired images differ"):
        LoadPairedImaged(["se", "de_soft"])({"subject_id": "P7", "se": tmp_path / "a.nii.gz",
                                             "de_soft": tmp_path / "b.nii.gz"})
