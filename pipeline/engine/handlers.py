"""Ignite/MONAI handlers rtsynth adds: atomic checkpoints and TensorBoard image panels.

MONAI's ``CheckpointSaver`` writes through a ``DiskSaver`` with ``atomic=False``; an interrupted run
could leave a truncated checkpoint that ``resume`` would then fail on, so checkpoints here are written
to a temporary file and moved into place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.engine import distributed
from pipeline.engine.trainer import unwrap_ddp
from pipeline.errors import InputError
from pipeline.io.atomic import atomic_path

logger = logging.getLogger(__name__)


#: Handlers that log, draw or write files. In a DDP run only rank 0 keeps them; they are picked by class
#: name (not by list position, which breaks silently when a config reorders its handlers).
RANK_ZERO_HANDLERS = frozenset({
    "StatsHandler", "TensorBoardStatsHandler", "TensorBoardImageHandler", "ValidationImagePanel",
    "PairedImagePanel", "BestModelSaver", "AtomicCheckpointSaver", "CheckpointSaver",
})


def handlers_for_rank(handlers: Sequence | None, *, rank: int | None = None) -> list:
    """``handlers`` for this process: all of them on rank 0 (or without ``torch.distributed``), and on
    other ranks only those whose class is not in :data:`RANK_ZERO_HANDLERS` (learning-rate schedules and
    the validation trigger must run on every rank, or the ranks drift apart)."""
    rank = distributed.rank() if rank is None else rank
    handlers = list(handlers or [])
    if rank == 0:
        return handlers
    return [h for h in handlers if type(h).__name__ not in RANK_ZERO_HANDLERS]


def atomic_torch_save(obj, path: str | Path) -> Path:
    with atomic_path(path, overwrite=True) as tmp:  # a checkpoint replaces its predecessor by design
        torch.save(obj, tmp)
    return Path(path)


def _state(obj):
    return unwrap_ddp(obj).state_dict()


def save_model_state(model: torch.nn.Module, path: str | Path) -> Path:
    """A network's weights (unwrapped from DDP) as a bare state dict, written atomically (``models/model.pt``)."""
    return atomic_torch_save(_state(model), path)


def load_generator_state(path: str | Path) -> dict:
    """Generator weights from either file this module writes: ``model.pt`` (a bare state dict, see
    :class:`BestModelSaver`) or ``latest.pt`` (a dict with a ``"generator"`` entry, and an ``"ema"`` entry
    when the run kept a weight average: then the average, the model validation saw, see
    :mod:`pipeline.engine.weight_average`). Tensors only (``weights_only=True``).

    A missing file raises :class:`InputError` (one line): no model there yet is a user's situation (a run that
    has not validated yet, a mistyped ``ckpt_path``), not a bug."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no trained model there (training writes models/model.pt when it validates, "
                         "at the latest when it ends); train first, or point ckpt_path at a model")
    state = torch.load(path, map_location="cpu", weights_only=True)
    average = state.get("ema") if "generator" in state else None
    return average["module"] if average else state.get("generator", state)


def latest_checkpoint(directory: str | Path, *, filename: str = "latest.pt") -> str | None:
    """Path of the checkpoint to resume from, or None for a fresh start."""
    path = Path(directory) / filename
    return str(path) if path.is_file() else None


class AtomicCheckpointSaver:
    """Save ``save_dict`` (name -> object with ``state_dict``) every ``interval`` epochs to
    ``save_dir/filename``, replacing the previous file atomically. Loadable with
    ``torch.load(..., weights_only=True)`` and MONAI's ``CheckpointLoader`` (for resume)."""

    def __init__(self, save_dir: str, save_dict: Mapping, *, filename: str = "latest.pt", interval: int = 1) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = save_dict
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        atomic_torch_save({k: _state(v) for k, v in self.save_dict.items()}, self.path)
        logger.info("epoch %d: checkpoint %s", engine.state.epoch, self.path)


class BestModelSaver:
    """Attached to the validator: when its key metric improved this round, save the generator's
    weights to ``save_dir/filename`` (the bundle's ``models/model.pt``)."""

    def __init__(self, save_dir: str, model: torch.nn.Module, *, filename: str = "model.pt") -> None:
        self.path = Path(save_dir) / filename
        self.model = model

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch == engine.state.epoch:
            save_model_state(self.model, self.path)
            logger.info("best %s %.2f at epoch %d: saved %s", engine.state.key_metric_name,
                        engine.state.best_metric, engine.state.epoch, self.path)


