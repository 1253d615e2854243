"""Tests for pipeline.engine.handlers: which handlers a DDP rank keeps (by class name, whatever their
position), atomic checkpoints and loading generator weights from either checkpoint layout, the resume
path, ``BestModelSaver`` on a MONAI evaluator (saves only when the key metric improved),
``AtomicCheckpointSaver``, display-range scaling and the MR | sCT | CT | error panel.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Average
from monai.engines import Evaluator
from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, ValidationHandler

from pipeline.engine.handlers import (
    RANK_ZERO_HANDLERS,
    AtomicCheckpointSaver,
    BestModelSaver,
    ValidationImagePanel,
    atomic_torch_save,
    attach_resume,
    handlers_for_rank,
    latest_checkpoint,
    load_generator_state,
    to_display_range,
    validation_panel,
)
from pipeline.errors import InputError
from pipeline.xray.validator import PairedImagePanel


class FakeWriter:
    """Stands in for a TensorBoard ``SummaryWriter``: records ``add_image`` calls."""

    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray, int]] = []

    def add_image(self, tag, image, global_step=None) -> None:
        self.images.append((tag, np.asarray(image), global_step))

    def flush(self) -> None:
        pass


def tiny_model(value: float = 0.0) -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(-value)
    return model


def assert_state_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0)


def no_temp_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------------- ranks


def make_handlers(tmp_path):
    """One of each kind: logging/drawing/saving handlers (rank 0 only) and schedule/validation ones."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    every_rank = [LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)),
                  ValidationHandler(interval=1, validator=None)]
    rank_zero = [
        StatsHandler(name="test_handlers"),
        type("TensorBoardStatsHandler", (), {})(),  # stand-ins: the real ones open event files
        type("TensorBoardImageHandler", (), {})(),
        ValidationImagePanel(summary_writer=FakeWriter()),
        PairedImagePanel(image_key="se", target_keys=["de_soft"], summary_writer=FakeWriter()),
        BestModelSaver(str(tmp_path), model),
        AtomicCheckpointSaver(str(tmp_path), {"generator": model}),
        CheckpointSaver(save_dir=str(tmp_path), save_dict={"generator": model}),
    ]
    assert {type(h).__name__ for h in rank_zero} == set(RANK_ZERO_HANDLERS)
    return every_rank, rank_zero


def test_rank_zero_keeps_every_handler_in_order(tmp_path):
    every_rank, rank_zero = make_handlers(tmp_path)
    handlers = [rank_zero[0], every_rank[0], *rank_zero[1:], every_rank[1]]
    kept = handlers_for_rank(handlers, rank=0)
    assert kept == handlers and kept is not handlers
    assert handlers_for_rank(tuple(handlers)) == handlers  # no torch.distributed: rank 0
    assert handlers_for_rank(None, rank=0) == [] and handlers_for_rank(None, rank=3) == []


@pytest.mark.parametrize("order", ["schedules-first", "schedules-last-and-between"])
def test_other_ranks_drop_logging_and_saving_handlers_wherever_they_are(tmp_path, order):
    every_rank, rank_zero = make_handlers(tmp_path)
    if order == "schedules-first":
        handlers = every_rank + rank_zero
    else:
        handlers = rank_zero[:3] + [every_rank[1]] + rank_zero[3:] + [every_rank[0]]
    expected = [h for h in handlers if h in every_rank]  # the relative order is kept
    for rank in (1, 2):
        kept = handlers_for_rank(handlers, rank=rank)
        assert kept == expected
        assert all(type(h).__name__ not in RANK_ZERO_HANDLERS for h in kept)


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_atomic_torch_save_and_load_a_bare_state_dict(tmp_path):
    model = tiny_model(0.25)
    path = atomic_torch_save(model.state_dict(), tmp_path / "models" / "model.pt")
    assert path == tmp_path / "models" / "model.pt" and path.is_file()
    assert_state_equal(load_generator_state(path), model.state_dict())
    replacement = tiny_model(-2.0)
    atomic_torch_save(replacement.state_dict(), path)  # a checkpoint replaces its predecessor
    assert_state_equal(load_generator_state(path), replacement.state_dict())
    assert no_temp_files(path.parent)


def test_load_generator_state_picks_the_generator_of_a_training_checkpoint(tmp_path):
    generator, discriminator = tiny_model(1.0), tiny_model(7.0)
    path = atomic_torch_save({"generator": generator.state_dict(), "discriminator": discriminator.state_dict()},
                             tmp_path / "latest.pt")
    state = load_generator_state(path)
    assert_state_equal(state, generator.state_dict())
    fresh = tiny_model(0.0)
    fresh.load_state_dict(state)
    assert float(fresh.weight.detach()[0, 0]) == 1.0


class Payload:
    def __reduce__(self):  # arbitrary code on unpickling: weights_only loading must refuse it
        return (print, ("unpickled",))


