"""MR intensity augmentation on training batches (pipeline.data.augment): each change alone does what it says,
the draws are seeded, CT and mask stay untouched in the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.augment import MRIntensityAugmentation, augmentation_for
from pipeline.data.crop_sampler import BodyCropSampler, VolumeBank
from transforms.crop import mask_bounding_box

OFF = {"p_gamma": 0.0, "p_histogram": 0.0, "p_bias": 0.0, "p_blur": 0.0, "p_gibbs": 0.0, "p_noise": 0.0}


def only(name: str, **ranges) -> MRIntensityAugmentation:
    return MRIntensityAugmentation(**{**OFF, f"p_{name}": 1.0, **ranges})


def ramp_batch(n: int = 6) -> torch.Tensor:
    """``(N, 3, 16, 16)`` MR in [-1, 1]: a horizontal ramp of signal 0.02..0.98, the same in every channel."""
    signal = torch.linspace(0.02, 0.98, 16).view(1, 1, 1, 16).expand(n, 3, 16, 16)
    return signal * 2 - 1


def run(augmentation, mr, seed=0):
    return augmentation(mr.clone(), generator=torch.Generator().manual_seed(seed))


def signal_of(mr):
    return (mr + 1) / 2


def test_nothing_switched_on_changes_nothing_and_the_range_is_kept():
    mr = ramp_batch()
    assert torch.equal(run(MRIntensityAugmentation(**OFF), mr), mr)
    out = run(MRIntensityAugmentation(), mr)
    assert out.shape == mr.shape and float(out.min()) >= -1 and float(out.max()) <= 1
    assert not torch.equal(out, mr)


def test_gamma_raises_the_signal_to_one_power_per_crop():
    mr = ramp_batch()
    ratio = torch.log(signal_of(run(only("gamma"), mr))) / torch.log(signal_of(mr))
    per_crop = ratio.view(mr.shape[0], -1)
    assert torch.allclose(per_crop, per_crop[:, :1], atol=1e-3)
    assert ((per_crop[:, 0] > 0.69) & (per_crop[:, 0] < 1.41)).all() and per_crop[:, 0].std() > 0


def test_histogram_remap_is_monotone_and_keeps_zero_and_the_top():
    signal = torch.linspace(0, 1, 256).view(1, 1, 16, 16).expand(8, 1, 16, 16)
    out = signal_of(run(only("histogram", histogram_jitter=0.1), signal * 2 - 1))
    flat = out.view(8, -1)
    assert (flat.diff(dim=1) >= -1e-6).all()
    assert torch.allclose(flat[:, 0], torch.zeros(8), atol=1e-6) and torch.allclose(flat[:, -1], torch.ones(8))
    assert (flat - signal.reshape(8, -1)).abs().max() > 0.01  # it did move the middle


def test_bias_field_is_a_smooth_positive_gain_shared_by_the_slab():
    mr = torch.full((4, 3, 32, 32), 0.0)  # signal 0.5 everywhere
    gain = signal_of(run(only("bias", bias_strength=0.1), mr)) / 0.5  # weak enough that nothing is clipped
    assert (gain > 0).all() and torch.allclose(gain[:, 0], gain[:, 2])
    assert gain.std() > 0.01
    # smooth: the log gain of each crop is a quadratic in (x, y), fitted here by least squares
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    design = torch.stack([torch.ones_like(x), x, y, x * y, x * x, y * y], dim=-1).reshape(-1, 6).double()
    for crop in gain[:, 0]:
        log_gain = torch.log(crop).reshape(-1, 1).double()
        fit = torch.linalg.lstsq(design, log_gain).solution
        assert (design @ fit - log_gain).abs().max() < 1e-5


def test_blur_spreads_a_point_like_a_gaussian():
    signal = torch.zeros(2, 1, 15, 15)
    signal[:, :, 7, 7] = 1.0
    out = signal_of(run(only("blur", blur_sigma_px=(1.0, 1.0)), signal * 2 - 1))
    profile = out[0, 0, 7, 4:11].numpy()
    expected = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    np.testing.assert_allclose(profile / profile.max(), expected / expected.max(), atol=1e-4)
    assert abs(float(out[0].sum()) - 1.0) < 1e-4


def test_gibbs_ringing_overshoots_at_an_edge():
    signal = torch.zeros(2, 1, 32, 32)
    signal[..., 16:] = 0.8
    out = signal_of(run(only("gibbs", gibbs_cutoff=(0.5, 0.5)), signal * 2 - 1))
    assert float(out[..., 16:].max()) > 0.81  # ringing above the plateau next to the edge
    assert float(out[..., :12].mean()) < 0.05


def test_rician_noise_gives_air_a_noise_floor():
    air = torch.full((4, 1, 64, 64), -1.0)
    out = signal_of(run(only("noise", noise_sigma=(0.02, 0.02)), air))
    assert abs(float(out.mean()) - 0.02 * np.sqrt(np.pi / 2)) < 0.002  # Rayleigh mean of the magnitude


def test_draws_are_seeded():
    mr = ramp_batch()
    augmentation = MRIntensityAugmentation()
    assert torch.equal(run(augmentation, mr, seed=3), run(augmentation, mr, seed=3))
    assert not torch.equal(run(augmentation, mr, seed=3), run(augmentation, mr, seed=4))


def test_named_options():
    assert augmentation_for("none") is None and augmentation_for(None) is None
    assert isinstance(augmentation_for("intensity"), MRIntensityAugmentation)
    with pytest.raises(ValueError, match="mr_augmentation"):
        augmentation_for("elastic")
    with pytest.raises(ValueError, match="2-D/2.5D"):
        run(MRIntensityAugmentation(), torch.zeros(1, 1, 4, 4, 4))


def test_the_sampler_augments_the_mr_only():
    mask = torch.zeros(1, 12, 12, 7, dtype=torch.uint8)
    mask[0, 2:10, 2:10] = 1
    subject = {"mr": torch.rand(1, 12, 12, 7) * 2 - 1, "ct": torch.randint(-1000, 2000, (1, 12, 12, 7)).to(torch.int16),
               "mask": mask, "mask_box": mask_bounding_box(mask)}
    options = {"spatial_size": (8, 8, 3), "batch_size": 2, "samples_per_volume": 3, "seed": 5}
    plain = BodyCropSampler(VolumeBank([subject]), **options).draw()
    augmented = BodyCropSampler(VolumeBank([subject]), augment=MRIntensityAugmentation(), **options).draw()
    assert torch.equal(plain["ct"], augmented["ct"]) and torch.equal(plain["mask"], augmented["mask"])
    assert not torch.equal(plain["mr"], augmented["mr"])
    with pytest.raises(ValueError, match="3D"):
        BodyCropSampler(VolumeBank([subject]), spatial_size=(4, 4, 4), channels_slab=False,
                        augment=MRIntensityAugmentation())
