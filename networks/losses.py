"""Pix2Pix losses: the halved discriminator loss and the generator's adversarial + lambda * L1 loss
with optional SSIM, gradient-difference, detail (high-pass) L1, bone-weighted L1 and feature-matching terms.

Images are CT in [-1, 1] (``transforms.intensity.hu_to_unit_range``), shape ``(B, C, *spatial)``;
discriminator outputs are raw logits.

Adversarial modes: "vanilla" (BCE on logits, Pix2Pix), "lsgan" (MSE to 1/0) and "hinge". MONAI's
``PatchAdversarialLoss`` is used for "lsgan" only: its "bce" applies a sigmoid and then ``BCELoss``,
which saturates for confident logits and is refused under CUDA autocast (the bundle trains with AMP),
so "vanilla" uses ``binary_cross_entropy_with_logits``; its "hinge" squashes logits through tanh
first, which is not the usual hinge loss (``relu(1 - real) + relu(1 + fake)`` for D, ``-fake`` for G).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss, SSIMLoss
from monai.networks.layers.convutils import gaussian_1d
from monai.networks.layers.simplelayers import separable_filtering
from torch import nn

from transforms.intensity import hu_to_unit_range

__all__ = [
    "ADVERSARIAL_MODES", "discriminator_loss", "generator_adversarial_loss", "gradient_difference_loss",
    "high_pass", "Pix2PixGeneratorLoss",
]

ADVERSARIAL_MODES = ("vanilla", "lsgan", "hinge")

# plain least squares: MONAI's default puts a LeakyReLU(0.05) on the logits first
_least_squares = PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)


def _check_mode(mode: str) -> None:
    if mode not in ADVERSARIAL_MODES:
        raise ValueError(f"adversarial mode must be one of {ADVERSARIAL_MODES}, got {mode!r}")


def _real_fake_terms(logits: torch.Tensor, *, target_is_real: bool, mode: str) -> torch.Tensor:
    """Discriminator term for one kind of input (mean over all logits)."""
    if mode == "vanilla":
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return _least_squares(logits, target_is_real=target_is_real, for_discriminator=True)
    return F.relu(1.0 - logits).mean() if target_is_real else F.relu(1.0 + logits).mean()


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, *, mode: str = "vanilla", reduction_parts: bool = False
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Pix2Pix discriminator loss ``(loss(real -> real) + loss(fake -> fake)) / 2``.

    Halved as in Pix2Pix, which slows D relative to G. Logits of any shape (patches), mean-reduced.

    Args:
        real_logits: D(condition, real target) logits.
        fake_logits: D(condition, generated target) logits (the fake detached by the caller).
        mode: "vanilla", "lsgan" or "hinge".
        reduction_parts: return ``{"total", "real", "fake"}`` (the two unhalved terms as well) instead
            of the total alone, for logging.
    """
    _check_mode(mode)
    real = _real_fake_terms(real_logits, target_is_real=True, mode=mode)
    fake = _real_fake_terms(fake_logits, target_is_real=False, mode=mode)
    total = 0.5 * (real + fake)
    return {"total": total, "real": real, "fake": fake} if reduction_parts else total


def generator_adversarial_loss(fake_logits: torch.Tensor, *, mode: str = "vanilla") -> torch.Tensor:
    """Generator's adversarial loss on D(condition, fake) logits: it wants them scored real."""
    _check_mode(mode)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if mode == "lsgan":
        return _least_squares(fake_logits, target_is_real=True, for_discriminator=False)
    return -fake_logits.mean()


