"""Pix2Pix U-Net generator for 2D, 2.5D and 3D image translation (MR -> CT in [-1, 1]).

Why not MONAI's ``UNet`` / ``BasicUNet`` / ``AttentionUnet``: they are segmentation U-Nets (3x3 convs,
residual units or double convs, no output activation). The Pix2Pix generator (Isola et al. 2017) is a
different encoder-decoder: every level is a single 4x4 stride-2 convolution down and a 4x4 stride-2
transposed convolution up, LeakyReLU(0.2) in the encoder, ReLU in the decoder, no norm at the
bottleneck, dropout 0.5 in the innermost decoder blocks, and a tanh output. It is built here from
MONAI's layer factories so the same code serves 2D and 3D.

Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``, spatial size divisible by
``2 ** num_downs``. 2.5D is ``spatial_dims=2`` with ``in_channels = k`` neighbouring slices.
"""

from __future__ import annotations

from functools import partial

import torch
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Conv, Norm
from monai.networks.nets.attentionunet import AttentionBlock
from monai.networks.utils import icnr_init, normal_init
from torch import nn

__all__ = ["Pix2PixUNet", "init_weights", "upsample_layer", "UPSAMPLE_MODES"]

_NORMS = {"instance": Norm.INSTANCE, "batch": Norm.BATCH}
# Dropout in the three innermost decoder blocks, as in the Pix2Pix paper ("CD512-CD1024-CD1024-C1024...");
# the reference code leaves the very innermost one out, a detail that matters little.
_DROPOUT_BLOCKS = 3


def monai_norm_name(norm: str) -> str | None:
    """MONAI's ``Norm`` factory name for ``norm`` ("instance" | "batch" | "none"); None for "none"."""
    if norm == "none":
        return None
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of 'instance', 'batch', 'none', got {norm!r}")
    return _NORMS[norm]


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module | None:
    """The norm layer named by ``norm``, or None for "none". Instance norm is MONAI's default
    (affine=False, no running statistics), as in Pix2Pix."""
    name = monai_norm_name(norm)
    return None if name is None else Norm[name, spatial_dims](channels)


def init_weights(module: nn.Module, *, gain: float = 0.02) -> nn.Module:
    """Pix2Pix initialisation, in place: conv weights ~ N(0, gain), batch-norm weights ~ N(1, gain),
    biases 0. Returns ``module``. Call it before any spectral-norm parametrisation is added."""
    module.apply(partial(normal_init, std=gain))
    return module


#: ``transpose``: 4x4 stride-2 transposed convolution (Pix2Pix). Its kernel overlaps unevenly, which
#: leaves checkerboard artefacts (Odena et al. 2016, "Deconvolution and checkerboard artifacts").
#: ``resize``: nearest-neighbour x2 then a 3x3 convolution (resize-convolution, Odena et al.).
#: ``pixelshuffle``: 3x3 convolution to 2^d x channels then sub-pixel shuffle (Shi et al. 2016) with
#: ICNR initialisation (Aitken et al. 2017), which makes it equal to nearest-neighbour upsampling at init.
UPSAMPLE_MODES = ("transpose", "resize", "pixelshuffle")


#: Nearest-neighbour x2 then a 3-tap kernel (w0, w1, w2) is a stride-2 transposed convolution with the 4-tap
#: kernel (w2, w1 + w2, w0 + w1, w0): output 2i reads inputs i-1 (w0) and i (w1 + w2), output 2i+1 reads i
#: (w0 + w1) and i+1 (w2). ``_FOLD[transposed tap, resize tap]``.
_FOLD = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


