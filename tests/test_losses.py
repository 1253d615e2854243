"""Tests for networks.losses (tiny tensors; the feature lists stand in for a PatchGAN's output)."""

from __future__ import annotations

import math

import pytest
import torch

from networks.discriminators import ConditionalPatchDiscriminator
from networks.losses import (
    Pix2PixGeneratorLoss,
    discriminator_loss,
    generator_adversarial_loss,
    gradient_difference_loss,
    high_pass,
)
from transforms.intensity import hu_to_unit_range

LARGE = 30.0
LOGITS = (2, 1, 4, 4)


def features(logit_value: float = 0.0) -> list[torch.Tensor]:
    return [torch.zeros(2, 8, 16, 16), torch.full(LOGITS, logit_value)]


# --- discriminator loss -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "hinge"])
def test_discriminator_loss_is_zero_for_a_perfect_discriminator(mode):
    perfect_real, perfect_fake = {"vanilla": (LARGE, -LARGE), "lsgan": (1.0, 0.0), "hinge": (1.0, -1.0)}[mode]
    loss = discriminator_loss(torch.full(LOGITS, perfect_real), torch.full(LOGITS, perfect_fake), mode=mode)
    assert loss.ndim == 0
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_discriminator_loss_values_for_the_worst_and_undecided_discriminator():
    real, fake = torch.full(LOGITS, -LARGE), torch.full(LOGITS, LARGE)
    # vanilla: BCE of a confident wrong logit is ~|logit|; halved sum of two such terms = LARGE
    assert float(discriminator_loss(real, fake, mode="vanilla")) == pytest.approx(LARGE, rel=1e-4)
    # undecided (logit 0): BCE = log 2 on both sides, halved sum = log 2
    zeros = torch.zeros(LOGITS)
    assert float(discriminator_loss(zeros, zeros, mode="vanilla")) == pytest.approx(math.log(2.0))
    # lsgan, exact: ((-30 - 1)^2 + (30 - 0)^2) / 2 and (0 - 1)^2 / 2
    assert float(discriminator_loss(real, fake, mode="lsgan")) == pytest.approx((31.0**2 + 30.0**2) / 2)
    assert float(discriminator_loss(zeros, zeros, mode="lsgan")) == pytest.approx(0.5)
    # hinge: relu(1 - real) + relu(1 + fake), halved
    assert float(discriminator_loss(real, fake, mode="hinge")) == pytest.approx(31.0)
    assert float(discriminator_loss(zeros, zeros, mode="hinge")) == pytest.approx(1.0)


def test_discriminator_loss_parts_and_halving():
    real, fake = torch.full(LOGITS, 0.5), torch.full(LOGITS, 0.25)
    parts = discriminator_loss(real, fake, mode="lsgan", reduction_parts=True)
    assert float(parts["real"]) == pytest.approx(0.25)  # (0.5 - 1)^2
    assert float(parts["fake"]) == pytest.approx(0.0625)  # 0.25^2
    assert float(parts["total"]) == pytest.approx((0.25 + 0.0625) / 2)
    assert float(parts["total"]) == pytest.approx(float(discriminator_loss(real, fake, mode="lsgan")))


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="adversarial mode"):
        discriminator_loss(torch.zeros(1), torch.zeros(1), mode="wgan")
    with pytest.raises(ValueError, match="adversarial mode"):
        Pix2PixGeneratorLoss(adversarial_mode="wgan")


def test_vanilla_loss_keeps_gradients_for_confident_logits():
    # a sigmoid followed by BCE saturates here; BCE on logits must not
    fake_logits = torch.full(LOGITS, -200.0, requires_grad=True)
    loss = generator_adversarial_loss(fake_logits, mode="vanilla")
    loss.backward()
    assert float(loss) == pytest.approx(200.0, rel=1e-4)
    assert float(fake_logits.grad.abs().min()) > 0


