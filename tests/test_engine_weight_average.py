"""The generator's weight average (EMA): the arithmetic against a hand-computed average, off by default,
checkpoint round trip, DDP unwrapping and the model that validation and ``model.pt`` see."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.engine.weight_average import WeightAverage


class _Wrapper(torch.nn.Module):
    """Stands in for ``DistributedDataParallel``: the network under ``.module``."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def _linear(value: float) -> torch.nn.Linear:
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def _set(net: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


def test_off_by_default_is_the_network_itself() -> None:
    net = _linear(1.0)
    average = WeightAverage(net)
    assert average.evaluation_model is net and average.state_dict() == {}
    engine = Engine(lambda e, b: None)
    average.attach(engine)
    assert not engine.has_event_handler(average.update, Events.ITERATION_COMPLETED)


def test_the_average_ramps_up_then_follows_the_ema_formula() -> None:
    net = _linear(0.0)
    average = WeightAverage(net, decay=0.75)
    for value in (4.0, 8.0, 0.0):
        _set(net, value)
        average.update()
    # by hand: copy 4; decay 2/11: 4 * 2/11 + 8 * 9/11 = 80/11; decay 3/12: 80/11 * 0.25 + 0 = 20/11
    assert average.evaluation_model is not net
    assert torch.allclose(average.evaluation_model.weight, torch.full((1, 2), 20.0 / 11.0))
    assert torch.equal(net.weight, torch.zeros_like(net.weight))  # the trained network is untouched

    _set(net, 2.0)
    for _ in range(40):  # (1 + n) / (10 + n) passes 0.75 at n = 26: from then on the decay is 0.75
        average.update()
    _set(net, 6.0)
    average.update()
    expected = 0.75 * 2.0 + 0.25 * 6.0  # the average had converged to 2 (within 1e-6)
    assert torch.allclose(average.evaluation_model.bias, torch.tensor([expected]), atol=1e-5)


def test_attached_it_updates_once_per_iteration() -> None:
    net = _linear(0.0)
    average = WeightAverage(net, decay=0.5)
    engine = Engine(lambda e, b: _set(net, float(e.state.iteration)))
    average.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)  # weights 1, 2, 3; decays 0, 2/11, 3/12 -> 1, 20/11, (5/11 + 9/4)
    assert average.updates == 3
    assert torch.allclose(average.evaluation_model.bias, torch.tensor([0.25 * 20 / 11 + 0.75 * 3]))


def test_checkpoint_round_trip_and_a_checkpoint_without_an_average() -> None:
    net = _linear(2.0)
    average = WeightAverage(net, decay=0.9)
    average.update()
    _set(net, 13.0)
    average.update()  # decay 2/11: 2 * 2/11 + 13 * 9/11 = 11
    state = average.state_dict()

    restored = WeightAverage(_linear(0.0), decay=0.9)
    restored.load_state_dict(state)
    assert torch.allclose(restored.evaluation_model.weight, torch.full((1, 2), 11.0))
    assert restored.updates == 2

    fresh = WeightAverage(_linear(5.0), decay=0.9)
    fresh.load_state_dict({})  # written with ema_decay 0: the average starts now
    assert fresh.updates == 0
    WeightAverage(_linear(5.0)).load_state_dict(state)  # off now: the stored average is ignored


def test_a_ddp_wrapped_network_is_averaged_unwrapped() -> None:
    net = _linear(1.0)
    average = WeightAverage(_Wrapper(net), decay=0.5)
    average.update()
    assert set(average.evaluation_model.state_dict()) == set(net.state_dict())  # no "module." prefix
    assert not any(p.requires_grad for p in average.evaluation_model.parameters())
    assert WeightAverage(_Wrapper(net)).evaluation_model is net


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_0_1_is_refused(decay) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(_linear(0.0), decay=decay)