class BestMetricState:
    """The validator's best key metric and its epoch as a checkpoint entry (``state_dict`` /
    ``load_state_dict``). MONAI's evaluator starts every process at "no best yet"; without this entry a
    resumed run's first validation would replace ``models/model.pt`` even when it is worse."""

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        return {"best_metric": float(self.evaluator.state.best_metric),
                "best_metric_epoch": int(self.evaluator.state.best_metric_epoch)}

    def load_state_dict(self, state: Mapping) -> None:
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])


def reapply_schedules(schedulers: Sequence) -> None:
    """Set each optimiser's learning rate to what its (possibly reconfigured) schedule gives at the
    restored epoch. A checkpoint restores the optimiser's last learning rate, which is 0 at the end of a
    Pix2Pix decay: extending a finished run (``--epochs`` larger) would otherwise train a whole epoch at
    lr 0 before the scheduler's next step."""
    for scheduler in schedulers:
        lambdas = getattr(scheduler, "lr_lambdas", None)
        if lambdas is None:
            continue  # only LambdaLR schedules are used here; others keep what they restored
        for group, base_lr, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas):
            group["lr"] = base_lr * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def to_display_range(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Display window [lo, hi] -> [0, 1], clipped (TensorBoard images)."""
    return np.clip((image - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def validation_panel(mr_unit: np.ndarray, sct_hu: np.ndarray, ct_hu: np.ndarray, *, window_hu=(-1000.0, 1500.0), error_hu: float = 500.0) -> np.ndarray:
    """One axial slice as a (1, Y, 4*X) image in [0, 1]: MR | sCT | CT | |sCT - CT|.
    Display windows: sCT/CT ``window_hu``; error 0..``error_hu`` HU."""
    tiles = [to_display_range(mr_unit, -1.0, 1.0), to_display_range(sct_hu, *window_hu), to_display_range(ct_hu, *window_hu),
             to_display_range(np.abs(sct_hu - ct_hu), 0.0, error_hu)]
    panel = np.concatenate([np.rot90(t) for t in tiles], axis=1)  # rot90: anterior up, as radiologists view
    return panel[None].astype(np.float32)


class ValidationImagePanel:
    """Writes MR | sCT | CT | |sCT - CT| (HU) for the first validation subject, same axial slice
    every time, tag ``validation/MR|sCT|CT|error``. The step is the validator's epoch, which MONAI's
    ``ValidationHandler`` sets to the trainer's epoch."""

    def __init__(self, *, summary_writer=None, log_dir: str | None = None, slice_fraction: float = 0.5) -> None:
        if summary_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            summary_writer = SummaryWriter(log_dir=log_dir)
        self.writer = summary_writer
        self.slice_fraction = slice_fraction

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        z = int(round((out["ct_hu"].shape[-1] - 1) * self.slice_fraction))
        panel = validation_panel(out["mr"][..., z], out["sct_hu"][..., z], out["ct_hu"][..., z])
        self.writer.add_image("validation/MR|sCT|CT|error", panel, global_step=engine.state.epoch)
        self.writer.flush()


def attach_resume(trainer: Engine, *, checkpoint_dir: str, load_dict: Mapping, filename: str = "latest.pt",
                  schedulers: Sequence = ()) -> str | None:
    """Resume from ``checkpoint_dir/filename`` when it exists (MONAI ``CheckpointLoader``, which keeps
    the new ``max_epochs`` so a finished run can be extended; then :func:`reapply_schedules` on
    ``schedulers``); otherwise start fresh."""
    from monai.handlers import CheckpointLoader

    path = latest_checkpoint(checkpoint_dir, filename=filename)
    if path is None:
        logger.info("no checkpoint in %s: starting a new run", checkpoint_dir)
        return None
    # Entries added in later versions (the best metric, a time budget's progress) are absent from older
    # checkpoints: resume everything the checkpoint has and say what starts fresh, rather than refuse.
    stored = set(torch.load(path, map_location="cpu", weights_only=True))
    missing = sorted(k for k in load_dict if k not in stored)
    if missing:
        logger.warning("%s has no %s (written by an older rtsynth): those start fresh", path, ", ".join(missing))
    load = {k: unwrap_ddp(v) for k, v in load_dict.items() if k in stored}
    CheckpointLoader(load_path=path, load_dict=load, map_location="cpu").attach(trainer)
    trainer.add_event_handler(Events.STARTED, lambda _: reapply_schedules(schedulers))  # runs after the loader
    logger.info("resuming from %s", path)
    return path
