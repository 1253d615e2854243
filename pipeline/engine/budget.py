"""Wall-clock training budget and training progress.

Users compare recipes by "HU per minute", so a run can be given ``max_minutes`` instead of a number of
epochs. :class:`TrainingProgress` is one handler on the trainer that

- measures the training time spent (stored in the checkpoint, so a resumed run continues the same budget),
- ends the run cleanly when the budget is spent: the current epoch is closed and the trainer's ``COMPLETED``
  event lets :class:`ValidationSchedule` validate once more (so ``models/model.pt`` is the best *validated*
  model) and the checkpoint saver write a final ``latest.pt``,
- sets the learning rate from the elapsed fraction of the budget (Pix2Pix constant-then-linear decay or
  cosine), because with a budget the number of epochs is not known in advance,
- switches the adversarial term on after ``adversarial_start_fraction`` of the training (L1 warm-up:
  the discriminator is not trained before that, so warm-up iterations are cheaper too).

Without a budget and with no warm-up it changes nothing (the epoch schedules of the config apply).

Under ``torchrun`` rank 0's clock decides for every rank (:func:`pipeline.engine.distributed.broadcast_float`
once per iteration): the ranks run the same iterations with the same learning rates and stop together.

:class:`ValidationSchedule` decides when the validator runs: every ``interval`` epochs, or under a budget
every ``budget_fraction`` of it (time, not epochs of whatever length: with few subjects an epoch can be a
couple of iterations, and validating every few of them once took 69 % of a 20-minute budget).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from ignite.engine import Engine, Events

from pipeline.engine.distributed import broadcast_float, is_distributed, rank
from pipeline.engine.handlers import save_model_state
from pipeline.errors import as_optional_number

logger = logging.getLogger(__name__)

#: ``max_epochs`` of a budgeted run: large enough never to be reached, the budget ends the run.
BUDGET_MAX_EPOCHS = 1_000_000
BUDGET_SCHEDULES = ("linear", "cosine", "constant")


def budget_max_epochs(epochs: int, *, max_minutes: float | None) -> int:
    """The trainer's ``max_epochs``: ``epochs`` without a budget, otherwise effectively unlimited."""
    return int(epochs) if as_optional_number(max_minutes, name="max_minutes") is None else BUDGET_MAX_EPOCHS


def budget_lr_factor(fraction: float, *, schedule: str = "linear") -> float:
    """Learning-rate factor at ``fraction`` (0..1) of the budget.

    ``linear``: 1 for the first half, then linearly to 0 at the end (the Pix2Pix schedule over time);
    ``cosine``: ``0.5 * (1 + cos(pi * fraction))``; ``constant``: 1.
    """
    if schedule not in BUDGET_SCHEDULES:
        raise ValueError(f"budget schedule must be one of {BUDGET_SCHEDULES}, got {schedule!r}")
    f = min(max(float(fraction), 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * f))
    return 1.0 if f < 0.5 else 2.0 * (1.0 - f)


