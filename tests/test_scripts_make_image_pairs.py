"""scripts/make_image_pairs.py: 2-D MR/CT pairs cut from 3-D subjects, as the Kaggle brain sets store them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputError
from scripts.make_image_pairs import axial_slices, main


def test_axial_slices_are_shown_anterior_up_and_the_patients_right_on_the_left():
    """An LPS-stored volume (voxel i runs to the patient's right, j to posterior): the voxel most
    anterior and most to the right must land in the top-left corner of its slice (radiological view)."""
    volume = np.zeros((4, 5, 3), np.float32)
    volume[3, 0, 1] = 1.0  # largest i = most right; j = 0 = most anterior
    slices = axial_slices(volume, np.diag([-2.0, -2.0, 3.0, 1.0]))
    assert slices.shape == (3, 5, 4)  # (Z, rows = anterior-posterior, columns = right-left)
    assert slices[1, 0, 0] == 1.0 and slices.sum() == 1.0


def test_pairs_from_tiny_phantoms(tmp_path):
    from pipeline.data.phantoms.head import write_phantom_dataset

    write_phantom_dataset(tmp_path / "phantoms", n=2, size="tiny")
    out = tmp_path / "pairs"
    args = ["--root", str(tmp_path / "phantoms"), "--out", str(out), "--slices", "3", "--size", "48", "--format", "jpg",
            "--rgb", "--ct-window", "-1000", "2000"]
    assert main(args) == 0
    names = sorted(p.name for p in (out / "mr").iterdir())
    assert names == sorted(p.name for p in (out / "ct").iterdir()) == [f"1BP00{i}_p00{k}.jpg" for i in (1, 2) for k in range(3)]
    with Image.open(out / "ct" / "1BP001_p001.jpg") as image:
        assert image.mode == "RGB" and image.size == (48, 48)
        rgb = np.asarray(image).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2 and np.abs(rgb[..., 0] - rgb[..., 2]).max() <= 2
    ct = rgb.mean(axis=-1)
    assert ct[0, 0] < 3  # air (-1000 HU) -> 0
    head = ct > (-500 + 1000) / 3000 * 255
    # brain (grey/white matter, 25-40 HU) dominates a slice through the head: count = (HU + 1000) / 3000 * 255
    assert np.median(ct[head]) == pytest.approx(1032 / 3000 * 255, abs=8)
    description = json.loads((out / "pairs.json").read_text())
    assert description["ct_window_hu"] == [-1000, 2000] and description["pairs"] == 6
    with pytest.raises(InputError, match="already in mr/ and ct/"):
        main(args)
    assert main([*args, "--overwrite"]) == 0
