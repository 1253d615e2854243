"""Wall-clock budget: schedule over the budget, clean end with final validation and checkpoint, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from bundle_runner import REPO, run_bundle, tiny_phantom_manifest
from pipeline.engine.budget import (
    BUDGET_MAX_EPOCHS,
    TrainingProgress,
    ValidationSchedule,
    budget_lr_factor,
    budget_max_epochs,
)
from pipeline.errors import InputError

TRAIN = str(REPO / "bundles" / "mri_to_ct" / "configs" / "train.json")
TINY = ["--patch_size", "32", "--num_downs", "5", "--base_channels", "8", "--batch_size", "2",
        "--samples_per_volume", "2", "--amp", "False"]


class FakeClock:
    """Seconds that advance only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lr_factor_linear_cosine_constant():
    assert budget_lr_factor(0.0) == 1.0 and budget_lr_factor(0.49) == 1.0
    assert budget_lr_factor(0.75) == pytest.approx(0.5)
    assert budget_lr_factor(1.0) == 0.0 and budget_lr_factor(1.7) == 0.0  # past the end: stays 0
    assert budget_lr_factor(0.5, schedule="cosine") == pytest.approx(0.5)
    assert budget_lr_factor(0.25, schedule="cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert budget_lr_factor(0.9, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        budget_lr_factor(0.1, schedule="step")


def test_budget_max_epochs():
    assert budget_max_epochs(7, max_minutes=None) == 7
    assert budget_max_epochs(7, max_minutes="null") == 7  # the docs' word for off, as the command line hands it over
    assert budget_max_epochs(7, max_minutes=1.5) == BUDGET_MAX_EPOCHS
    assert budget_max_epochs(7, max_minutes="1.5") == BUDGET_MAX_EPOCHS


class FakeValidator(Engine):
    """Runs like MONAI's ``Evaluator``: ``run(global_epoch)`` leaves ``state.epoch == global_epoch``; each run
    advances ``clock`` by ``seconds`` when given (a validation's duration)."""

    def __init__(self, record: list, batches: int = 1, clock: FakeClock | None = None, seconds: float = 0.0) -> None:
        def step(engine, batch):
            if clock is not None:
                clock.now += seconds

        super().__init__(step)
        self.data_loader = [0] * batches  # as MONAI's Evaluator: what it validates on
        self.add_event_handler(Events.COMPLETED, lambda engine: record.append(engine.state.epoch))

    def run(self, global_epoch: int = 1) -> None:
        self.state.max_epochs, self.state.epoch_length = global_epoch, 1
        self.state.epoch = self.state.iteration = global_epoch - 1
        super().run([0])


def make_engine(clock: FakeClock, seconds_per_iteration: float, log: list) -> Engine:
    def step(engine, batch):
        clock.now += seconds_per_iteration
        log.append((engine.state.epoch, engine.state.iteration, engine.adversarial_on))

    return Engine(step)


def test_budget_stops_mid_epoch_sets_lr_and_validates_once_at_the_end():
    clock, log, validations = FakeClock(), [], []
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    validator = FakeValidator(validations)
    progress = TrainingProgress(max_minutes=1.0, optimizers=[optimizer], clock=clock, adversarial_start_fraction=0.25)
    trainer = make_engine(clock, 10.0, log)  # 10 s per iteration: 6 iterations spend the minute
    progress.attach(trainer)
    ValidationSchedule(validator=validator, progress=progress, interval=1000).attach(trainer)
    lrs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    completed = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    trainer.run(range(4), max_epochs=BUDGET_MAX_EPOCHS)

    assert [it for _, it, _ in log] == [1, 2, 3, 4, 5, 6]  # stops in the middle of epoch 2
    assert completed == [6] and trainer.state.epoch == 2  # COMPLETED fired: the checkpoint saver runs
    assert validations == [2]  # one final validation, at the last epoch
    # lr set from the elapsed fraction before each iteration: 0, 1/6, ... 5/6 of the budget
    assert lrs == pytest.approx([0.2 * budget_lr_factor(k / 6) for k in range(6)])
    # adversarial term from 25 % of the budget on: iterations starting at 0 and 10 s are L1 only
    assert [on for *_, on in log] == [False, False, True, True, True, True]


@pytest.mark.parametrize("max_minutes", [1.0, None])
def test_adversarial_start_fraction_one_is_l1_only_throughout(max_minutes):
    clock, log = FakeClock(), []
    progress = TrainingProgress(max_minutes=max_minutes, clock=clock, adversarial_start_fraction=1.0)
    trainer = make_engine(clock, 10.0, log)
    progress.attach(trainer)
    trainer.run(range(3), max_epochs=BUDGET_MAX_EPOCHS if max_minutes else 2)
    assert len(log) == 6 and not any(on for *_, on in log)


def test_no_second_validation_when_the_last_epoch_validated():
    clock, validations = FakeClock(), []
    validator = FakeValidator(validations)
    progress = TrainingProgress(max_minutes=0.5, clock=clock)
    trainer = make_engine(clock, 10.0, [])
    progress.attach(trainer)
    ValidationSchedule(validator=validator, progress=progress, interval=1).attach(trainer)
    trainer.run(range(3), max_epochs=BUDGET_MAX_EPOCHS)
    assert validations == [1]


def test_validation_every_fraction_of_the_budget_whatever_the_epoch_length():
    clock, validations = FakeClock(), []
    progress = TrainingProgress(max_minutes=1.0, clock=clock)
    trainer = make_engine(clock, 1.0, [])  # 1 s per iteration, epochs of 2 iterations: 30 epochs in the budget
    progress.attach(trainer)
    ValidationSchedule(validator=FakeValidator(validations), progress=progress, interval=1,
                       budget_fraction=0.25).attach(trainer)
    trainer.run(range(2), max_epochs=BUDGET_MAX_EPOCHS)
    # the first epoch end at or after 15 s, 30 s, 45 s; and at the end (60 s, epoch 30)
    assert validations == [8, 15, 23, 30]


def test_validation_takes_at_most_its_share_of_the_budget():
    clock, validations = FakeClock(), []
    progress = TrainingProgress(max_minutes=2.0, clock=clock)
    trainer = make_engine(clock, 1.0, [])  # 1 s per iteration, epochs of 2 iterations
    progress.attach(trainer)
    validator = FakeValidator(validations, clock=clock, seconds=5.0)  # each validation takes 5 s
    ValidationSchedule(validator=validator, progress=progress, interval=1, budget_fraction=0.1,
                       max_share=0.1).attach(trainer)
    trainer.run(range(2), max_epochs=BUDGET_MAX_EPOCHS)
    # epoch e ends after 2e s of training (+ 5 s per validation before it). The first validation is due at
    # 10 % of the budget (12 s: epoch 6, which then ends at 17 s); the next ones are due at 20 %, 30 % ...
    # but wait for 45 s of training after the last one ended (5 s is 10 % of 50 s): at 63 s (epoch 29) and
    # at 114 s (epoch 52); the budget ends in epoch 53 and its final validation runs whatever the share
    assert validations == [6, 29, 52, 53]


def test_validation_every_interval_epochs_without_a_budget():
    clock, validations = FakeClock(), []
    progress = TrainingProgress(clock=clock)
    trainer = make_engine(clock, 1.0, [])
    progress.attach(trainer)
    ValidationSchedule(validator=FakeValidator(validations), progress=progress, interval=3,
                       budget_fraction=0.25).attach(trainer)  # no budget: the fraction does not apply
    trainer.run(range(2), max_epochs=10)
    assert validations == [3, 6, 9, 10]  # and at the end: the last epoch's model is a candidate too


def test_null_from_the_command_line_means_off():
    # `--val_budget_fraction null --max_minutes 3` (the bundle docs' null arrives as the string "null"): a budget,
    # validation every interval epochs instead of every fraction of it
    clock, validations = FakeClock(), []
    progress = TrainingProgress(max_minutes="3", clock=clock)
    assert progress.max_seconds == 180.0
    assert TrainingProgress(max_minutes="null").max_seconds is None
    trainer = make_engine(clock, 1.0, [])
    progress.attach(trainer)
    schedule = ValidationSchedule(validator=FakeValidator(validations), progress=progress, interval=2,
                                  budget_fraction="null", max_share="None")
    assert schedule.budget_fraction is None and schedule.max_share is None
    schedule.attach(trainer)
    trainer.run(range(2), max_epochs=5)
    assert validations == [2, 4, 5]


def test_a_run_shorter_than_the_interval_validates_at_its_end():
    clock, validations = FakeClock(), []
    progress = TrainingProgress(clock=clock)
    trainer = make_engine(clock, 1.0, [])
    progress.attach(trainer)
    ValidationSchedule(validator=FakeValidator(validations), progress=progress, interval=10).attach(trainer)
    trainer.run(range(2), max_epochs=3)
    assert validations == [3]  # without it no models/model.pt would be written, and inference would have none


def test_a_resumed_budget_continues_the_validation_schedule():
    clock, validations = FakeClock(), []
    progress = TrainingProgress(max_minutes=1.0, clock=clock)
    trainer = make_engine(clock, 1.0, [])
    progress.attach(trainer)
    progress.load_state_dict({"elapsed_seconds": 40.0})  # as the checkpoint loader does at STARTED
    ValidationSchedule(validator=FakeValidator(validations), progress=progress, interval=1,
                       budget_fraction=0.25).attach(trainer)
    trainer.run(range(2), max_epochs=BUDGET_MAX_EPOCHS)
    assert validations == [3, 10]  # 45 s (epoch 3 ends at 46 s), then the end (60 s)


def test_without_validation_data_the_last_model_is_saved(tmp_path, caplog):
    clock, validations = FakeClock(), []
    model = torch.nn.Linear(2, 1)
    progress = TrainingProgress(max_minutes=0.1, clock=clock)
    trainer = make_engine(clock, 1.0, [])
    progress.attach(trainer)
    schedule = ValidationSchedule(validator=FakeValidator(validations, batches=0), progress=progress,
                                  model=model, model_path=str(tmp_path / "model.pt"))
    schedule.attach(trainer)
    with caplog.at_level("WARNING"):
        trainer.run(range(2), max_epochs=BUDGET_MAX_EPOCHS)
    assert validations == [] and "training without validation" in caplog.text
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(saved["weight"], model.weight)


def test_bad_validation_options_are_refused():
    progress = TrainingProgress()
    with pytest.raises(ValueError, match="val_interval"):
        ValidationSchedule(validator=FakeValidator([]), progress=progress, interval=0)
    with pytest.raises(ValueError, match="val_budget_fraction"):
        ValidationSchedule(validator=FakeValidator([]), progress=progress, budget_fraction=1.5)
    with pytest.raises(ValueError, match="val_max_share"):
        ValidationSchedule(validator=FakeValidator([]), progress=progress, max_share=1.0)
    with pytest.raises(InputError, match="--val_budget_fraction 'tenth'"):
        ValidationSchedule(validator=FakeValidator([]), progress=progress, budget_fraction="tenth")


def test_without_budget_nothing_changes():
    clock, log = FakeClock(), []
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    progress = TrainingProgress(optimizers=[optimizer], clock=clock)
    trainer = make_engine(clock, 1000.0, log)
    progress.attach(trainer)
    trainer.run(range(2), max_epochs=3)
    assert len(log) == 6 and all(on for *_, on in log)
    assert optimizer.param_groups[0]["lr"] == 0.2


def test_elapsed_time_survives_a_checkpoint():
    clock = FakeClock()
    first = TrainingProgress(max_minutes=1.0, clock=clock)
    first.started(None)
    clock.now += 25.0
    state = first.state_dict()
    assert state == {"elapsed_seconds": 25.0}
    second = TrainingProgress(max_minutes=1.0, clock=clock)
    second.started(None)
    clock.now += 1000.0  # time between the runs (restart) must not count
    second.load_state_dict(state)
    clock.now += 5.0
    assert second.elapsed_seconds() == pytest.approx(30.0)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="max_minutes"):
        TrainingProgress(max_minutes=0)
    for fraction in (-0.1, 1.5):
        with pytest.raises(ValueError, match="adversarial_start_fraction"):
            TrainingProgress(adversarial_start_fraction=fraction)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return tiny_phantom_manifest(tmp_path_factory.mktemp("phantoms"), seed=5)