def test_load_generator_state_refuses_pickled_objects(tmp_path):
    path = atomic_torch_save({"generator": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_generator_state(path)


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "latest.pt").mkdir()  # a folder of that name is no checkpoint
    assert latest_checkpoint(tmp_path) is None
    atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    assert latest_checkpoint(tmp_path, filename="other.pt") == str(tmp_path / "other.pt")
    assert latest_checkpoint(tmp_path / "missing") is None


def test_attach_resume_loads_weights_when_a_checkpoint_exists(tmp_path):
    model = tiny_model(0.0)
    trainer = Engine(lambda engine, batch: None)
    assert attach_resume(trainer, checkpoint_dir=str(tmp_path), load_dict={"generator": model}) is None
    atomic_torch_save({"generator": tiny_model(3.0).state_dict()}, tmp_path / "latest.pt")
    path = attach_resume(trainer, checkpoint_dir=str(tmp_path), load_dict={"generator": model})
    assert path == str(tmp_path / "latest.pt")
    assert float(model.weight.detach()[0, 0]) == 0.0  # loading happens when the run starts
    trainer.run([0], max_epochs=1)
    assert float(model.weight.detach()[0, 0]) == 3.0 and float(model.bias.detach()[0]) == -3.0


def test_atomic_checkpoint_saver_writes_every_interval_and_at_the_end(tmp_path):
    generator, discriminator = tiny_model(0.0), tiny_model(5.0)
    saved_at = []

    def step(engine, batch):
        with torch.no_grad():
            generator.weight.fill_(engine.state.epoch)

    trainer = Engine(step)
    saver = AtomicCheckpointSaver(str(tmp_path), {"generator": generator, "discriminator": discriminator}, interval=2)
    saver.attach(trainer)

    def record(engine):
        path = tmp_path / "latest.pt"
        saved_at.append((engine.state.epoch, path.is_file() and float(load_generator_state(path)["weight"][0, 0])))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)
    trainer.run([0], max_epochs=3)
    # epoch 1: nothing yet; epoch 2: saved (weights 2); epoch 3: not an interval (still 2) ...
    assert saved_at == [(1, False), (2, 2.0), (3, 2.0)]
    # ... but the run's end saves the final state
    final = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert set(final) == {"generator", "discriminator"}
    assert float(final["generator"]["weight"][0, 0]) == 3.0 and float(final["discriminator"]["weight"][0, 0]) == 5.0
    assert no_temp_files(tmp_path)


class ScriptedEvaluator(Evaluator):
    """A MONAI evaluator whose key metric (lower is better, as in the sCT validator) is scripted per round."""

    def __init__(self, values, handlers):
        super().__init__(device="cpu", val_data_loader=torch.utils.data.DataLoader([0.0]),
                         key_val_metric={"val_mae": Average(output_transform=lambda out: out["mae"])},
                         metric_cmp_fn=lambda current, best: best < 0 or current < best,
                         val_handlers=handlers, decollate=False)
        self.values = list(values)

    def _iteration(self, engine, batchdata):
        return {"mae": torch.tensor(engine.values[engine.state.epoch - 1])}


def test_best_model_saver_saves_only_when_the_key_metric_improves(tmp_path):
    model = tiny_model(0.0)
    saver = BestModelSaver(str(tmp_path / "models"), model)
    metrics = [5.0, 3.0, 4.0, 3.0, 2.0]
    evaluator = ScriptedEvaluator(metrics, [saver])
    stored, best = [], float("inf")
    for round_ in range(1, len(metrics) + 1):
        with torch.no_grad():
            model.weight.fill_(round_)  # the weights this round would save
        evaluator.run(global_epoch=round_)
        path = tmp_path / "models" / "model.pt"
        stored.append(float(load_generator_state(path)["weight"][0, 0]))
        best = min(best, metrics[round_ - 1])
        assert evaluator.state.best_metric == best
    # rounds 1, 2 and 5 improved; a tie (round 4) or a worse round keeps the earlier weights
    assert stored == [1.0, 2.0, 2.0, 2.0, 5.0]
    assert evaluator.state.best_metric_epoch == 5


def test_best_model_saver_called_directly_checks_the_epoch(tmp_path):
    model = tiny_model(1.5)
    saver = BestModelSaver(str(tmp_path), model, filename="best.pt")
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.best_metric_epoch = 4, 3
    engine.state.key_metric_name, engine.state.best_metric = "val_mae_hu", 10.0
    saver(engine)
    assert not (tmp_path / "best.pt").exists()
    engine.state.best_metric_epoch = 4
    saver(engine)
    assert_state_equal(load_generator_state(tmp_path / "best.pt"), model.state_dict())


# ---------------------------------------------------------------------------------------------------- display


