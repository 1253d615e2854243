"""Conditional PatchGAN discriminator (Pix2Pix ``basic`` D) on MONAI's ``PatchDiscriminator``.

MONAI's ``PatchDiscriminator`` with ``num_layers_d=3`` is the Pix2Pix ``n_layers=3`` PatchGAN layer for
layer (4x4 convs, strides 2, 2, 2, 1, 1; channels 64-128-256-512-1; 70x70 receptive field in 2D) and
already returns every intermediate feature map with the logits last, which the feature-matching loss
uses. This module adds the conditioning (D sees ``cat([condition, target])``), the norm choice, and
optional spectral normalisation.
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from networks.generators import monai_norm_name

__all__ = ["ConditionalPatchDiscriminator", "receptive_field"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def receptive_field(module: nn.Module) -> int:
    """Receptive field (voxels along one axis) of one output logit of a plain chain of convolutions,
    taken from the conv layers of ``module`` in registration order (kernel and stride of axis 0)."""
    field = 1
    for conv in reversed([m for m in module.modules() if isinstance(m, _CONVS)]):
        field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
    return field


class ConditionalPatchDiscriminator(nn.Module):
    """Conditional PatchGAN: scores every patch of ``target`` as real/fake given ``condition``.

    Args:
        spatial_dims: 2 (2D and 2.5D) or 3.
        in_channels: condition channels + target channels (2.5D with k slices: k + 1).
        num_layers: MONAI ``num_layers_d``; 3 is the Pix2Pix default (70x70 receptive field in 2D).
        base_channels: channels of the first conv, doubled per layer.
        norm: "instance", "batch" or "none"; ignored (no norm) when ``spectral_norm`` is set.
        spectral_norm: spectral normalisation on every conv (Miyato et al. 2018). Norm layers are
            dropped then, as usual: batch/instance norm would undo the Lipschitz constraint.

    Forward: ``condition (B, Cc, *spatial)`` and ``target (B, Ct, *spatial)`` with ``Cc + Ct =
    in_channels`` -> list of feature maps, one per conv block, the last being the logits
    ``(B, 1, *patches)`` (no activation: the losses take logits).
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 2,
        num_layers: int = 3,
        base_channels: int = 64,
        norm: str = "instance",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        norm_name = None if spectral_norm else monai_norm_name(norm)
        if spectral_norm:
            monai_norm_name(norm)  # still reject an unknown name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_layers = num_layers
        self.model = PatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=base_channels,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers,
            kernel_size=4,
            norm=norm_name,
            bias=norm_name is None,  # a bias before a norm layer is cancelled by it
            padding=1,
        )  # MONAI initialises it with N(0, 0.02), as Pix2Pix does
        if spectral_norm:
            for module in list(self.model.modules()):
                if isinstance(module, _CONVS):
                    add_spectral_norm(module)

    def min_spatial_size(self) -> int:
        """Smallest input size per axis that still yields at least one logit."""
        # num_layers stride-2 convs (k4, p1) halve the size; the two stride-1 convs (k4, p1) remove 1 each
        return 3 * 2**self.num_layers

    def forward(self, condition: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """``cat([condition, target], dim=1)`` -> feature maps of every block, logits last."""
        if condition.shape[0] != target.shape[0] or condition.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"condition {tuple(condition.shape)} and target {tuple(target.shape)} must share batch and spatial sizes"
            )
        if condition.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"ConditionalPatchDiscriminator(spatial_dims={self.spatial_dims}) expects {self.spatial_dims + 2}-D "
                f"inputs, got condition {tuple(condition.shape)}"
            )
        if condition.shape[1] + target.shape[1] != self.in_channels:
            raise ValueError(
                f"condition channels ({condition.shape[1]}) + target channels ({target.shape[1]}) must equal "
                f"in_channels={self.in_channels}"
            )
        smallest = self.min_spatial_size()
        if min(condition.shape[2:]) < smallest:
            raise ValueError(
                f"ConditionalPatchDiscriminator(num_layers={self.num_layers}) needs spatial sizes of at least "
                f"{smallest}, got {tuple(condition.shape[2:])}; use larger patches or fewer layers"
            )
        return self.model(torch.cat([condition, target], dim=1))
