"""A U-Net whose soft-tissue output is the single-energy input minus its own bone output (dual-energy X-ray).

Why: with the project's DE normalisation (``docs/xray_physics.md`` section 5) ``DE soft + DE bone = l_H``, the
high-kVp log image, which is the SE image up to the SE image's scatter (the DE pair is scatter-corrected, the
SE image is not). A generator that predicts soft and bone as two free channels must re-draw all of the SE
image's soft-tissue detail (vessels, tumours) in its soft channel and remove the ribs there on its own; this
one predicts the bone image ``b`` and a correction ``r`` and writes ``soft = SE - b + r`` in physical units:
the soft channel keeps the input's detail by construction, and every rib the bone channel finds leaves the
soft channel by construction. ``r`` is free (tanh, up to half the target window): it carries the scatter
difference and whatever else the identity misses; it is not forced to be smooth, because the scatter
difference ``ln(1 + S/P)`` changes sharply where the primary does (the heart's border).

With ``bone_detail_sigma_px`` only the bone channel's detail (its high-pass at that scale: the ribs, not the
spine's and mediastinum's broad load) is subtracted, ``soft = SE - highpass(b) + r``: a rib found in the bone
channel still leaves the soft channel by construction, but a broad bone error (over the spine of an unfamiliar
anatomy) no longer becomes a soft error; ``r`` then carries the broad bone load as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from networks.generators import Pix2PixUNet
from networks.losses import high_pass
from transforms.intensity import unit_to_window, window_to_unit

__all__ = ["BoneSubtractionUNet"]


class BoneSubtractionUNet(Pix2PixUNet):
    """2-D Pix2Pix U-Net, input the SE image, output ``(soft, bone)`` in target units, ``soft = SE - bone + r``.

    Args:
        input_window: ``(lo, hi)`` of the input's intensity window (physical ``[lo, hi]`` <-> unit ``[-1, 1]``).
        target_window: ``(lo, hi)`` of the targets' window (one window for both channels, as the X-ray
            bundle's model card stores it).
        soft_channel, bone_channel: which output channel is which (``target_keys`` order).
        bone_detail_sigma_px: subtract only ``high_pass(bone, sigma)`` (pixels; :func:`networks.losses.high_pass`)
            instead of the whole bone image; None (default): the whole bone image.
        **unet: :class:`Pix2PixUNet` options; ``spatial_dims`` must be 2, ``in_channels`` 1 and
            ``out_channels`` 2.

    Forward: ``(B, 1, H, W)`` SE in input units -> ``(B, 2, H, W)`` in target units: the bone channel is the
    U-Net's tanh output ``b``; the soft channel is ``to_unit(from_unit(x) - from_unit(b)) + r`` with ``r`` the
    U-Net's other tanh output, so it can leave [-1, 1] (the targets' windows are fitted with a margin). The
    state dict is the plain U-Net's: only the meaning of the outputs differs, which the model card records.
    """

    def __init__(self, *, input_window: Sequence[float], target_window: Sequence[float], soft_channel: int = 0,
                 bone_channel: int = 1, bone_detail_sigma_px: float | None = None, **unet) -> None:
        if unet.get("spatial_dims", 2) != 2 or unet.get("in_channels", 1) != 1 or unet.get("out_channels", 2) != 2:
            raise ValueError("BoneSubtractionUNet is 2-D with one input (SE) and two outputs (soft, bone), got "
                             f"spatial_dims={unet.get('spatial_dims', 2)}, in_channels={unet.get('in_channels', 1)}, "
                             f"out_channels={unet.get('out_channels', 2)}")
        if sorted((soft_channel, bone_channel)) != [0, 1]:
            raise ValueError(f"soft_channel and bone_channel must be 0 and 1 in some order, got {soft_channel}, "
                             f"{bone_channel}")
        (in_lo, in_hi), (t_lo, t_hi) = (tuple(float(v) for v in w) for w in (input_window, target_window))
        if bone_detail_sigma_px is not None and not bone_detail_sigma_px > 0:
            raise ValueError(f"bone_detail_sigma_px must be > 0 or None, got {bone_detail_sigma_px}")
        if not (in_hi > in_lo and t_hi > t_lo):
            raise ValueError(f"windows need lo < hi, got input {input_window}, target {target_window}")
        super().__init__(**{**unet, "spatial_dims": 2, "in_channels": 1, "out_channels": 2})
        self.input_window, self.target_window = (in_lo, in_hi), (t_lo, t_hi)
        self.soft_channel, self.bone_channel = soft_channel, bone_channel
        self.bone_detail_sigma_px = bone_detail_sigma_px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B, 2, H, W)``; the subtraction runs in float32 (AMP leaves the U-Net in half)."""
        out = super().forward(x).float()
        se = unit_to_window(x[:, :1].float(), *self.input_window)
        bone_unit = out[:, self.bone_channel:self.bone_channel + 1]
        bone = unit_to_window(bone_unit, *self.target_window)
        if self.bone_detail_sigma_px is not None:
            bone = high_pass(bone, self.bone_detail_sigma_px)
        soft_unit = window_to_unit(se - bone, *self.target_window) + out[:, self.soft_channel:self.soft_channel + 1]
        channels = [None, None]
        channels[self.soft_channel], channels[self.bone_channel] = soft_unit, bone_unit
        return torch.cat(channels, dim=1)