def test_to_display_range_maps_the_window_to_unit_interval():
    image = np.array([-2000.0, -1000.0, 250.0, 1500.0, 4000.0])
    np.testing.assert_allclose(to_display_range(image, -1000.0, 1500.0), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(to_display_range(np.array([-1.0, 0.0, 0.5]), -1.0, 1.0), [0.0, 0.5, 0.75])
    flat = to_display_range(np.array([2.9, 3.0, 3.1]), 3.0, 3.0)  # empty window: no division by zero
    assert np.all(np.isfinite(flat)) and list(flat) == [0.0, 0.0, 1.0]


def test_validation_panel_tiles_shape_values_and_orientation():
    sx, sy = 6, 4  # a non-square slice: shows which axis goes where
    mr = np.full((sx, sy), -1.0)
    mr[0, sy - 1] = 1.0  # x = 0 (patient's left), most anterior y
    ct = np.full((sx, sy), 0.0)
    sct = ct.copy()
    sct[sx - 1, 0] = 250.0  # x = last (right), most posterior
    panel = validation_panel(mr, sct, ct)
    assert panel.shape == (1, sy, 4 * sx) and panel.dtype == np.float32
    assert float(panel.min()) >= 0.0 and float(panel.max()) <= 1.0
    tiles = [panel[0, :, n * sx:(n + 1) * sx] for n in range(4)]
    # anterior up, x (left -> right) along the columns
    assert tiles[0][0, 0] == 1.0 and tiles[0].sum() == 1.0
    hu_zero = (0.0 + 1000.0) / 2500.0  # 0 HU in the default [-1000, 1500] window
    np.testing.assert_allclose(tiles[2], hu_zero, atol=1e-6)
    assert tiles[1][sy - 1, sx - 1] == pytest.approx((250.0 + 1000.0) / 2500.0)
    error = np.zeros((sy, sx))
    error[sy - 1, sx - 1] = 250.0 / 500.0  # |sCT - CT| over 0..500 HU
    np.testing.assert_allclose(tiles[3], error, atol=1e-6)


def test_validation_image_panel_writes_the_requested_slice():
    writer = FakeWriter()
    panel = ValidationImagePanel(summary_writer=writer, slice_fraction=0.5)
    engine = Engine(lambda e, b: None)
    z = np.arange(5, dtype=float)
    ct = np.broadcast_to(z * 100.0, (3, 2, 5)).copy()  # slice z holds 100 z HU
    engine.state.output = {"mr": np.zeros((3, 2, 5)), "sct_hu": ct.copy(), "ct_hu": ct}
    engine.state.epoch = 7
    panel(engine)
    ((tag, image, step),) = writer.images
    assert tag == "validation/MR|sCT|CT|error" and step == 7
    assert image.shape == (1, 2, 12)
    np.testing.assert_allclose(image[0, :, 6:9], (200.0 + 1000.0) / 2500.0)  # slice round(4 * 0.5) = 2


def test_extending_a_finished_run_does_not_resume_at_lr_zero():
    from pipeline.engine.handlers import reapply_schedules
    from pipeline.engine.trainer import constant_then_linear_decay

    weight = torch.nn.Parameter(torch.zeros(1))
    finished_opt = torch.optim.Adam([weight], lr=1e-3)
    finished = constant_then_linear_decay(finished_opt, constant_epochs=2, decay_epochs=2)
    for _ in range(4):
        finished_opt.step()
        finished.step()
    assert finished_opt.param_groups[0]["lr"] == 0.0  # the end of a Pix2Pix decay
    # resume with twice the epochs: optimiser and scheduler state come from the checkpoint
    optimizer = torch.optim.Adam([weight], lr=1e-3)
    extended = constant_then_linear_decay(optimizer, constant_epochs=4, decay_epochs=4)
    optimizer.load_state_dict(finished_opt.state_dict())
    extended.load_state_dict(finished.state_dict())
    assert optimizer.param_groups[0]["lr"] == 0.0  # what the checkpoint alone gives
    reapply_schedules([extended])
    expected = 1e-3 * (1.0 - (4 - 4 + 1) / (4 + 1))  # the new schedule at epoch 4, written out by hand
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert extended.get_last_lr() == [pytest.approx(expected)]


def test_resume_from_an_older_checkpoint_without_newer_entries(tmp_path, caplog):
    """A checkpoint from before the best-metric entry resumes what it has and warns about the rest."""
    from ignite.engine import Engine

    from pipeline.engine.handlers import attach_resume

    weight = torch.nn.Linear(2, 1)
    torch.save({"generator": weight.state_dict()}, tmp_path / "latest.pt")  # no "best" entry
    resumed = torch.nn.Linear(2, 1)

    class Best:
        loaded = False

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            Best.loaded = True

    engine = Engine(lambda e, b: None)
    assert attach_resume(engine, checkpoint_dir=str(tmp_path), load_dict={"generator": resumed, "best": Best()})
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(resumed.weight, weight.weight)
    assert not Best.loaded and "has no best" in caplog.text


def test_load_generator_state_without_a_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no trained model there"):
        load_generator_state(tmp_path / "models" / "model.pt")
