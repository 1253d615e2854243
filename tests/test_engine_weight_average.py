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


def test_the_average_follows_the_ema_formula() -> None:
    net = _linear(0.0)
    average = WeightAverage(net, decay=0.75)
    expected = None
    for value in (4.0, 8.0, 0.0):
        _set(net, value)
        average.update()
        # by hand: the first update copies, then avg = 0.75 avg + 0.25 new
        expected = value if expected is None else 0.75 * expected + 0.25 * value
    model = average.evaluation_model
    assert model is not net
    assert torch.allclose(model.weight, torch.full_like(model.weight, expected))  # 0.75 * 5 = 3.75 after 4, 8, 0
    assert expected == pytest.approx(3.75)
    assert torch.equal(net.weight, torch.zeros_like(net.weight))  # the trained network is untouched


def test_attached_it_updates_once_per_iteration() -> None:
    net = _linear(0.0)
    average = WeightAverage(net, decay=0.5)
    engine = Engine(lambda e, b: _set(net, float(e.state.iteration)))
    average.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)  # weights 1, 2, 3 -> 1, 1.5, 2.25
    assert int(average.averaged.n_averaged) == 3
    assert torch.allclose(average.evaluation_model.bias, torch.tensor([2.25]))


def test_checkpoint_round_trip_and_a_checkpoint_without_an_average() -> None:
    net = _linear(2.0)
    average = WeightAverage(net, decay=0.9)
    average.update()
    _set(net, 12.0)
    average.update()  # 0.9 * 2 + 0.1 * 12 = 3
    state = average.state_dict()

    restored = WeightAverage(_linear(0.0), decay=0.9)
    restored.load_state_dict(state)
    assert torch.allclose(restored.evaluation_model.weight, torch.full((1, 2), 3.0))
    assert int(restored.averaged.n_averaged) == 2

    fresh = WeightAverage(_linear(5.0), decay=0.9)
    fresh.load_state_dict({})  # written with ema_decay 0: the average starts now
    assert int(fresh.averaged.n_averaged) == 0
    WeightAverage(_linear(5.0)).load_state_dict(state)  # off now: the stored average is ignored


def test_a_ddp_wrapped_network_is_averaged_unwrapped() -> None:
    net = _linear(1.0)
    average = WeightAverage(_Wrapper(net), decay=0.5)
    average.update()
    assert set(average.evaluation_model.state_dict()) == set(net.state_dict())  # no "module." prefix
    assert WeightAverage(_Wrapper(net)).evaluation_model is net


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_0_1_is_refused(decay) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(_linear(0.0), decay=decay)