@pytest.mark.parametrize(
    ("mode", "fooled", "caught"),
    [("vanilla", (LARGE, 0.0), (-LARGE, LARGE)), ("lsgan", (1.0, 0.0), (0.0, 1.0)), ("hinge", (2.0, -2.0), (-3.0, 3.0))],
)
def test_generator_adversarial_loss(mode, fooled, caught):
    assert float(generator_adversarial_loss(torch.full(LOGITS, fooled[0]), mode=mode)) == pytest.approx(fooled[1], abs=1e-6)
    assert float(generator_adversarial_loss(torch.full(LOGITS, caught[0]), mode=mode)) == pytest.approx(caught[1], rel=1e-4)


# --- generator loss -----------------------------------------------------------------------------

def all_extras(**overrides) -> Pix2PixGeneratorLoss:
    weights = dict(ssim_weight=1.0, gradient_weight=1.0, detail_weight=1.0, bone_weight=1.0, feature_matching_weight=1.0)
    return Pix2PixGeneratorLoss(**{**weights, **overrides})


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 1, 32, 32)), (3, (1, 1, 16, 16, 16))])
def test_identical_images_give_zero_image_terms(spatial_dims, shape):
    torch.manual_seed(0)
    real = torch.rand(shape) * 2 - 1
    feats = [torch.randn(shape[0], 8, *[s // 2 for s in shape[2:]]), torch.zeros(shape[0], 1, 2, 2)]
    terms = all_extras(spatial_dims=spatial_dims)(fake=real.clone(), real=real, fake_features=feats, real_features=feats)
    assert set(terms) == {"total", "adversarial", "l1", "ssim", "gradient", "detail", "bone_l1", "feature_matching"}
    for name in ("l1", "ssim", "gradient", "detail", "bone_l1", "feature_matching"):
        assert float(terms[name]) == pytest.approx(0.0, abs=1e-5), name
    assert float(terms["total"]) == pytest.approx(float(terms["adversarial"]), abs=1e-5)
    assert float(terms["adversarial"]) == pytest.approx(math.log(2.0))  # logits 0 -> BCE log 2


def test_extras_off_gives_only_the_pix2pix_terms_with_lambda_100():
    torch.manual_seed(0)
    fake, real = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    terms = Pix2PixGeneratorLoss()(fake=fake, real=real, fake_features=features(0.3))
    assert set(terms) == {"total", "adversarial", "l1"}
    assert float(terms["l1"]) == pytest.approx(float((fake - real).abs().mean()))
    assert float(terms["total"]) == pytest.approx(float(terms["adversarial"] + 100.0 * terms["l1"]))


def test_weights_scale_each_term():
    torch.manual_seed(0)
    fake, real = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    real_feats = [torch.randn(2, 8, 16, 16), torch.zeros(LOGITS)]
    kwargs = dict(fake=fake, real=real, fake_features=features(0.3), real_features=real_feats)
    unit = all_extras(l1_weight=1.0)(**kwargs)
    weighted = Pix2PixGeneratorLoss(
        adversarial_weight=2.0, l1_weight=3.0, ssim_weight=5.0, gradient_weight=7.0, detail_weight=17.0, bone_weight=11.0,
        feature_matching_weight=13.0,
    )(**kwargs)
    expected = sum(w * unit[name] for name, w in
                   [("adversarial", 2.0), ("l1", 3.0), ("ssim", 5.0), ("gradient", 7.0), ("detail", 17.0), ("bone_l1", 11.0),
                    ("feature_matching", 13.0)])
    assert float(weighted["total"]) == pytest.approx(float(expected), rel=1e-5)
    for name in ("ssim", "gradient", "detail", "bone_l1", "feature_matching"):
        assert float(unit[name]) > 0, name


def test_high_pass_keeps_fine_stripes_and_drops_the_broad_image():
    rows = torch.arange(64, dtype=torch.float64)
    ramp = (rows / 63).expand(64, 64)  # broad: a linear ramp across the image
    stripes = ((rows // 2) % 2 * 2 - 1).expand(64, 64).T  # fine: 4-pixel period along the other axis
    x = (ramp + 0.1 * stripes)[None, None]
    hp = high_pass(x, 4.0)
    # a constant: nothing, to the rounding of its dtype (float32: ~1 ulp of 3.0, 2e-7 to 5e-7 by the CPU's summation)
    assert float(high_pass(torch.full((1, 1, 16, 16), 3.0, dtype=torch.float64), 4.0).abs().max()) < 1e-12
    assert float(high_pass(torch.full((1, 1, 16, 16), 3.0), 4.0).abs().max()) < 3.0 * 1e-6
    inner = hp[..., 16:-16, 16:-16]
    # the stripes pass almost whole, the ramp (linear: a symmetric blur keeps it) not at all
    assert torch.allclose(inner, 0.1 * stripes[16:-16, 16:-16][None, None], atol=0.01)
    with pytest.raises(ValueError, match="sigma_px"):
        high_pass(x, 0.0)


def test_detail_term_ignores_a_broad_error_and_sees_a_stripe():
    real = torch.zeros(1, 1, 64, 64)
    offset = real + 0.3  # a broad error (gain or offset): the plain L1 sees it, the detail term does not
    stripe = real.clone()
    stripe[..., 30:34, :] = 0.3  # a rib-like stripe the prediction should not have
    loss = Pix2PixGeneratorLoss(detail_weight=1.0, detail_sigma_px=4.0)
    broad = loss(fake=offset, real=real, fake_features=None)
    fine = loss(fake=stripe, real=real, fake_features=None)
    assert float(broad["detail"]) < 1e-6 < float(broad["l1"])
    assert float(fine["detail"]) > 0.5 * float(fine["l1"])
    with pytest.raises(ValueError, match="detail_sigma_px"):
        Pix2PixGeneratorLoss(detail_weight=1.0, detail_sigma_px=0.0)


def test_mask_restricts_l1_to_the_mask():
    real = torch.zeros(1, 1, 32, 32)
    fake = real.clone()
    fake[..., :16] = 0.5  # error only in the left half
    mask = torch.zeros_like(real)
    mask[..., 16:] = 1  # mask covers the right half
    loss = Pix2PixGeneratorLoss(bone_weight=1.0)
    inside = loss(fake=fake, real=real, fake_features=features(), mask=mask)
    assert float(inside["l1"]) == 0.0 and float(inside["bone_l1"]) == 0.0
    outside = loss(fake=fake, real=real, fake_features=features(), mask=1 - mask)
    assert float(outside["l1"]) == pytest.approx(0.5)  # mean inside the mask, not over the whole image
    assert float(loss(fake=fake, real=real, fake_features=features())["l1"]) == pytest.approx(0.25)
    empty = loss(fake=fake, real=real, fake_features=features(), mask=torch.zeros_like(real))
    assert float(empty["l1"]) == 0.0  # a patch wholly outside the body: 0, not NaN
    with pytest.raises(ValueError, match="mask"):
        loss(fake=fake, real=real, fake_features=features(), mask=mask[..., :8])


def test_bone_weighted_l1_counts_bone_errors_bone_factor_times():
    bone, soft = float(hu_to_unit_range(torch.tensor(1000.0))), float(hu_to_unit_range(torch.tensor(40.0)))
    real = torch.full((1, 1, 8, 8), soft)
    real[..., :4] = bone  # half bone, half soft tissue
    fake_bone_error, fake_soft_error = real.clone(), real.clone()
    fake_bone_error[..., :4] += 0.1
    fake_soft_error[..., 4:] += 0.1
    loss = Pix2PixGeneratorLoss(bone_weight=1.0, bone_threshold_hu=250.0, bone_factor=5.0)
    bone_err = loss(fake=fake_bone_error, real=real, fake_features=features())
    soft_err = loss(fake=fake_soft_error, real=real, fake_features=features())
    assert float(bone_err["l1"]) == pytest.approx(float(soft_err["l1"]))  # plain L1 cannot tell them apart
    # weighted mean: bone voxels weigh 5, soft 1 -> 0.1 * 5/6 vs 0.1 * 1/6
    assert float(bone_err["bone_l1"]) == pytest.approx(0.1 * 5 / 6, rel=1e-4)
    assert float(soft_err["bone_l1"]) == pytest.approx(0.1 * 1 / 6, rel=1e-4)


def test_gradient_difference_loss_sees_edges_that_l1_misses():
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    blurred = step.clone()
    blurred[..., 7:9] = 0.5  # the edge spread over three steps of 0.5, 0 and 0.5 instead of one of 1
    assert float(gradient_difference_loss(step, step)) == 0.0
    # along columns, per row: (1 - 0)^2 + 2 * (0 - 0.5)^2 over 15 differences; rows contribute 0
    expected_columns = (1.0**2 + 2 * 0.5**2) * 16 / (16 * 15)
    assert float(gradient_difference_loss(blurred, step)) == pytest.approx(expected_columns / 2)
    volume = torch.rand(1, 1, 8, 8, 8)
    assert float(gradient_difference_loss(volume, volume)) == 0.0
    assert float(gradient_difference_loss(volume + 1.0, volume)) == pytest.approx(0.0, abs=1e-6)  # offset-invariant


def test_feature_matching_needs_real_features_and_ignores_logits():
    loss = Pix2PixGeneratorLoss(feature_matching_weight=1.0)
    fake = real = torch.zeros(2, 1, 32, 32)
    with pytest.raises(ValueError, match="real_features"):
        loss(fake=fake, real=real, fake_features=features())
    fake_feats = [torch.full((2, 8, 16, 16), 1.0), torch.full(LOGITS, 9.0)]
    real_feats = [torch.full((2, 8, 16, 16), 0.5), torch.full(LOGITS, -9.0)]
    terms = loss(fake=fake, real=real, fake_features=fake_feats, real_features=real_feats)
    assert float(terms["feature_matching"]) == pytest.approx(0.5)


def test_feature_matching_does_not_push_gradients_into_real_features():
    real_feature = torch.randn(2, 8, 16, 16, requires_grad=True)
    fake_feature = torch.randn(2, 8, 16, 16, requires_grad=True)
    terms = Pix2PixGeneratorLoss(feature_matching_weight=1.0)(
        fake=torch.zeros(2, 1, 32, 32), real=torch.zeros(2, 1, 32, 32),
        fake_features=[fake_feature, torch.zeros(LOGITS)], real_features=[real_feature, torch.zeros(LOGITS)],
    )
    terms["feature_matching"].backward()
    assert real_feature.grad is None and fake_feature.grad is not None


def test_one_generator_step_against_a_real_discriminator_decreases_l1():
    torch.manual_seed(0)
    condition, real = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    fake = torch.zeros_like(real, requires_grad=True)  # the "generator output" being optimised
    discriminator = ConditionalPatchDiscriminator(base_channels=8)
    loss = all_extras()
    optimizer = torch.optim.SGD([fake], lr=0.05)

    def terms():
        return loss(fake=fake, real=real, fake_features=discriminator(condition, fake),
                    real_features=[f.detach() for f in discriminator(condition, real)])

    before = terms()
    before["total"].backward()
    optimizer.step()
    after = terms()
    assert float(after["l1"]) < float(before["l1"])
    assert float(after["total"]) < float(before["total"])


def test_image_terms_stay_float32_under_autocast():
    torch.manual_seed(0)
    real = torch.rand(1, 1, 32, 32) * 2 - 1
    fake = (real + 0.01 * torch.randn_like(real)).clamp(-1, 1)
    loss = all_extras()
    kwargs = dict(fake=fake, real=real, fake_features=features(), real_features=features())
    reference = loss(**kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(**kwargs)
    for name in ("l1", "ssim", "gradient", "bone_l1"):
        assert mixed[name].dtype == torch.float32
        assert float(mixed[name]) == pytest.approx(float(reference[name]), rel=1e-5), name
