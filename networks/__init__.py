"""Pix2Pix networks and losses for 2D, 2.5D and 3D translation (MR -> CT in [-1, 1])."""

from networks.decomposition import BoneSubtractionUNet
from networks.discriminators import ConditionalPatchDiscriminator, receptive_field
from networks.generators import Pix2PixUNet, init_weights
from networks.losses import (
    ADVERSARIAL_MODES,
    Pix2PixGeneratorLoss,
    discriminator_loss,
    generator_adversarial_loss,
    gradient_difference_loss,
)

__all__ = [
    "ADVERSARIAL_MODES",
    "BoneSubtractionUNet",
    "ConditionalPatchDiscriminator",
    "Pix2PixGeneratorLoss",
    "Pix2PixUNet",
    "discriminator_loss",
    "generator_adversarial_loss",
    "gradient_difference_loss",
    "init_weights",
    "receptive_field",
]
