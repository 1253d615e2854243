"""Tests for networks.generators (tiny 2D, 2.5D and 3D networks, base_channels 8)."""

from __future__ import annotations

import pytest
import torch

from networks.generators import Pix2PixUNet, init_weights, upsample_layer


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("options", "input_shape", "output_shape"),
    [
        (dict(spatial_dims=2, in_channels=1, num_downs=5), (2, 1, 32, 32), (2, 1, 32, 32)),
        (dict(spatial_dims=2, in_channels=5, num_downs=5), (2, 5, 32, 32), (2, 1, 32, 32)),  # 2.5D, k = 5
        (dict(spatial_dims=2, in_channels=1, num_downs=4), (1, 1, 32, 48), (1, 1, 32, 48)),  # non-square
        (dict(spatial_dims=3, in_channels=1, num_downs=4), (1, 1, 16, 16, 16), (1, 1, 16, 16, 16)),
    ],
)
@pytest.mark.parametrize("attention", [False, True])
def test_output_shape_and_tanh_range(options, input_shape, output_shape, attention):
    torch.manual_seed(0)
    net = Pix2PixUNet(base_channels=8, attention=attention, **options)
    # a large input drives pre-activations far out: the output must still be inside [-1, 1]
    out = net(100.0 * torch.randn(input_shape))
    assert out.shape == output_shape
    assert out.abs().max() <= 1.0
    assert out.abs().max() > 0.5  # saturating tanh, not a collapsed output


def test_indivisible_size_raises_clear_error():
    net = Pix2PixUNet(base_channels=8, num_downs=5)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*5 = 32.*\(32, 48\)"):
        net(torch.zeros(1, 1, 32, 48))


def test_wrong_channels_and_dimensionality_raise():
    net = Pix2PixUNet(base_channels=8, num_downs=4, in_channels=5)
    with pytest.raises(ValueError, match="5 input channels"):
        net(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="4 dimensions"):
        net(torch.zeros(1, 5, 16, 16, 16))


@pytest.mark.parametrize("bad", [dict(norm="group"), dict(num_downs=1), dict(spatial_dims=1), dict(dropout=1.0)])
def test_invalid_options_raise(bad):
    with pytest.raises(ValueError):
        Pix2PixUNet(base_channels=8, **bad)


def test_dropout_is_random_in_train_and_off_in_eval():
    torch.manual_seed(0)
    net = Pix2PixUNet(base_channels=8, num_downs=5, dropout=0.5)
    x = torch.randn(1, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_dropout_sits_in_the_three_innermost_decoder_blocks_only():
    net = Pix2PixUNet(base_channels=8, num_downs=6, dropout=0.5)
    has_dropout = [any(isinstance(m, torch.nn.Dropout) for m in block.modules()) for block in net.decoder]
    assert has_dropout == [True, True, True, False, False]
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.output_block.modules())
    no_dropout = Pix2PixUNet(base_channels=8, num_downs=6, dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in no_dropout.modules())


def test_norm_choices_and_no_norm_at_first_layer_and_bottleneck():
    norm_types = (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)
    for norm, kind in [("instance", torch.nn.InstanceNorm2d), ("batch", torch.nn.BatchNorm2d)]:
        net = Pix2PixUNet(base_channels=8, num_downs=5, norm=norm)
        assert not any(isinstance(m, norm_types) for m in net.encoder[0].modules())
        assert not any(isinstance(m, norm_types) for m in net.encoder[-1].modules())
        assert all(any(isinstance(m, kind) for m in block.modules()) for block in net.encoder[1:-1])
        assert all(any(isinstance(m, kind) for m in block.modules()) for block in net.decoder)
    plain = Pix2PixUNet(base_channels=8, num_downs=5, norm="none")
    assert not any(isinstance(m, norm_types) for m in plain.modules())


def test_channels_double_up_to_the_cap():
    net = Pix2PixUNet(base_channels=8, num_downs=6, max_channels=32)
    assert [block[0].out_channels for block in net.encoder[:-1]] + [net.encoder[-1].out_channels] == [8, 16, 32, 32, 32, 32]


def test_attention_adds_gates_and_parameters():
    plain = Pix2PixUNet(base_channels=8, num_downs=5)
    gated = Pix2PixUNet(base_channels=8, num_downs=5, attention=True)
    assert plain.gates is None
    assert len(gated.gates) == 4  # one per skip connection
    assert count_parameters(gated) > count_parameters(plain)