def test_bundle_with_a_budget_stops_checkpoints_validates_and_resumes(manifest: Path, tmp_path: Path):
    out = tmp_path / "run"
    # a few seconds: far fewer than the 1000 epochs x 50 iterations asked for; validation every 1000 epochs,
    # so the only validation is the final one
    def args(minutes: str) -> list[str]:
        return ["--manifest", str(manifest), "--output_dir", str(out), "--epochs", "1000", "--epoch_length", "50",
                "--val_interval", "1000", "--max_minutes", minutes, "--adversarial_start_fraction", "0.5", *TINY]

    log = run_bundle(TRAIN, *args("0.05"))
    assert "time budget of 0.1 min spent" in log
    checkpoint = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    elapsed = checkpoint["progress"]["elapsed_seconds"]
    assert elapsed >= 3.0
    iterations = checkpoint["trainer"]["iteration"]
    assert 0 < iterations < 1000 * 50
    assert (out / "models" / "model.pt").is_file()  # the final validation saved the best model
    assert "val_mae_hu" in log

    # resume with a larger budget: continues from the stored elapsed time and iteration count
    log = run_bundle(TRAIN, *args("0.1"))
    assert "resuming from" in log
    resumed = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert resumed["progress"]["elapsed_seconds"] >= 6.0
    assert resumed["trainer"]["iteration"] > iterations


def test_bundle_without_a_val_split_trains_and_keeps_the_last_model(manifest: Path, tmp_path: Path):
    import pandas as pd

    table = pd.read_csv(manifest)
    table.loc[table["split"] == "val", "split"] = "train"
    no_val = manifest.parent / "no_val.csv"  # beside it: the manifest's paths are relative to its folder
    table.to_csv(no_val, index=False)
    out = tmp_path / "run"
    log = run_bundle(TRAIN, "--manifest", str(no_val), "--output_dir", str(out), "--epochs", "2", "--epoch_length", "2",
                     "--val_interval", "1", *TINY)
    assert "no validation subjects: training without validation" in log
    assert "Traceback" not in log
    last = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["generator"]
    model = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(model) == set(last) and all(torch.equal(model[k], last[k]) for k in model)
