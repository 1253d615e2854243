"""Paired 2-D images (pipeline/io/images2d.py): PNG 8/16-bit, JPEG, colour read as grey, NIfTI; writing, pairing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.errors import InputError
from pipeline.io.images2d import (
    COLOUR_TOLERANCE,
    ImageInfo,
    LoadPairedImaged,
    check_pair_headers,
    find_images,
    find_paired_images,
    image_info,
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


def _png16(path, array: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written byte by byte (PIL cannot write 16-bit colour): the reference is the PNG
    specification, independent of the reader under test (colour type 2 RGB, 4 grey + alpha, 6 RGBA)."""
    import struct
    import zlib

    h, w = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_colour_scans_are_read_as_grey_at_their_bit_depth(tmp_path):
    counts = (np.arange(H * W) * 4).reshape(H, W).astype(np.uint8)
    grey3 = np.stack([counts] * 3, axis=-1)
    Image.fromarray(grey3).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([grey3, np.full((H, W), 200, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([counts, np.full_like(counts, 255)], -1), mode="LA").save(tmp_path / "la.png")
    Image.fromarray(counts).convert("P").save(tmp_path / "palette.png")
    for name in ("rgb.png", "rgba.png", "la.png", "palette.png"):
        np.testing.assert_allclose(load_image_2d(tmp_path / name)[0], counts / 255.0, rtol=1e-6, err_msg=name)
        assert image_info(tmp_path / name).bits == 8
    wide = (np.arange(H * W) * 1000 + 7).reshape(H, W).astype(np.uint16)  # needs all 16 bits
    _png16(tmp_path / "rgb16.png", np.stack([wide] * 3, -1), 2)
    _png16(tmp_path / "rgba16.png", np.dstack([np.stack([wide] * 3, -1), np.full((H, W), 65535, np.uint16)]), 6)
    for name in ("rgb16.png", "rgba16.png"):
        info = image_info(tmp_path / name)
        assert (info.bits, info.channels, info.shape) == (16, 3, (H, W))
        np.testing.assert_array_equal(load_image_2d(tmp_path / name, png_scale=1.0)[0], wide)
    _png16(tmp_path / "la16.png", np.stack([wide, wide], -1), 4)
    with pytest.raises(InputError, match="la16.png: 16-bit greyscale \\+ alpha"):
        load_image_2d(tmp_path / "la16.png")


def test_jpeg_grey_and_rgb_read_alike(tmp_path):
    rows, cols = np.mgrid[:32, :40]
    counts = (120 + 100 * np.sin(rows / 5.0) * np.cos(cols / 7.0)).astype(np.uint8)
    Image.fromarray(counts).save(tmp_path / "grey.jpg", quality=90)
    Image.fromarray(np.stack([counts] * 3, -1)).save(tmp_path / "colour.JPEG", quality=90)
    grey, colour = load_image_2d(tmp_path / "grey.jpg"), load_image_2d(tmp_path / "colour.JPEG")
    assert grey.shape == (1, 32, 40) and image_info(tmp_path / "colour.JPEG").kind == "jpeg"
    np.testing.assert_allclose(colour, grey, atol=1.5 / 255)
    assert np.abs(grey[0] * 255 - counts).mean() < 2.0  # JPEG is lossy, but close


def test_colour_that_is_not_grey_is_refused_in_one_line(tmp_path):
    tinted = np.full((H, W, 3), 100, np.uint8)
    tinted[2, 3] = (100, 100 + COLOUR_TOLERANCE, 100)  # within the tolerance: grey, the channels' mean
    tinted[4, 5, 2] = 160
    Image.fromarray(tinted).save(tmp_path / "tint.png")
    with pytest.raises(InputError, match=r"^S1: .*tint.png: colour image: .* differ \(by up to 60 counts, at 1 pixels\)"):
        load_image_2d(tmp_path / "tint.png", subject_id="S1")
    tinted[4, 5, 2] = 100
    Image.fromarray(tinted).save(tmp_path / "tint.png")
    assert load_image_2d(tmp_path / "tint.png", png_scale=1.0)[0, 2, 3] == pytest.approx(100 + COLOUR_TOLERANCE / 3)


def test_bad_images_and_overwrite_are_refused(tmp_path):
    Image.fromarray(np.zeros((H, W), np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    with pytest.raises(InputError, match="CMYK images are not supported"):
        load_image_2d(tmp_path / "cmyk.jpg")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "scan.tif").write_bytes(b"")
    for name, problem in (("broken.png", "broken.png: cannot identify"), ("scan.tif", "unsupported file type"),
                          ("gone.png", "no such file")):
        with pytest.raises(InputError, match=f"^P1: .*{problem}"):
            load_image_2d(tmp_path / name, subject_id="P1")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(InputError, match="2-D"):
        load_image_2d(tmp_path / "vol.nii.gz")
    with pytest.raises(ValueError, match="NaN"):
        save_image_2d(np.full((H, W), np.nan), tmp_path / "nan.nii.gz")
    save_image_2d(_ramp(), tmp_path / "x.nii.gz")
    with pytest.raises(FileExistsError):
        save_image_2d(_ramp() + 1, tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(load_image_2d(tmp_path / "x.nii.gz")[0], _ramp())
    save_image_2d(_ramp() + 1, tmp_path / "x.nii.gz", overwrite=True)
    np.testing.assert_array_equal(load_image_2d(tmp_path / "x.nii.gz")[0], _ramp() + 1)
    with pytest.raises(ValueError, match="16-bit .jpg"):
        save_image_2d(_ramp(), tmp_path / "y.jpg")


def test_8bit_writes_invert_the_default_scale(tmp_path):
    counts = (np.arange(H * W) * 4).reshape(H, W).astype(np.uint8)
    save_image_2d(counts / 255.0, tmp_path / "a.png", bits=8)
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), counts)
    save_image_2d(np.array([[-0.2, 0.5, 1.3]]), tmp_path / "clip.png", bits=8)  # out of range saturates
    np.testing.assert_array_equal(load_image_2d(tmp_path / "clip.png", png_scale=1.0)[0], [[0, 128, 255]])
    save_image_2d(counts * 0.5, tmp_path / "scaled.png", bits=8, png_scale=0.5)
    np.testing.assert_array_equal(load_image_2d(tmp_path / "scaled.png", png_scale=0.5)[0], counts * 0.5)
    save_image_2d(counts / 255.0, tmp_path / "a.jpg", bits=8)
    assert image_info(tmp_path / "a.jpg") == ImageInfo("jpeg", ".jpg", (H, W), 8, 1)


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
    rows[1]["de_bone"] = ""  # an empty cell is no file, not the manifest's folder
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(InputError, match=r"^S2: no de_bone for S2_p000 \(empty cell in "):
        read_paired_manifest(tmp_path / "manifest.csv", split="val")


def test_loader_rejects_pairs_of_different_shapes(tmp_path):
    save_image_2d(np.zeros((4, 4)), tmp_path / "a.nii.gz")
    save_image_2d(np.zeros((4, 5)), tmp_path / "b.nii.gz")
    with pytest.raises(InputError, match="^P7: paired images differ"):
        LoadPairedImaged(["se", "de_soft"])({"subject_id": "P7", "se": tmp_path / "a.nii.gz",
                                             "de_soft": tmp_path / "b.nii.gz"})


def test_folders_of_images_are_checked_before_use(tmp_path):
    for key in ("mr", "ct"):
        (tmp_path / key).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / key / "B1_p000.jpg")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / key / "B2_p000.png")
    records = find_paired_images(tmp_path, keys=["mr", "ct"])  # JPEG and PNG, grey and RGB
    assert [(r["subject_id"], Path(r["ct"]).name) for r in records] == [("B1", "B1_p000.jpg"), ("B2", "B2_p000.png")]
    check_pair_headers(records, keys=["mr", "ct"])
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "ct" / "B2_p000.png")
    with pytest.raises(InputError, match=r"^B2: the images of B2_p000 differ in size .* mr 4x4 \(B2_p000.png\), ct 4x5"):
        check_pair_headers(records, keys=["mr", "ct"])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ct" / "B1_p000.png")
    with pytest.raises(InputError, match=r"^B1: two files for image 'B1_p000' .*: B1_p000.jpg and B1_p000.png"):
        find_paired_images(tmp_path, keys=["mr", "ct"])
    (tmp_path / "tif").mkdir()
    (tmp_path / "tif" / "a.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"tif: no images \(PNG, JPEG or NIfTI\); found only .tif files"):
        find_images(tmp_path / "tif")
    with pytest.raises(InputError, match="no sub-folder 'de_soft'"):
        find_paired_images(tmp_path, keys=["mr", "de_soft"])
