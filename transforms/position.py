"""Where in the body a voxel lies: position channels for a 2D/2.5D network.

A 2.5D slab shows a few millimetres of the head. Whether a dark region in it is an air cell, a sinus or
bone depends on where it is (skull base, face, vertex), and an axial slab alone does not say at which level
it was cut. Three extra input channels tell the network: each pixel's position inside the bounding box of
the body mask (the coarse 3D context of issue 19), per RAS axis of the network grid,

- ``|x|``: distance from the box's left-right centre, 0 at the midline, 1 at the box's sides (the head's
  mirror symmetry: a left-right flip of the MR leaves the channel valid, so flip augmentation and flip TTA
  need no special case);
- ``y``: anterior-posterior, -1 at the box's posterior face, +1 at its anterior face;
- ``z``: inferior-superior, -1 at the box's inferior face, +1 at its superior face;

measured from voxel centres, in units of the box's half-extent (outside the box the values go past 1). The
box is :func:`transforms.crop.mask_bounding_box` of the body mask on the network grid, in training (the
mask file) and at inference (the mask file, or the mask derived from the MR), so a subject's size and its
position in the field of view do not matter, only the position within the body.

The channels follow the slab's MR channels: network input ``(N, k + 3, P, P)`` in 2.5D.
"""

from __future__ import annotations

import torch

__all__ = ["POSITION_CHANNELS", "box_coordinates", "position_volume", "with_position_channels"]

#: Input channels the position adds.
POSITION_CHANNELS = 3


def box_coordinates(positions: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``positions`` ``(..., 3, *S)`` voxel indices (float allowed: interpolated positions) on the RAS grid,
    ``box`` ``(..., 3, 2)`` ``[start, stop)`` voxel bounds per axis (broadcast over ``S``) -> ``(..., 3, *S)``
    float32 channels ``(|x|, y, z)`` (see the module docstring)."""
    channel_dim = box.ndim - 2
    spatial = positions.ndim - box.ndim + 1  # the trailing dimensions S
    if positions.shape[channel_dim] != 3 or box.shape[-2:] != (3, 2):
        raise ValueError(f"expected positions (..., 3, *S) and a box (..., 3, 2), got {tuple(positions.shape)} "
                         f"and {tuple(box.shape)}")
    low, high = box[..., 0].to(torch.float32), box[..., 1].to(torch.float32)
    view = (*low.shape, *([1] * spatial))
    centre = ((low + high) / 2).view(view)
    half = ((high - low).clamp(min=1) / 2).view(view)
    # voxel i covers [i, i + 1): its centre is i + 0.5
    coordinates = (positions.to(torch.float32) + 0.5 - centre) / half
    x, rest = coordinates.split([1, 2], dim=channel_dim)
    return torch.cat([x.abs(), rest], dim=channel_dim)


def position_volume(shape: tuple[int, int, int], box: torch.Tensor, *,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """``(3, X, Y, Z)`` float32 position channels of every voxel of a volume of ``shape`` for the body box
    ``box`` ``(3, 2)``."""
    axes = [torch.arange(int(n), device=device, dtype=torch.float32) for n in shape]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return box_coordinates(positions, torch.as_tensor(box, device=device))


def with_position_channels(mr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MR ``(1, X, Y, Z)`` and its body mask ``(1, X, Y, Z)`` on the network grid -> ``(4, X, Y, Z)``: the MR
    and its :func:`position_volume` (box of the mask's voxels > 0; the whole volume when it is empty), on the
    MR's device. Permutations and flips of the result (:mod:`transforms.plane`, flip TTA) move the position
    with its voxels."""
    from transforms.crop import mask_bounding_box  # transforms.crop imports MONAI; keep this module light

    mr = torch.as_tensor(mr).as_subclass(torch.Tensor)
    if mr.ndim != 4 or mr.shape[0] != 1:
        raise ValueError(f"expected an MR of shape (1, X, Y, Z), got {tuple(mr.shape)}")
    if tuple(mask.shape[-3:]) != tuple(mr.shape[-3:]):
        raise ValueError(f"mask {tuple(mask.shape)} and MR {tuple(mr.shape)} differ in shape")
    box = torch.as_tensor(mask_bounding_box(mask), device=mr.device)
    position = position_volume(tuple(mr.shape[1:]), box, device=mr.device).to(mr.dtype)
    return torch.cat([mr, position])
