"""networks.decomposition.BoneSubtractionUNet: the soft channel is the SE input minus the bone channel plus the
U-Net's correction, in physical units; the weights are the plain U-Net's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from networks import BoneSubtractionUNet, Pix2PixUNet

UNET = {"num_downs": 3, "base_channels": 4, "upsample": "resize", "dropout": 0.0}
INPUT, TARGET = (-0.5, 6.0), (-0.6, 6.5)


def _physical(unit: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """Written out here (not the bundle's IntensityWindow): unit -1 -> lo, +1 -> hi."""
    lo, hi = window
    return lo + (unit + 1.0) / 2.0 * (hi - lo)


@pytest.mark.parametrize("soft_channel", [0, 1])
def test_soft_is_se_minus_bone_plus_the_correction(soft_channel: int) -> None:
    torch.manual_seed(0)
    net = BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, soft_channel=soft_channel,
                              bone_channel=1 - soft_channel, **UNET).eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        out, raw = net(x), Pix2PixUNet.forward(net, x)  # raw: the U-Net's own two tanh channels
    bone_unit, correction_unit = raw[:, 1 - soft_channel], raw[:, soft_channel]
    assert torch.equal(out[:, 1 - soft_channel], bone_unit)  # the bone channel is the U-Net's, untouched
    soft = _physical(out[:, soft_channel], TARGET)
    expected = _physical(x[:, 0], INPUT) - _physical(bone_unit, TARGET) + correction_unit * (TARGET[1] - TARGET[0]) / 2
    assert torch.allclose(soft, expected, atol=1e-5)


def test_with_a_detail_scale_only_the_bone_channels_detail_is_subtracted() -> None:
    torch.manual_seed(1)
    sigma = 2.0
    net = BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, bone_detail_sigma_px=sigma, **UNET).eval()
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        out, raw = net(x), Pix2PixUNet.forward(net, x)
    bone = _physical(raw[0, 1], TARGET).double().numpy()
    # reference: scipy's Gaussian (edges replicated, truncated at 4 sigma), not the code under test's filter
    bone_detail = bone - ndimage.gaussian_filter(bone, sigma, mode="nearest", truncate=4.0)
    expected = (_physical(x[0, 0], INPUT).double().numpy() - bone_detail
                + raw[0, 0].double().numpy() * (TARGET[1] - TARGET[0]) / 2)
    # MONAI's erf-integrated kernel and scipy's sampled one differ by up to ~5e-3 on this untrained network's
    # pixel-scale noise; the whole bone image subtracted instead would be off by its blur (~3 log units)
    assert np.abs(_physical(out[0, 0], TARGET).double().numpy() - expected).max() < 1e-2
    assert torch.equal(out[:, 1], raw[:, 1])


def test_same_weights_as_the_plain_u_net_and_float32_under_autocast() -> None:
    plain = Pix2PixUNet(spatial_dims=2, in_channels=1, out_channels=2, **UNET).eval()
    net = BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, **UNET).eval()
    net.load_state_dict(plain.state_dict())  # same keys and shapes
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x)[:, 1], plain(x)[:, 1])
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the U-Net runs in bfloat16, the subtraction does not
            assert plain(x).dtype == torch.bfloat16 and net(x).dtype == torch.float32


def test_what_it_refuses() -> None:
    with pytest.raises(ValueError, match="2-D with one input"):
        BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, spatial_dims=3, **UNET)
    with pytest.raises(ValueError, match="2-D with one input"):
        BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, out_channels=1, **UNET)
    with pytest.raises(ValueError, match="0 and 1 in some order"):
        BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, soft_channel=0, bone_channel=0, **UNET)
    with pytest.raises(ValueError, match="bone_detail_sigma_px must be > 0"):
        BoneSubtractionUNet(input_window=INPUT, target_window=TARGET, bone_detail_sigma_px=0.0, **UNET)
    with pytest.raises(ValueError, match="lo < hi"):
        BoneSubtractionUNet(input_window=(1.0, 1.0), target_window=TARGET, **UNET)