class TrainingProgress:
    """Budget, learning-rate schedule over the budget and adversarial warm-up for one trainer.

    Args:
        max_minutes: wall-clock budget of training in minutes (None: no budget, the run lasts
            ``max_epochs``). Validation time counts: the budget is what the user waits.
        optimizers: whose learning rate follows :func:`budget_lr_factor` under a budget; their current
            learning rates (at construction, i.e. from the config) are the base rates.
        schedule: ``linear``, ``cosine`` or ``constant`` (see :func:`budget_lr_factor`).
        adversarial_start_fraction: fraction of the training (of the budget, or of ``max_epochs`` *
            ``epoch_length`` iterations without one) trained with the L1 (+ extras) loss only; 1.0 = the
            whole run (a plain regression network: no discriminator step, no adversarial term).
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(
        self,
        *,
        max_minutes: float | None = None,
        optimizers: Sequence[torch.optim.Optimizer] = (),
        schedule: str = "linear",
        adversarial_start_fraction: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        max_minutes = as_optional_number(max_minutes, name="max_minutes")
        if max_minutes is not None and max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {max_minutes}")
        if not 0.0 <= adversarial_start_fraction <= 1.0:
            raise ValueError(f"adversarial_start_fraction must be in [0, 1], got {adversarial_start_fraction}")
        budget_lr_factor(0.0, schedule=schedule)  # validates the name now, not after minutes of training
        self.max_seconds = None if max_minutes is None else 60.0 * max_minutes
        self.optimizers = list(optimizers)
        self.base_lrs = [[group["lr"] for group in opt.param_groups] for opt in self.optimizers]
        self.schedule = schedule
        self.adversarial_start_fraction = float(adversarial_start_fraction)
        self.clock = clock
        self.elapsed_before = 0.0  # seconds spent by earlier runs (restored from the checkpoint)
        self._started_at: float | None = None
        self._shared_elapsed: float | None = None  # rank 0's elapsed seconds at the last iteration's end (DDP)

    # --- checkpoint entry -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"elapsed_seconds": self.elapsed_seconds()}

    def load_state_dict(self, state: Mapping) -> None:
        self.elapsed_before = float(state["elapsed_seconds"])
        if self._started_at is not None:
            self._started_at = self.clock()

    # --- progress ---------------------------------------------------------------------------------
    def elapsed_seconds(self) -> float:
        """Training seconds so far, earlier (resumed) runs included."""
        running = 0.0 if self._started_at is None else self.clock() - self._started_at
        return self.elapsed_before + running

    def budget_seconds(self) -> float:
        """Elapsed seconds as the budget counts them: this process's clock, or under ``torchrun`` rank 0's as
        it was broadcast at the end of the last iteration (the same number on every rank)."""
        if self._shared_elapsed is not None:
            return self._shared_elapsed
        return self.elapsed_seconds()

    def fraction(self, engine: Engine) -> float:
        """Fraction of the training done: of the budget, or of the planned iterations without one."""
        if self.max_seconds is not None:
            return self.budget_seconds() / self.max_seconds
        total = (engine.state.epoch_length or 0) * (engine.state.max_epochs or 0)
        return engine.state.iteration / total if total else 0.0

    # --- events -----------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.adversarial_on = self.adversarial_start_fraction == 0.0

    def started(self, engine: Engine) -> None:
        self._started_at = self.clock()
        self._shared_elapsed = None

    def iteration_started(self, engine: Engine) -> None:
        fraction = self.fraction(engine)
        engine.adversarial_on = fraction >= self.adversarial_start_fraction and self.adversarial_start_fraction < 1.0
        if self.max_seconds is None:
            return  # the config's epoch schedules own the learning rate
        factor = budget_lr_factor(fraction, schedule=self.schedule)
        for opt, base in zip(self.optimizers, self.base_lrs):
            for group, lr in zip(opt.param_groups, base):
                group["lr"] = lr * factor

    def iteration_completed(self, engine: Engine) -> None:
        if self.max_seconds is None:
            return
        if is_distributed():  # one collective per iteration: every rank takes rank 0's clock
            self._shared_elapsed = broadcast_float(self.elapsed_seconds())
        if self.budget_seconds() < self.max_seconds:
            return
        logger.info("time budget of %.1f min spent at epoch %d, iteration %d: closing the run",
                    self.max_seconds / 60.0, engine.state.epoch, engine.state.iteration)
        # close this epoch and make it the last: EPOCH_COMPLETED (checkpoint, maybe validation) and then
        # COMPLETED (final validation, final checkpoint) fire as in a run that ran out of epochs
        engine.state.max_epochs = engine.state.epoch
        engine.terminate_epoch()



class ValidationSchedule:
    """Runs ``validator`` during training (attached to the trainer): at the end of every ``interval``-th epoch,
    or, with a time budget (``progress.max_seconds``) and ``budget_fraction``, at the end of the first epoch
    after each further ``budget_fraction`` of the budget; and once more when the run ends unless its last
    epoch just validated, with or without a budget (so ``models/model.pt`` is the best validated model, the
    last epochs included, and a run shorter than ``interval`` epochs still writes one).

    Without validation subjects (``validator`` has no batches, e.g. a manifest without a ``val`` split) the
    run trains without validation: a warning at the start, and at the end ``model`` is saved to
    ``model_path`` (the last model in place of the best one).

    ``max_share`` (with a budget): validation may take at most this share of the time. After a validation
    that took ``d`` seconds the next one waits at least ``d * (1 - max_share) / max_share`` seconds of
    training, whatever ``budget_fraction`` says: a whole-volume, three-plane validation at 1 mm takes a
    minute on one CPU thread, and ten of them would eat half of a 20-minute budget.

    The validator's run is given the trainer's epoch, as MONAI's ``ValidationHandler`` does (TensorBoard
    steps). Every rank runs it (the metric is reduced over the ranks; the decision to validate uses only
    numbers every rank shares: rank 0's clock and rank 0's validation time); saving is left to rank 0's
    handlers.
    """

    def __init__(self, *, validator: Engine, progress: TrainingProgress, interval: int = 1,
                 budget_fraction: float | None = None, max_share: float | None = 0.1,
                 model: torch.nn.Module | None = None, model_path: str | None = None) -> None:
        if int(interval) < 1:
            raise ValueError(f"val_interval must be a positive number of epochs, got {interval}")
        budget_fraction = as_optional_number(budget_fraction, name="val_budget_fraction")
        max_share = as_optional_number(max_share, name="val_max_share")
        if budget_fraction is not None and not 0.0 < budget_fraction <= 1.0:
            raise ValueError(f"val_budget_fraction must be in (0, 1], got {budget_fraction}")
        self.validator, self.progress = validator, progress
        self.interval = int(interval)
        self.budget_fraction = budget_fraction
        if max_share is not None and not 0.0 < max_share < 1.0:
            raise ValueError(f"val_max_share must be in (0, 1), got {max_share}")
        self.max_share = max_share
        self._last_end: float | None = None  # budget seconds when the last validation ended
        self._last_seconds = 0.0  # how long it took (rank 0's clock)
        self.model, self.model_path = model, model_path
        self._next_fraction: float | None = None  # set at the run's first iteration (after a resume's loading)
        self._validated_epoch: int | None = None

    @property
    def has_data(self) -> bool:
        loader = getattr(self.validator, "data_loader", None)
        return loader is None or len(loader) > 0

    @property
    def timed(self) -> bool:
        return self.progress.max_seconds is not None and self.budget_fraction is not None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self._next_fraction = None
        if not self.has_data:
            logger.warning("no validation subjects: training without validation; the last model will be saved "
                           "as %s", self.model_path or "the model")

    def _schedule_after(self, fraction: float) -> None:
        step = self.budget_fraction
        self._next_fraction = step * (math.floor(fraction / step + 1e-9) + 1)

    def iteration_started(self, engine: Engine) -> None:
        # a resumed run continues the schedule where its budget stands (the checkpoint is loaded by now)
        if self._next_fraction is None and self.timed:
            self._schedule_after(self.progress.fraction(engine))

    def _validate(self, engine: Engine) -> None:
        started, now = self.progress.elapsed_seconds(), self.progress.budget_seconds()
        self.validator.run(engine.state.epoch)
        self._validated_epoch = engine.state.epoch
        self._last_seconds = broadcast_float(self.progress.elapsed_seconds() - started)  # rank 0's, on every rank
        self._last_end = now + self._last_seconds

    def _too_soon(self) -> bool:
        """True while the training since the last validation is shorter than ``max_share`` allows."""
        if self.max_share is None or self._last_end is None:
            return False
        since = self.progress.budget_seconds() - self._last_end
        return since < self._last_seconds * (1.0 - self.max_share) / self.max_share

    def epoch_completed(self, engine: Engine) -> None:
        if not self.has_data:
            return
        if self.timed:
            fraction = self.progress.fraction(engine)
            if (self._next_fraction is not None and fraction + 1e-9 < self._next_fraction) or self._too_soon():
                return
            self._schedule_after(fraction)
        elif engine.state.epoch % self.interval:
            return
        self._validate(engine)

    def completed(self, engine: Engine) -> None:
        if not self.has_data:
            if self.model is not None and self.model_path is not None and rank() == 0:
                save_model_state(self.model, self.model_path)
                logger.warning("no validation: saved the last model as %s", self.model_path)
            return
        if self._validated_epoch != engine.state.epoch:
            self._validate(engine)