def test_init_weights_pix2pix_statistics():
    torch.manual_seed(0)
    net = Pix2PixUNet(base_channels=32, num_downs=4, norm="batch")
    conv_weights = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    norm_weights = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(float(conv_weights.mean())) < 0.002 and float(conv_weights.std()) == pytest.approx(0.02, rel=0.05)
    assert float(norm_weights.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(norm_weights.std()) == pytest.approx(0.02, rel=0.3)
    init_weights(net, gain=0.1)
    conv_weights = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert float(conv_weights.std()) == pytest.approx(0.1, rel=0.05)
    assert all(float(m.bias.abs().max()) == 0.0 for m in net.modules() if getattr(m, "bias", None) is not None)


def test_one_optimisation_step_decreases_l1():
    torch.manual_seed(0)
    net = Pix2PixUNet(base_channels=8, num_downs=4, dropout=0.0)
    x = torch.randn(2, 1, 16, 16)
    y = torch.tanh(x)  # a learnable, bounded target
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = torch.nn.functional.l1_loss(net(x), y)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = torch.nn.functional.l1_loss(net(x), y)
    assert after < before


@pytest.mark.parametrize("upsample", ["resize", "pixelshuffle"])
@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 3, 32, 32)), (3, (1, 1, 16, 16, 16))])
def test_checkerboard_free_upsampling_modes_shapes(upsample, spatial_dims, shape):
    torch.manual_seed(0)
    net = Pix2PixUNet(spatial_dims=spatial_dims, in_channels=shape[1], num_downs=4, base_channels=8,
                      upsample=upsample, attention=spatial_dims == 2)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 1, *shape[2:]) and out.abs().max() <= 1.0
    loss = out.square().mean()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 5, 7, 9)), (3, (1, 3, 4, 5, 6))])
@pytest.mark.parametrize("bias", [True, False])
def test_resize_convolution_equals_nearest_upsampling_then_convolution(spatial_dims, shape, bias):
    # the reference: the two layers as written (torch's nearest x2, then a 3^d convolution with zero padding 1)
    torch.manual_seed(0)
    layer = upsample_layer("resize", spatial_dims, shape[1], 4, bias=bias)
    conv_type = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    reference = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                    conv_type(shape[1], 4, kernel_size=3, padding=1, bias=bias))
    reference.load_state_dict(layer.state_dict())  # same keys: checkpoints of either load into the other
    x = torch.randn(shape, requires_grad=True)
    got, want = layer(x), reference(x)
    assert got.shape == want.shape == (shape[0], 4, *(2 * n for n in shape[2:]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(got.square().sum(), [x, layer[1].weight])
    want_grads = torch.autograd.grad(want.square().sum(), [x, reference[1].weight])
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def _parity_spread(y: torch.Tensor) -> float:
    """Spread of the means of the four (row, col) parity classes of the interior of (B, C, H, W):
    a constant input up-sampled without checkerboard has equal means."""
    inner = y[..., 2:-2, 2:-2]
    means = torch.stack([inner[..., i::2, j::2].mean(dim=(-2, -1)) for i in (0, 1) for j in (0, 1)])
    return float((means.max(dim=0).values - means.min(dim=0).values).abs().max())


def test_upsampling_of_a_constant_has_no_checkerboard_except_transposed():
    # Odena et al. 2016: a stride-2 4x4 transposed convolution overlaps unevenly, so even a constant
    # input comes out with a period-2 pattern at init; resize-convolution and ICNR pixel shuffle do not.
    torch.manual_seed(0)
    spreads = {}
    for mode in ("transpose", "resize", "pixelshuffle"):
        net = Pix2PixUNet(num_downs=3, base_channels=8, upsample=mode)
        layer = net.decoder[0][1]  # the innermost decoder block's up-sampling layer
        with torch.no_grad():
            y = layer(torch.ones(1, layer_in_channels(layer), 8, 8))
        spreads[mode] = _parity_spread(y) / float(y[..., 2:-2, 2:-2].abs().mean())
    assert spreads["resize"] < 1e-5 and spreads["pixelshuffle"] < 1e-5
    assert spreads["transpose"] > 1e-2


def layer_in_channels(layer: torch.nn.Module) -> int:
    return next(m for m in layer.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))).in_channels


def test_unknown_upsample_mode_rejected_and_default_unchanged():
    with pytest.raises(ValueError, match="upsample"):
        Pix2PixUNet(upsample="bilinear-ish")
    net = Pix2PixUNet(num_downs=3, base_channels=8)
    assert net.upsample == "transpose" and isinstance(net.decoder[0][1], torch.nn.ConvTranspose2d)