class ResizeConvolution(nn.Sequential):
    """Resize-convolution ``(B, in, *s) -> (B, out, *2s)``: nearest-neighbour x2, then a 3^d convolution
    (zero padding 1), as ``nn.Sequential(nn.Upsample, Conv)``, whose parameters and state-dict keys it keeps.

    Why not run the two layers as written: the pair equals one 4^d stride-2 transposed convolution whose
    kernel is folded from the 3^d one (:data:`_FOLD` per axis), so it runs as that: 2^d instead of 3^d
    multiply-adds per output voxel (2.25x fewer in 2-D, 3.4x in 3-D: the cost of Pix2Pix's transposed
    convolution), no x2 copy of the input, one operator for ONNX. The folded kernel keeps the constraint that
    makes resize-convolution checkerboard-free; the result equals the two layers up to rounding
    (``tests/test_generators.py`` checks it against them)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, bias: bool) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1, bias=bias))
        self.spatial_dims = spatial_dims

    def transposed_kernel(self) -> torch.Tensor:
        """``(in, out, 4, ..., 4)``: the 3^d kernel folded for ``conv_transpose`` (stride 2, padding 1)."""
        weight = self[1].weight  # (out, in, 3, ..., 3)
        fold = weight.new_tensor(_FOLD)
        if self.spatial_dims == 2:
            return torch.einsum("ka,lb,oiab->iokl", fold, fold, weight)
        return torch.einsum("ka,lb,mc,oiabc->ioklm", fold, fold, fold, weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transposed = nn.functional.conv_transpose2d if self.spatial_dims == 2 else nn.functional.conv_transpose3d
        return transposed(x, self.transposed_kernel(), self[1].bias, stride=2, padding=1)


def upsample_layer(mode: str, spatial_dims: int, in_channels: int, out_channels: int, *, bias: bool) -> nn.Module:
    """x2 up-sampling layer ``(B, in, *s) -> (B, out, *2s)`` of the given ``mode`` (:data:`UPSAMPLE_MODES`)."""
    if mode == "transpose":
        return Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                                                  bias=bias)
    if mode == "resize":
        return ResizeConvolution(spatial_dims, in_channels, out_channels, bias=bias)
    if mode == "pixelshuffle":
        return SubpixelUpsample(spatial_dims, in_channels, out_channels, scale_factor=2, apply_pad_pool=False,
                                bias=bias)
    raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")


def _icnr_reinit(module: nn.Module, *, gain: float) -> None:
    """ICNR for every sub-pixel block: after the N(0, gain) initialisation, each group of 2^d output
    channels feeding one shuffled pixel gets the same kernel (no checkerboard at init)."""
    for block in module.modules():
        if isinstance(block, SubpixelUpsample):
            icnr_init(block.conv_block, block.scale_factor, init=partial(nn.init.normal_, std=gain))


def _sequential(*layers: nn.Module | None) -> nn.Sequential:
    return nn.Sequential(*(layer for layer in layers if layer is not None))


class Pix2PixUNet(nn.Module):
    """Pix2Pix U-Net generator (``unet_256`` is ``num_downs=8``, ``unet_128`` is ``num_downs=7``).

    Args:
        spatial_dims: 2 (2D and 2.5D) or 3.
        in_channels: input channels (1 for MR, k for a 2.5D slab of k slices).
        out_channels: output channels (1 for CT).
        num_downs: number of stride-2 down-samplings; the spatial size must be divisible by
            ``2 ** num_downs``. At least 2.
        base_channels: channels of the first encoder level, doubled per level up to ``max_channels``.
        max_channels: channel cap (Pix2Pix: 8 * 64 = 512).
        norm: "instance", "batch" or "none".
        dropout: dropout probability in the three innermost decoder blocks; 0 disables it.
        attention: gate every skip connection with MONAI's ``AttentionBlock`` (Oktay et al. 2018),
            using the up-sampled decoder features as the gating signal.
        upsample: decoder up-sampling, one of :data:`UPSAMPLE_MODES`: "transpose" (default, Pix2Pix),
            "resize" (nearest x2 + 3x3 conv) or "pixelshuffle" (sub-pixel conv, ICNR init); the last
            two avoid the checkerboard artefacts of transposed convolutions.

    Forward: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``, values in [-1, 1] (tanh).
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        num_downs: int = 5,
        base_channels: int = 64,
        max_channels: int = 512,
        norm: str = "instance",
        dropout: float = 0.5,
        attention: bool = False,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_downs < 2:
            raise ValueError(f"num_downs must be at least 2, got {num_downs}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        monai_norm_name(norm)  # validates the name early
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_downs = num_downs

        conv = Conv[Conv.CONV, spatial_dims]
        # a bias before batch/instance norm is removed by the mean subtraction: keep it only without norm
        bias = norm == "none"
        channels = [min(base_channels * 2**level, max_channels) for level in range(num_downs)]
        down = partial(conv, kernel_size=4, stride=2, padding=1)

        def up(in_ch: int, out_ch: int, *, bias: bool) -> nn.Module:
            return upsample_layer(upsample, spatial_dims, in_ch, out_ch, bias=bias)

        # Encoder. Skips are taken after the LeakyReLU: in the reference implementation the in-place
        # LeakyReLU of the next block overwrites the stored skip, so that is what it concatenates.
        encoder = [_sequential(down(in_channels, channels[0], bias=True), nn.LeakyReLU(0.2))]
        for level in range(1, num_downs - 1):
            encoder.append(
                _sequential(
                    down(channels[level - 1], channels[level], bias=bias),
                    norm_layer(norm, spatial_dims, channels[level]),
                    nn.LeakyReLU(0.2),
                )
            )
        # bottleneck: no norm (its spatial size is often 1, where instance norm is undefined)
        encoder.append(down(channels[-2], channels[-1], bias=True))
        self.encoder = nn.ModuleList(encoder)

        # Decoder, innermost first: decoder[i] brings level num_downs-1-i up to level num_downs-2-i.
        decoder = []
        for i, level in enumerate(range(num_downs - 1, 0, -1)):
            in_ch = channels[level] if level == num_downs - 1 else 2 * channels[level]
            decoder.append(
                _sequential(
                    nn.ReLU(),
                    up(in_ch, channels[level - 1], bias=bias),
                    norm_layer(norm, spatial_dims, channels[level - 1]),
                    nn.Dropout(dropout) if dropout > 0 and i < _DROPOUT_BLOCKS else None,
                )
            )
        self.decoder = nn.ModuleList(decoder)
        self.output_block = _sequential(nn.ReLU(), up(2 * channels[0], out_channels, bias=True), nn.Tanh())

        # gates[i] gates the skip of level num_downs-2-i (same order as the decoder). MONAI's block
        # fits as is (gate and skip at the same size); it uses batch norm internally whatever ``norm`` is.
        self.gates = None
        if attention:
            self.gates = nn.ModuleList(
                AttentionBlock(
                    spatial_dims=spatial_dims, f_int=max(1, channels[level] // 2), f_g=channels[level], f_l=channels[level]
                )
                for level in range(num_downs - 2, -1, -1)
            )
        init_weights(self)
        _icnr_reinit(self, gain=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` in [-1, 1]."""
        if not torch.jit.is_tracing():  # the shape checks are Python branches a trace would freeze
            self._check_input(x)
        skips = []
        for block in self.encoder[:-1]:
            x = block(x)
            skips.append(x)
        x = self.encoder[-1](x)
        for i, block in enumerate(self.decoder):
            x = block(x)
            skip = skips[-1 - i]
            if self.gates is not None:
                skip = self.gates[i](g=x, x=skip)
            x = torch.cat([skip, x], dim=1)
        return self.output_block(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"Pix2PixUNet(spatial_dims={self.spatial_dims}) expects input (B, C, {'H, W' if self.spatial_dims == 2 else 'X, Y, Z'}) with "
                f"{self.spatial_dims + 2} dimensions, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Pix2PixUNet expects {self.in_channels} input channels, got shape {tuple(x.shape)}")
        factor = 2**self.num_downs
        spatial = tuple(x.shape[2:])
        if any(size % factor for size in spatial):
            raise ValueError(
                f"Pix2PixUNet with num_downs={self.num_downs} needs every spatial size divisible by "
                f"2**{self.num_downs} = {factor}, got {spatial}; pad or crop the input (e.g. MONAI DivisiblePad(k={factor}))"
            )