def gradient_difference_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Gradient difference loss (Nie et al. 2018): mean over spatial axes of
    ``mean((|d real| - |d fake|) ** 2)``, with ``d`` the forward finite difference along that axis.

    Penalises blurred or displaced edges (bone/air boundaries) that L1 alone tolerates. Any number of
    spatial axes after ``(B, C)``; averaging over axes keeps 2D and 3D on the same scale.
    """
    terms = []
    for axis in range(2, real.ndim):
        grad_real = torch.diff(real, dim=axis).abs()
        grad_fake = torch.diff(fake, dim=axis).abs()
        terms.append(((grad_real - grad_fake) ** 2).mean())
    return torch.stack(terms).mean()


def high_pass(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """``image`` minus its Gaussian blur of ``sigma_px`` pixels on every spatial axis (MONAI's separable
    filter, edges replicated so that a constant image gives 0 to the rounding of the image's dtype): the detail
    finer than about ``sigma_px``, e.g. rib shadows (10-20 mm) without the broad body load. ``(B, C, *spatial)``
    in and out."""
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    kernel = gaussian_1d(torch.tensor(float(sigma_px)), truncated=4.0, approx="erf", normalize=True)
    kernel = kernel.to(device=image.device, dtype=image.dtype)
    # normalised again in the image's precision: MONAI's kernel is float32, whose sum misses 1 by ~1e-7, which a
    # float64 image would keep as a residual of a constant
    kernel = kernel / kernel.sum()
    return image - separable_filtering(image, [kernel] * (image.ndim - 2), mode="replicate")


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # an all-zero weight map (a patch entirely outside the body mask) gives 0, not NaN
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class Pix2PixGeneratorLoss(nn.Module):
    """Generator loss ``adversarial_weight * adv + l1_weight * L1 + sum(weight * extra)``.

    Args:
        adversarial_mode: "vanilla", "lsgan" or "hinge" (match the discriminator loss).
        adversarial_weight: weight of the adversarial term.
        l1_weight: lambda of Pix2Pix (100).
        ssim_weight: weight of ``1 - SSIM`` (MONAI ``SSIMLoss``, images shifted to [0, 2], data range 2).
        gradient_weight: weight of :func:`gradient_difference_loss`.
        detail_weight: weight of the detail L1, the L1 of the :func:`high_pass` error at
            ``detail_sigma_px`` (pixels): the broad image dominates the plain L1, so fine structure that
            must be removed from one output and kept in another (ribs over the lungs in a soft-tissue
            image, a few percent of the signal) is weighted again on its own.
        bone_weight: weight of the bone-weighted L1: voxels whose real CT is at least
            ``bone_threshold_hu`` (HU) count ``bone_factor`` times, others once (weighted mean).
        feature_matching_weight: weight of the mean L1 between D's intermediate features of the real
            and the fake pair (logits excluded): a perceptual loss that needs no pretrained weights.
        spatial_dims: 2 or 3 (for SSIM).

    Forward (keyword-only): ``fake``, ``real`` (B, C, *spatial) in [-1, 1]; ``fake_features`` =
    D(condition, fake) (list, logits last; None leaves out the adversarial and feature-matching terms,
    as in an L1 warm-up); ``real_features`` = D(condition, real), needed for feature
    matching (detached here); ``mask`` optional 0/1 map shaped like ``real``: the L1 terms (``l1``,
    ``detail``, ``bone_l1``) are averaged inside it only. Returns a dict of scalar tensors: "total",
    "adversarial", "l1", and "ssim", "gradient", "detail", "bone_l1", "feature_matching" for the enabled extras
    (the terms unweighted, the total weighted).
    """

    def __init__(
        self,
        *,
        adversarial_mode: str = "vanilla",
        adversarial_weight: float = 1.0,
        l1_weight: float = 100.0,
        ssim_weight: float = 0.0,
        gradient_weight: float = 0.0,
        detail_weight: float = 0.0,
        detail_sigma_px: float = 4.0,
        bone_weight: float = 0.0,
        bone_threshold_hu: float = 250.0,
        bone_factor: float = 5.0,
        feature_matching_weight: float = 0.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        _check_mode(adversarial_mode)
        weights = dict(
            adversarial_weight=adversarial_weight, l1_weight=l1_weight, ssim_weight=ssim_weight,
            gradient_weight=gradient_weight, detail_weight=detail_weight, bone_weight=bone_weight,
            feature_matching_weight=feature_matching_weight,
        )
        negative = [name for name, value in weights.items() if value < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0, got negative {negative}")
        if not detail_sigma_px > 0:
            raise ValueError(f"detail_sigma_px must be > 0, got {detail_sigma_px}")
        if bone_factor < 1:
            raise ValueError(f"bone_factor must be >= 1, got {bone_factor}")
        self.adversarial_mode = adversarial_mode
        self.adversarial_weight = float(adversarial_weight)
        self.l1_weight = float(l1_weight)
        self.ssim_weight = float(ssim_weight)
        self.gradient_weight = float(gradient_weight)
        self.detail_weight = float(detail_weight)
        self.detail_sigma_px = float(detail_sigma_px)
        self.bone_weight = float(bone_weight)
        self.bone_threshold = float(hu_to_unit_range(torch.tensor(float(bone_threshold_hu))))
        self.bone_factor = float(bone_factor)
        self.feature_matching_weight = float(feature_matching_weight)
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=2.0) if ssim_weight > 0 else None

    def forward(
        self,
        *,
        fake: torch.Tensor,
        real: torch.Tensor,
        fake_features: list[torch.Tensor] | None,
        real_features: list[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if fake.shape != real.shape:
            raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} must have the same shape")
        if mask is not None and mask.shape != real.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must have the shape of real {tuple(real.shape)}")
        # fake_features None: no adversarial term (the trainer's L1 warm-up)
        terms = {} if fake_features is None else {
            "adversarial": generator_adversarial_loss(fake_features[-1], mode=self.adversarial_mode)}
        # image terms in float32 even under AMP: SSIM's variances (E[x^2] - E[x]^2) and small HU
        # differences lose too much in half precision
        with torch.autocast(device_type=fake.device.type, enabled=False):
            fake, real = fake.float(), real.float()
            inside = torch.ones_like(real) if mask is None else (mask > 0).float()
            abs_error = (fake - real).abs()
            terms["l1"] = _weighted_mean(abs_error, inside)
            if self.ssim is not None:
                # SSIM's luminance term assumes non-negative intensities: shift [-1, 1] to [0, 2]
                terms["ssim"] = self.ssim(fake + 1.0, real + 1.0)
            if self.gradient_weight > 0:
                terms["gradient"] = gradient_difference_loss(fake, real)
            if self.detail_weight > 0:
                # the filter is linear: the high-pass of the error, over the whole image (the blur sees
                # past the mask's edge), averaged inside the mask like the L1
                terms["detail"] = _weighted_mean(high_pass(fake - real, self.detail_sigma_px).abs(), inside)
            if self.bone_weight > 0:
                bone = (real >= self.bone_threshold).float()
                terms["bone_l1"] = _weighted_mean(abs_error, inside * (1.0 + (self.bone_factor - 1.0) * bone))
        if self.feature_matching_weight > 0 and fake_features is not None:
            if real_features is None:
                raise ValueError("feature_matching_weight > 0 needs real_features = D(condition, real)")
            if len(real_features) != len(fake_features):
                raise ValueError(
                    f"real_features has {len(real_features)} maps but fake_features {len(fake_features)}"
                )
            pairs = list(zip(fake_features[:-1], real_features[:-1]))  # the logits are the adversarial term's
            if not pairs:
                raise ValueError("feature matching needs at least one intermediate feature map before the logits")
            terms["feature_matching"] = torch.stack([F.l1_loss(f, r.detach()) for f, r in pairs]).mean()
        weights = {
            "adversarial": self.adversarial_weight, "l1": self.l1_weight, "ssim": self.ssim_weight,
            "gradient": self.gradient_weight, "detail": self.detail_weight, "bone_l1": self.bone_weight,
            "feature_matching": self.feature_matching_weight,
        }
        total = sum(weights[name] * value for name, value in terms.items())
        return {"total": total, **terms}
