"""Tests for networks.discriminators (tiny conditional PatchGANs, base_channels 8)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from networks.discriminators import ConditionalPatchDiscriminator, receptive_field


def convs(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]


@pytest.mark.parametrize(
    ("options", "condition_shape", "logits_shape"),
    [
        (dict(spatial_dims=2, in_channels=2), (2, 1, 32, 32), (2, 1, 2, 2)),
        (dict(spatial_dims=2, in_channels=6), (2, 5, 32, 32), (2, 1, 2, 2)),  # 2.5D: 5 MR slices + 1 CT
        (dict(spatial_dims=3, in_channels=2, num_layers=2), (1, 1, 16, 16, 16), (1, 1, 2, 2, 2)),
    ],
)
def test_returns_feature_list_with_logits_last(options, condition_shape, logits_shape):
    torch.manual_seed(0)
    net = ConditionalPatchDiscriminator(base_channels=8, **options)
    target = torch.randn(condition_shape[0], 1, *condition_shape[2:])
    features = net(torch.randn(condition_shape), target)
    assert isinstance(features, list)
    assert len(features) == net.num_layers + 2  # initial conv, num_layers blocks, final conv
    assert tuple(features[-1].shape) == logits_shape
    # channels: base, doubling per block, then one logit channel
    assert [f.shape[1] for f in features] == [8 * 2**i for i in range(net.num_layers + 1)] + [1]
    assert not hasattr(net.model.final_conv, "adn")  # raw logits: no activation after the last conv


def test_output_depends_on_condition_and_on_target():
    torch.manual_seed(0)
    net = ConditionalPatchDiscriminator(base_channels=8)
    condition, target = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    logits = net(condition, target)[-1]
    assert not torch.allclose(logits, net(torch.randn_like(condition), target)[-1])
    assert not torch.allclose(logits, net(condition, torch.randn_like(target))[-1])


def test_receptive_field_is_70_for_three_layers_in_2d():
    assert receptive_field(ConditionalPatchDiscriminator(base_channels=8)) == 70
    assert receptive_field(ConditionalPatchDiscriminator(base_channels=8, num_layers=2)) == 34
    assert receptive_field(ConditionalPatchDiscriminator(spatial_dims=3, base_channels=8)) == 70


def test_receptive_field_matches_the_network_empirically():
    # a logit must change when a voxel inside its 70-pixel field changes, and not outside it
    torch.manual_seed(0)
    net = ConditionalPatchDiscriminator(base_channels=8, norm="none").double()
    condition = torch.randn(1, 1, 96, 96, dtype=torch.float64, requires_grad=True)
    logits = net(condition, torch.randn(1, 1, 96, 96, dtype=torch.float64))[-1]
    assert logits.shape[-2:] == (10, 10)
    logits[0, 0, 5, 5].backward()  # a central logit, whose field lies wholly inside the image
    support = condition.grad[0, 0] != 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    assert int(rows.max() - rows.min()) + 1 == 70
    assert int(cols.max() - cols.min()) + 1 == 70
    assert int(support.sum()) == 70 * 70


def test_norm_options():
    instance = ConditionalPatchDiscriminator(base_channels=8, norm="instance")
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in instance.modules()) == 3
    batch = ConditionalPatchDiscriminator(base_channels=8, norm="batch")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules()) == 3
    with pytest.raises(ValueError, match="norm must be one of"):
        ConditionalPatchDiscriminator(norm="layer")


def test_spectral_norm_parametrises_every_conv_and_drops_norm_layers():
    net = ConditionalPatchDiscriminator(base_channels=8, spectral_norm=True)
    layers = convs(net)
    assert len(layers) == 5
    assert all(parametrize.is_parametrized(conv, "weight") for conv in layers)
    assert all(hasattr(conv.parametrizations.weight, "original") for conv in layers)
    assert not any(isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) for m in net.modules())
    net.train()
    for _ in range(20):  # power iterations converge in training mode
        net(torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32))
    for conv in layers:
        matrix = conv.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(matrix, ord=2) == pytest.approx(1.0, abs=0.05)
    plain = ConditionalPatchDiscriminator(base_channels=8)
    assert not any(parametrize.is_parametrized(conv) for conv in convs(plain))


def test_bad_inputs_raise_clear_errors():
    net = ConditionalPatchDiscriminator(base_channels=8)
    with pytest.raises(ValueError, match="in_channels=2"):
        net(torch.zeros(1, 2, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="same batch and spatial|share batch and spatial"):
        net(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 16))
    with pytest.raises(ValueError, match="at least 24"):
        net(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
