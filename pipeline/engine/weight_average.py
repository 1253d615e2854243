"""Exponential moving average (EMA) of the generator's weights, the model that is validated and saved.

A few thousand iterations on five subjects leave the last weights wherever the last batches pushed them;
the average over the last ~``1 / (1 - decay)`` iterations is a smoother, usually better-generalising model
(Polyak averaging). The averaging itself is PyTorch's (``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn``); this module only wires it into the engine: an update after every training
iteration, a checkpoint entry so a resumed run continues the same average, and the model that validation,
``models/model.pt`` and inference see.

``decay`` 0 turns it off: :attr:`WeightAverage.evaluation_model` is then the generator itself and nothing
is copied or updated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.engine.trainer import unwrap_ddp

logger = logging.getLogger(__name__)


class WeightAverage:
    """EMA of ``model``'s parameters, updated at the end of every training iteration.

    Args:
        model: the trained network (optionally DDP-wrapped: the average is of the network inside, the same on
            every rank because DDP keeps the ranks' weights equal).
        decay: weight of the old average per update, in [0, 1). 0 = off. 0.999 averages over roughly the last
            thousand iterations.
    """

    def __init__(self, model: torch.nn.Module, *, decay: float = 0.0) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {decay}")
        self.decay = decay
        self.model = unwrap_ddp(model)
        self.averaged: AveragedModel | None = None
        if decay > 0.0:
            # use_buffers: normalisation statistics, if a network keeps any, are averaged with the weights
            self.averaged = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def evaluation_model(self) -> torch.nn.Module:
        """What validation evaluates and what ``model.pt`` holds: the average, or the network when off."""
        return self.model if self.averaged is None else self.averaged.module

    def attach(self, engine: Engine) -> None:
        if self.averaged is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def update(self, engine: Engine | None = None) -> None:
        """Fold the network's current weights into the average (the first call copies them)."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    # --- checkpoint entry -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {} if self.averaged is None else self.averaged.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        if self.averaged is None:
            if state:
                logger.warning("the checkpoint holds a weight average but ema_decay is 0: it is not used")
            return
        if not state:
            logger.warning("the checkpoint holds no weight average (ema_decay was 0): the average starts now")
            return
        self.averaged.load_state_dict(state)
