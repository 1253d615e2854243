"""Position channels (transforms.position): each voxel's place in the body mask's box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.position import POSITION_CHANNELS, box_coordinates, position_volume, with_position_channels


def test_position_is_measured_from_voxel_centres_in_half_extents_of_the_box():
    box = torch.tensor([[2, 6], [0, 4], [1, 3]])  # [start, stop) per RAS axis
    volume = position_volume((8, 4, 4), box)
    assert volume.shape == (3, 8, 4, 4) and volume.dtype == torch.float32
    # x: centre 4, half-extent 2, mirrored about the centre: |(i + 0.5 - 4) / 2|
    np.testing.assert_allclose(volume[0, :, 0, 0], [1.75, 1.25, 0.75, 0.25, 0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(volume[1, 0, :, 0], [-0.75, -0.25, 0.25, 0.75])  # anterior-posterior, signed
    np.testing.assert_allclose(volume[2, 0, 0, :], [-1.5, -0.5, 0.5, 1.5])  # a two-voxel box: its voxels at +-0.5


def test_batched_positions_take_one_box_each_and_fractional_positions_interpolate():
    boxes = torch.tensor([[[0, 10], [0, 10], [0, 10]], [[0, 4], [0, 4], [0, 4]]])
    positions = torch.full((2, 3, 1, 2), 4.5)  # (N, 3, *S)
    out = box_coordinates(positions, boxes)
    np.testing.assert_allclose(out[0], 0.0)  # the centre of the 10-voxel box
    np.testing.assert_allclose(out[1, 1:], 1.5)  # (4.5 + 0.5 - 2) / 2
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, \*S\)"):
        box_coordinates(torch.zeros(2, 4, 5), boxes)


def test_with_position_channels_stacks_them_after_the_mr_and_an_empty_mask_takes_the_whole_volume():
    mr = torch.rand(1, 6, 5, 4)
    mask = torch.zeros(1, 6, 5, 4)
    mask[0, 1:5, 1:4, 1:3] = 1
    out = with_position_channels(mr, mask)
    assert out.shape == (1 + POSITION_CHANNELS, 6, 5, 4)
    torch.testing.assert_close(out[:1], mr)
    torch.testing.assert_close(out[1:], position_volume((6, 5, 4), torch.tensor([[1, 5], [1, 4], [1, 3]])))
    whole = with_position_channels(mr, torch.zeros(1, 6, 5, 4))
    torch.testing.assert_close(whole[1:], position_volume((6, 5, 4), torch.tensor([[0, 6], [0, 5], [0, 4]])))
    with pytest.raises(ValueError, match="differ in shape"):
        with_position_channels(mr, torch.zeros(1, 6, 5, 3))
