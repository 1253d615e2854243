"""The compact training cache: int16 HU CT, uint8 mask, the mask's bounding box (the crops cut from it are
tested in tests/test_data_crop_sampler.py)."""

from __future__ import annotations

import numpy as np
import torch

from transforms.crop import CompactVolumesd, MaskBoundingBoxd, mask_bounding_box

SHAPE = (20, 18, 9)


def _subject():
    mr = torch.arange(np.prod(SHAPE), dtype=torch.float32).reshape(1, *SHAPE)  # every voxel unique
    mask = torch.zeros(1, *SHAPE)
    mask[0, 5:15, 4:12, :] = 1
    return {"mr": mr, "ct": mr * 2, "mask": mask}


def test_bounding_box_of_the_mask():
    box = mask_bounding_box(_subject()["mask"])
    np.testing.assert_array_equal(box, [[5, 15], [4, 12], [0, 9]])
    np.testing.assert_array_equal(mask_bounding_box(torch.zeros(1, 3, 4, 5)), [[0, 3], [0, 4], [0, 5]])
    np.testing.assert_array_equal(MaskBoundingBoxd("mask")(_subject())["mask_box"], box)


def test_compact_volumes_are_int16_hu_and_uint8_mask():
    data = {"mr": torch.rand(1, 4, 4, 4), "ct": torch.tensor([-1000.4, 0.6, 3000.5, 20.0]).reshape(1, 4, 1, 1).expand(1, 4, 4, 4),
            "mask": torch.rand(1, 4, 4, 4)}
    out = CompactVolumesd()(data)
    assert out["ct"].dtype == torch.int16 and out["mask"].dtype == torch.uint8 and out["mr"].dtype == torch.float32
    assert out["ct"][0, :, 0, 0].tolist() == [-1000, 1, 3000, 20]  # rounded: 3000.5 -> 3000 (half to even)
    assert set(out["mask"].unique().tolist()) <= {0, 1}
