"""2.5D: neighbouring axial slices as channels.

Axial slices are the last spatial axis (Z) after orientation to RAS. A slab of ``k`` (odd) slices
centred on slice z is fed to a 2-D network as ``k`` channels; the network predicts the centre slice.
Channel order for a ``C``-channel volume is channel-major: channel ``c * k + j`` is channel ``c`` at
slice offset ``j - k // 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor


def _check_slab_size(slab_size: int) -> int:
    if int(slab_size) != slab_size or slab_size < 1 or slab_size % 2 == 0:
        raise ValueError(f"slab_size must be a positive odd integer (centred slab), got {slab_size!r}")
    return int(slab_size)


def volume_to_slabs(volume: torch.Tensor, *, slab_size: int) -> torch.Tensor:
    """``(C, X, Y, Z)`` volume -> ``(Z, C * k, X, Y)``: for every slice z its k centred neighbours as channels.

    Slices beyond the volume replicate the border slice, so the output has exactly Z entries.
    The result is a plain tensor (a MetaTensor's 3-D affine does not describe a stack of slabs).
    """
    k = _check_slab_size(slab_size)
    if volume.ndim != 4:
        raise ValueError(f"volume_to_slabs expects (C, X, Y, Z), got shape {tuple(volume.shape)}")
    volume = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
    channels, size_x, size_y, size_z = volume.shape
    offsets = torch.arange(k, device=volume.device) - k // 2
    index = (torch.arange(size_z, device=volume.device)[:, None] + offsets[None]).clamp_(0, size_z - 1)
    slabs = volume[..., index]  # (C, X, Y, Z, k)
    return slabs.permute(3, 0, 4, 1, 2).reshape(size_z, channels * k, size_x, size_y).contiguous()


def slabs_to_volume(slices: torch.Tensor) -> torch.Tensor:
    """Per-slice predictions ``(Z, C, X, Y)`` -> volume ``(C, X, Y, Z)`` (inverse arrangement)."""
    if slices.ndim != 4:
        raise ValueError(f"slabs_to_volume expects (Z, C, X, Y), got shape {tuple(slices.shape)}")
    return slices.permute(1, 2, 3, 0).contiguous()


__all__: Sequence[str] = ["slabs_to_volume", "volume_to_slabs"]
