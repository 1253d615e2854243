"""HU window and MR normalisation (transforms/intensity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.intensity import (
    HU_MAX,
    HU_MIN,
    HUWindowd,
    NormalizeMRd,
    hu_to_unit_range,
    normalize_mr,
    unit_range_to_hu,
)


def test_window_end_points():
    np.testing.assert_allclose(hu_to_unit_range(np.array([HU_MIN, HU_MAX])), [-1.0, 1.0], atol=1e-12)
    assert float(hu_to_unit_range(np.array(-1000.0))) == pytest.approx(-1 + 24 * 2 / 4024)


def test_hu_round_trip_exact_inside_window_numpy_and_torch():
    hu = np.linspace(HU_MIN, HU_MAX, 4025)  # 1 HU steps including both ends
    np.testing.assert_allclose(unit_range_to_hu(hu_to_unit_range(hu)), hu, atol=1e-9)
    hu_t = torch.as_tensor(hu, dtype=torch.float32)
    back = unit_range_to_hu(hu_to_unit_range(hu_t))
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    # float32: |HU| <= 3000 needs ~2.4e-4 HU resolution; far below int16 HU rounding
    assert torch.allclose(back, hu_t, atol=1e-3)
    assert torch.equal(torch.round(back), torch.round(hu_t))


def test_values_outside_window_are_clipped():
    unit = hu_to_unit_range(np.array([-3000.0, 5000.0]))
    np.testing.assert_allclose(unit, [-1.0, 1.0], atol=1e-12)
    assert unit_range_to_hu(torch.tensor([-1.5, 1.2])).tolist() == [HU_MIN, HU_MAX]
    assert float(hu_to_unit_range(np.array(5000.0), clip=False)) > 1.0


def test_hu_windowd_forward_and_inverse():
    ct = torch.tensor([[[[-1024.0, 0.0], [1000.0, 3000.0]]]])
    transform = HUWindowd("ct")
    forward = transform({"ct": ct, "mr": ct.clone()})
    assert forward["ct"].min().item() == pytest.approx(-1) and forward["ct"].max().item() == pytest.approx(1)
    assert torch.equal(forward["mr"], ct)  # other keys untouched
    assert torch.allclose(transform.inverse(forward)["ct"], ct, atol=1e-3)
    # the inverse also works on a prediction that never went through the forward transform
    assert transform.inverse({"ct": torch.zeros(1, 2, 2)})["ct"].unique().item() == pytest.approx((HU_MIN + HU_MAX) / 2)


def _mr_and_mask(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((16, 16, 16), dtype=np.uint8)
    mask[3:13, 3:13, 3:13] = 1
    mr = np.where(mask > 0, rng.uniform(100, 900, mask.shape), rng.rayleigh(5, mask.shape)).astype(np.float32)
    mr[0, 0, 0] = 0.0
    mr[1, 1, 1] = 5000.0  # a bright outlier outside the mask must not set the scale
    return mr, mask


@pytest.mark.parametrize("as_torch", [False, True])
def test_normalize_mr_anchors_zero_and_percentile_inside_mask(as_torch):
    mr, mask = _mr_and_mask()
    p995 = float(np.percentile(mr[mask > 0], 99.5))
    mr_in, mask_in = (torch.as_tensor(mr), torch.as_tensor(mask)) if as_torch else (mr, mask)
    out = normalize_mr(mr_in, mask_in)
    out = out.numpy() if as_torch else out
    assert out[0, 0, 0] == pytest.approx(-1.0)
    assert out.min() >= -1 and out.max() <= 1
    ref = np.argmin(np.abs(mr - p995) + (mask == 0) * 1e9)  # voxel nearest the inside-mask p99.5
    assert out.ravel()[ref] == pytest.approx(2 * mr.ravel()[ref] / p995 - 1, abs=1e-4)
    assert out[1, 1, 1] == 1.0  # above the percentile: clipped


def test_normalize_mr_is_invariant_to_global_scale():
    mr, mask = _mr_and_mask(1)
    np.testing.assert_allclose(normalize_mr(mr * 37.5, mask), normalize_mr(mr, mask), atol=1e-5)
    torch.testing.assert_close(normalize_mr(torch.as_tensor(mr) * 0.01, torch.as_tensor(mask)),
                               normalize_mr(torch.as_tensor(mr), torch.as_tensor(mask)), atol=1e-5, rtol=0)


def test_normalize_mr_raises_without_signal():
    with pytest.raises(ValueError, match="no positive signal"):
        normalize_mr(np.zeros((4, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="no positive signal"):
        normalize_mr(torch.zeros(4, 4, 4), torch.ones(4, 4, 4))


def test_normalize_mrd_uses_the_mask_key():
    mr, mask = _mr_and_mask(2)
    out = NormalizeMRd("mr", mask_key="mask")({"mr": mr, "mask": mask})
    np.testing.assert_allclose(out["mr"], normalize_mr(mr, mask))
    without = NormalizeMRd("mr", mask_key=None)({"mr": mr})["mr"]
    assert not np.allclose(without, out["mr"])  # the outlier outside the mask now matters
