"""Tests for pipeline.xray.validator: ``paired_panel`` (shape, range, shared window per predicted/true
pair), ``PairedImageValidator`` (a MONAI Evaluator) with a perfect generator (MAE 0) and with errors
placed inside and outside the body mask (MAE in target units per key and averaged, by hand), the best
round, and ``PairedImagePanel``'s TensorBoard tag.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.xray.data import TARGET_KEY, IntensityWindow
from pipeline.xray.validator import PairedImagePanel, PairedImageValidator, paired_panel

WINDOWS = {"image": IntensityWindow(0.0, 10.0), "target": IntensityWindow(0.0, 10.0)}
SOFT, BONE = 0.7, 0.3  # truth: de_soft = 0.7 x SE, de_bone = 0.3 x SE (physical units)
H, W = 12, 20  # not a multiple of the divisor: the validator pads and crops


class FakeWriter:
    def __init__(self) -> None:
        self.images = []

    def add_image(self, tag, image, global_step=None) -> None:
        self.images.append((tag, np.asarray(image), global_step))

    def flush(self) -> None:
        pass


class Decomposer(torch.nn.Module):
    """The exact SE -> (soft, bone) map in network units, plus scripted errors ``(C, H, W)`` in target units."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.error = torch.zeros(2, H, W)

    def forward(self, x):
        # unit u = SE / 5 - 1 (window [0, 10]); target unit for k x SE is k (u + 1) - 1
        out = torch.cat([SOFT * (x + 1) - 1, BONE * (x + 1) - 1], dim=1)
        error_unit = self.error * (2.0 / 10.0)
        out[..., :H, :W] += error_unit[None]
        return out


def se_image(seed: int) -> np.ndarray:
    """A body (values 2-6) on the left 14 columns, air (0) elsewhere; physical units."""
    rng = np.random.default_rng(seed)
    image = np.zeros((1, H, W), dtype=np.float32)
    image[0, :, :14] = 2.0 + 4.0 * rng.random((H, 14))
    return image


def batches(images):
    """Validation batches as the bundle's loader gives them: condition in [-1, 1], targets physical."""
    out = []
    for image in images:
        target = np.concatenate([SOFT * image, BONE * image])
        out.append({"se": torch.from_numpy(WINDOWS["image"].to_unit(image)), TARGET_KEY: torch.from_numpy(target)})
    return out


def make_validator(generator, images):
    loader = DataLoader(batches(images), batch_size=1, shuffle=False)
    return PairedImageValidator(device="cpu", val_data_loader=loader, generator=generator, windows=WINDOWS,
                                image_key="se", target_keys=["de_soft", "de_bone"], divisor=8)


def body_by_hand(image: np.ndarray) -> np.ndarray:
    return image[0] > 0.05 * np.percentile(image[0], 99)


IMAGES = [se_image(0), se_image(1)]


def test_perfect_generator_scores_zero():
    engine = make_validator(Decomposer(), IMAGES)
    engine.run()
    metrics = engine.state.metrics
    assert set(metrics) == {"val_mae", "val_mae_de_soft", "val_mae_de_bone"}
    for name, value in metrics.items():
        assert value == pytest.approx(0.0, abs=1e-5), name
    out = engine.state.output
    np.testing.assert_allclose(out["image"], IMAGES[-1][0], atol=1e-5)
    np.testing.assert_allclose(out["prediction"], np.concatenate([SOFT * IMAGES[-1], BONE * IMAGES[-1]]), atol=1e-5)
    np.testing.assert_allclose(out["truth"], out["prediction"], atol=1e-5)


def test_mae_counts_the_body_only_per_key_and_averages():
    generator = Decomposer()
    error = torch.zeros(2, H, W)
    error[0, :, 16:] = 3.0  # outside the body: must not count
    error[0, :6, :14] = 0.5  # soft: +0.5 on the top half of the body
    error[1, :, :14] = -0.2  # bone: -0.2 on the whole body
    generator.error = error
    engine = make_validator(generator, IMAGES)
    engine.run()
    soft, bone = [], []
    for image in IMAGES:
        body = body_by_hand(image)
        assert body.sum() == H * 14  # the mask is the body
        soft.append(np.abs(error[0].numpy())[body].mean())
        bone.append(np.abs(error[1].numpy())[body].mean())
    metrics = engine.state.metrics
    assert metrics["val_mae_de_soft"] == pytest.approx(np.mean(soft), rel=1e-4)  # 0.25
    assert metrics["val_mae_de_bone"] == pytest.approx(np.mean(bone), rel=1e-4)  # 0.2
    assert metrics["val_mae"] == pytest.approx((np.mean(soft) + np.mean(bone)) / 2, rel=1e-4)
    assert engine.state.output["mae"].shape == (2,)


def test_best_round_is_the_lowest_mae():
    generator = Decomposer()
    engine = make_validator(generator, IMAGES[:1])
    results = []
    for round_, size in enumerate((0.4, 0.1, 0.3), start=1):
        generator.error = torch.full((2, H, W), size)
        engine.run(global_epoch=round_)
        results.append(engine.state.metrics["val_mae"])
    assert results == pytest.approx([0.4, 0.1, 0.3], rel=1e-4)
    assert engine.state.best_metric == pytest.approx(0.1, rel=1e-4) and engine.state.best_metric_epoch == 2


# ---------------------------------------------------------------------------------------------------- panel


def test_paired_panel_shape_range_and_shared_windows():
    image = IMAGES[0][0]
    truth = np.stack([SOFT * image, BONE * image])
    prediction = truth.copy()
    prediction[1] += 5.0  # far too bright: saturates in the truth's window
    panel = paired_panel(image, prediction, truth)
    assert panel.shape == (1, H, W * 5) and panel.dtype == np.float32
    assert float(panel.min()) >= 0.0 and float(panel.max()) <= 1.0
    tiles = [panel[0, :, n * W:(n + 1) * W] for n in range(5)]
    lo, hi = np.percentile(image, [1.0, 99.5])
    np.testing.assert_allclose(tiles[0], np.clip((image - lo) / (hi - lo), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(tiles[1], tiles[2])  # perfect soft prediction: identical tiles
    lo, hi = np.percentile(truth[1], [1.0, 99.5])
    np.testing.assert_allclose(tiles[4], np.clip((truth[1] - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert np.all(tiles[3] == 1.0)  # the error shows as saturation, not rescaled away


def test_paired_panel_handler_writes_the_first_pair_with_its_tag():
    writer = FakeWriter()
    handler = PairedImagePanel(image_key="se", target_keys=["de_soft", "de_bone"], summary_writer=writer)
    assert handler.tag == "validation/se|pred de_soft|true de_soft|pred de_bone|true de_bone"
    engine = make_validator(Decomposer(), IMAGES)
    handler.attach(engine)
    engine.run(global_epoch=3)
    ((tag, image, step),) = writer.images  # only the first validation pair
    assert tag == handler.tag and step == 3 and image.shape == (1, H, 5 * W)
    first = IMAGES[0][0]
    lo, hi = np.percentile(first, [1.0, 99.5])
    np.testing.assert_allclose(image[0, :, :W], np.clip((first - lo) / (hi - lo), 0, 1), atol=1e-5)
