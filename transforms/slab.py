"""2.5D: neighbouring axial slices as channels.

Axial slices are the last spatial axis (Z) after orientation to RAS. A slab of ``k`` (odd) slices
centred on slice z is fed to a 2-D network as ``k`` channels; the network predicts the centre slice.
Channel order for a ``C``-channel volume is channel-major: channel ``c * k + j`` is channel ``c`` at
slice offset ``j - k // 2``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform


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


def centre_slice_affine(affine: torch.Tensor, *, slice_index: int) -> torch.Tensor:
    """4x4 voxel-to-world affine of a ``(C, X, Y, Z)`` volume -> 3x3 affine of its slice ``slice_index``.

    The translation moves to that slice, then the Z row and column are dropped, as MONAI's
    ``SqueezeDim(update_meta=True)`` does for a singleton axis: the 2-D affine maps (i, j) to world
    (x, y) of the slice plane and forgets world z.
    """
    affine = torch.as_tensor(affine, dtype=torch.float64).clone()
    affine[:3, 3] += affine[:3, 2] * slice_index
    keep = torch.tensor([0, 1, 3])
    return affine[keep][:, keep]


class SlabToChannelsd(MapTransform):
    """2.5D training patches: ``(C, X, Y, k)`` -> ``(C * k, X, Y)`` for the input, centre slice for targets.

    Args:
        keys_to_channels: keys whose k slices become channels (the MR): ``(1, X, Y, k)`` -> ``(k, X, Y)``.
        centre_keys: keys reduced to their centre slice (CT, mask): ``(C, X, Y, k)`` -> ``(C, X, Y)``.
        slab_size: k (odd); the last dimension of every key must equal it.

    Meta: MetaTensors stay MetaTensors; their affine becomes the 3x3 affine of the centre slice
    (:func:`centre_slice_affine`), the same for the MR channels and the targets. Other meta and
    ``applied_operations`` are kept as a record of where the patch came from, but the transform is
    not invertible: it is for training patches only (inference uses :func:`volume_to_slabs`).
    """

    def __init__(
        self,
        keys_to_channels: KeysCollection,
        *,
        centre_keys: KeysCollection = (),
        slab_size: int,
        allow_missing_keys: bool = False,
    ) -> None:
        channel_keys = [keys_to_channels] if isinstance(keys_to_channels, (str, bytes)) else list(keys_to_channels)
        target_keys = [centre_keys] if isinstance(centre_keys, (str, bytes)) else list(centre_keys)
        super().__init__(channel_keys + target_keys, allow_missing_keys)
        self.channel_keys = set(channel_keys)
        self.slab_size = _check_slab_size(slab_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        k = self.slab_size
        for key in self.key_iterator(d):
            value = d[key] if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key])
            if value.ndim != 4 or value.shape[-1] != k:
                raise ValueError(
                    f"SlabToChannelsd: {key!r} has shape {tuple(value.shape)}; expected (C, X, Y, {k}) "
                    f"with the last dimension equal to slab_size={k} (crop (P, P, {k}) patches first)"
                )
            if key in self.channel_keys:
                out = value.permute(0, 3, 1, 2).reshape(value.shape[0] * k, *value.shape[1:3])
            else:
                out = value[..., k // 2]
            if isinstance(value, MetaTensor):
                out = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, meta=dict(value.meta),
                                 applied_operations=list(value.applied_operations))
                out.affine = centre_slice_affine(value.affine, slice_index=k // 2)
            d[key] = out.contiguous()
        return d


__all__: Sequence[str] = ["volume_to_slabs", "slabs_to_volume", "centre_slice_affine", "SlabToChannelsd"]
