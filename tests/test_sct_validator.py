"""Tests for pipeline.sct.validator.SCTValidator (a MONAI Evaluator): on tiny head phantoms and an
"identity" generator (the normalised MR itself, or shifted, is the sCT), ``val_mae_hu`` must be the
mean over subjects of the masked HU MAE computed here with numpy; the best round is the lowest MAE;
the output carries the volumes the TensorBoard panel draws; DDP wrappers are bypassed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.loaders import make_loader, validation_transforms
from pipeline.data.manifest import find_subjects
from pipeline.data.phantoms.head import write_phantom_dataset
from pipeline.sct.validator import SCTValidator

PATCH = 32


class ShiftedCentre(torch.nn.Module):
    """Returns the centre input channel plus ``shift`` (shift 0: the identity of test_sct_inference's CentreSlice)."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        return x[:, k // 2 : k // 2 + 1] + self.shift


class DDPLike(torch.nn.Module):
    """Has a ``module`` like DistributedDataParallel; calling the wrapper itself must not happen."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):  # pragma: no cover - the validator must unwrap
        raise AssertionError("validation went through the DDP wrapper")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Records of two tiny phantoms and their preprocessed volumes as numpy (MR unit, CT HU, mask)."""
    root = tmp_path_factory.mktemp("validator")
    write_phantom_dataset(root, n=2, seed=11, size="tiny")
    records = [{k: r[k] for k in ("subject_id", "mr", "ct", "mask")} for r in find_subjects(root).to_dict("records")]
    chain = validation_transforms()
    arrays = []
    for record in records:
        sample = chain(dict(record))
        arrays.append(tuple(sample[k][0].numpy().astype(np.float64) for k in ("mr", "ct", "mask")))
    return records, arrays


def expected_mae(arrays, shift: float = 0.0) -> list[float]:
    """Masked HU MAE of sCT = HU(clip(MR unit + shift, -1, 1)), the [-1, 1] -> [-1024, 3000] HU map written out."""
    maes = []
    for mr, ct, mask in arrays:
        sct_hu = (np.clip(mr + shift, -1.0, 1.0) + 1.0) / 2.0 * 4024.0 - 1024.0
        maes.append(float(np.abs(sct_hu - ct)[mask > 0].mean()))
    return maes


def validator(records, generator, mode: str = "2.5d", **kwargs) -> SCTValidator:
    loader = make_loader(records, validation_transforms(), batch_size=1, shuffle=False, cache=True)
    return SCTValidator(device="cpu", val_data_loader=loader, generator=generator, mode=mode, patch_size=PATCH,
                        slab_size=5 if mode == "2.5d" else 1, sw_batch_size=8, **kwargs)


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
def test_identity_generator_gives_the_masked_hu_mae_of_the_mr_itself(volumes, mode):
    records, arrays = volumes
    engine = validator(records, ShiftedCentre(), mode=mode)
    engine.run()
    per_subject = expected_mae(arrays)
    assert per_subject[0] != pytest.approx(per_subject[1], rel=1e-3)  # the mean over subjects is tested
    assert engine.state.metrics["val_mae_hu"] == pytest.approx(np.mean(per_subject), rel=1e-4)
    assert engine.state.key_metric_name == "val_mae_hu"
    out = engine.state.output  # the last subject's volumes, as the image panel reads them
    mr, ct, _ = arrays[-1]
    assert set(out) == {"mae_hu", "mr", "sct_hu", "ct_hu"}
    assert float(out["mae_hu"]) == pytest.approx(per_subject[-1], rel=1e-4)
    np.testing.assert_allclose(out["mr"], mr, atol=1e-6)
    np.testing.assert_allclose(out["ct_hu"], ct)
    np.testing.assert_allclose(out["sct_hu"], (mr + 1.0) / 2.0 * 4024.0 - 1024.0, atol=0.05)
    assert out["sct_hu"].shape == ct.shape


def test_position_channels_reach_the_network_in_every_plane(volumes):
    """A generator that returns the inferior-superior position channel: the sCT is that channel read as HU
    (numpy here, from the mask's extent along Z), the same from every plane."""
    records, arrays = volumes

    class SuperiorPosition(ShiftedCentre):
        def forward(self, x):
            return x[:, -1:]

    engine = validator(records, SuperiorPosition(), planes="all", position_channels=True)
    engine.run()
    maes = []
    for _, ct, mask in arrays:
        rows = np.flatnonzero(mask.any(axis=(0, 1)))
        low, high = rows[0], rows[-1] + 1
        z = (np.arange(mask.shape[2]) + 0.5 - (low + high) / 2) / ((high - low) / 2)
        sct_hu = (np.clip(np.broadcast_to(z, mask.shape), -1, 1) + 1.0) / 2.0 * 4024.0 - 1024.0
        maes.append(float(np.abs(sct_hu - ct)[mask > 0].mean()))
    assert engine.state.metrics["val_mae_hu"] == pytest.approx(np.mean(maes), rel=1e-4)


def test_key_metric_is_lower_is_better_across_rounds(volumes):
    records, arrays = volumes
    generator = ShiftedCentre()
    engine = validator(records, generator, mode="3d")
    results = []
    for round_, shift in enumerate((0.1, 0.0, -0.2, 0.0), start=1):
        generator.shift = shift
        engine.run(global_epoch=round_)
        results.append(engine.state.metrics["val_mae_hu"])
        assert results[-1] == pytest.approx(np.mean(expected_mae(arrays, shift)), rel=1e-4)
    assert results[1] < results[0] and results[1] < results[2]
    assert engine.state.best_metric == pytest.approx(results[1])
    assert engine.state.best_metric_epoch == 2  # round 4 only ties round 2


def test_ddp_wrapped_generator_is_unwrapped(volumes):
    records, arrays = volumes
    inner = ShiftedCentre(0.05)
    engine = validator(records[:1], DDPLike(inner), mode="3d")
    assert engine.generator is inner
    engine.run()
    assert engine.state.metrics["val_mae_hu"] == pytest.approx(expected_mae(arrays[:1], 0.05)[0], rel=1e-4)
