"""Exponential moving average (EMA) of the generator's weights, the model that is validated and saved.

A few thousand iterations on five subjects leave the last weights wherever the last batches pushed them;
the average over the last ~``1 / (1 - decay)`` iterations is a smoother, usually better-generalising model
(Polyak averaging). This module keeps the average, updates it after every training iteration, stores it in the
checkpoint so a resumed run continues the same average, and gives validation, ``models/model.pt`` and so
inference the averaged network.

Why not ``torch.optim.swa_utils.AveragedModel``: its update copies its update count (a CPU tensor) to the
device at every call, a host synchronisation per iteration on CUDA that would stall the crops prefetched for
the next iteration (``pipeline/engine/trainer.py``), and its EMA keeps one decay from the first update, so the
average of a short run stays dominated by the untrained first weights. Here the count is a Python int and the
decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the warm-up of Tensorflow's
``ExponentialMovingAverage(num_updates=...)`` and timm's ``ModelEmaV2``); the arithmetic is one fused
``lerp`` over all tensors, as in PyTorch's own ``get_ema_multi_avg_fn``.

``decay`` 0 turns it off: :attr:`WeightAverage.evaluation_model` is then the generator itself and nothing
is copied or updated.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events

from pipeline.engine.trainer import unwrap_ddp

logger = logging.getLogger(__name__)


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of the update that follows ``updates`` earlier ones: 0 for the first (it copies the weights), then
    ``min(decay, (1 + updates) / (10 + updates))``: 0.18, 0.25, 0.31, ... reaching 0.999 after 8,990 updates."""
    return 0.0 if updates == 0 else min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """EMA of ``model``'s parameters (buffers are copied), updated at the end of every training iteration.

    Args:
        model: the trained network (optionally DDP-wrapped: the average is of the network inside, the same on
            every rank because DDP keeps the ranks' weights equal).
        decay: weight of the old average per update once warmed up, in [0, 1). 0 = off. 0.999 averages over
            roughly the last thousand iterations.
    """

    def __init__(self, model: torch.nn.Module, *, decay: float = 0.0) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {decay}")
        self.decay = decay
        self.model = unwrap_ddp(model)
        self.updates = 0
        self.averaged: torch.nn.Module | None = None
        if decay > 0.0:
            self.averaged = copy.deepcopy(self.model).eval().requires_grad_(False)

    @property
    def evaluation_model(self) -> torch.nn.Module:
        """What validation evaluates and what ``model.pt`` holds: the average, or the network when off."""
        return self.model if self.averaged is None else self.averaged

    def attach(self, engine: Engine) -> None:
        if self.averaged is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    @torch.no_grad()
    def update(self, engine: Engine | None = None) -> None:
        """Fold the network's current weights into the average (the first update copies them)."""
        if self.averaged is None:
            return
        weight = 1.0 - warmed_up_decay(self.decay, self.updates)
        averaged, current = list(self.averaged.parameters()), [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(averaged, current, weight)  # avg += w * (current - avg), one fused kernel per dtype
        for mine, theirs in zip(self.averaged.buffers(), self.model.buffers(), strict=True):
            mine.copy_(theirs)
        self.updates += 1

    # --- checkpoint entry -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {} if self.averaged is None else {"module": self.averaged.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping) -> None:
        if self.averaged is None:
            if state:
                logger.warning("the checkpoint holds a weight average but ema_decay is 0: it is not used")
            return
        if not state:
            logger.warning("the checkpoint holds no weight average (ema_decay was 0): the average starts now")
            return
        self.averaged.load_state_dict(state["module"])
        self.updates = int(state["updates"])
