"""Tests for pipeline.engine.distributed: shards and gathering without a process group and in a real 2-process
gloo group (spawned here: the bundle tests run the same code under ``torchrun``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing

from pipeline.engine.distributed import (
    broadcast_float,
    gather_lists,
    is_distributed,
    rank,
    rank_shard,
    validation_shard,
    world_size,
)

RECORDS = [f"S{i}" for i in range(7)]  # odd: the shards cannot be equal without repeating a record


def test_single_process_is_rank_zero_of_one_and_holds_everything():
    assert not is_distributed() and (rank(), world_size()) == (0, 1)
    for equal_sizes in (True, False):
        assert rank_shard(tuple(RECORDS), equal_sizes=equal_sizes) == RECORDS
    assert gather_lists(("a", "b")) == ["a", "b"]
    assert validation_shard(RECORDS[:1]) == RECORDS[:1] and broadcast_float(2.5) == 2.5


def _budgeted_run(index: int) -> int:
    """A 1-minute budget on a clock that runs twice as fast on rank 1: iterations until the run ends."""
    from ignite.engine import Engine

    from pipeline.engine.budget import BUDGET_MAX_EPOCHS, TrainingProgress

    now = [0.0]
    progress = TrainingProgress(max_minutes=1.0, clock=lambda: now[0])

    def step(engine, batch):
        now[0] += 10.0 * (1 + index)  # rank 0: 10 s per iteration (6 iterations); rank 1 alone would stop at 3

    engine = Engine(step)
    progress.attach(engine)
    engine.run(range(4), max_epochs=BUDGET_MAX_EPOCHS)
    return engine.state.iteration


def _reduced_mean(index: int) -> float:
    """The validator's metric (ignite ``Average``, as SCTValidator's key metric) over this rank's subjects."""
    from ignite.metrics import Average

    average = Average()
    for value in validation_shard([1.0, 2.0, 3.0, 10.0, 20.0]):
        average.update(torch.tensor(value))
    return float(average.compute())


def _worker(index: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=index, world_size=world)
    try:
        result = {
            "rank": rank(), "world_size": world_size(),
            "inference": rank_shard(RECORDS, equal_sizes=False),
            "training": rank_shard(RECORDS, seed=3),
            "gathered": gather_lists([f"failure on rank {index}"] * index),  # rank 0 has none
            "broadcast": broadcast_float(1.5 + index),
            "validation": validation_shard(RECORDS),
            "validation_few": validation_shard(RECORDS[:1]),
            "budget_iterations": _budgeted_run(index),
            "mean": _reduced_mean(index),
        }
    finally:
        torch.distributed.destroy_process_group()
    (Path(out_dir) / f"{index}.json").write_text(json.dumps(result))


@pytest.mark.distributed
def test_two_gloo_processes_shard_and_gather(tmp_path):
    world = 2
    # fork: the workers need not import torch and MONAI again (seconds each on a loaded 2-core machine)
    torch.multiprocessing.start_processes(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world,
                                          start_method="fork")
    results = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(world)]
    assert [(r["rank"], r["world_size"]) for r in results] == [(0, 2), (1, 2)]

    inference = [r["inference"] for r in results]  # dealt in order, each record exactly once
    assert inference == [RECORDS[0::2], RECORDS[1::2]]

    training = [r["training"] for r in results]  # shuffled, equal sizes: one record repeats
    assert len(training[0]) == len(training[1]) == 4
    assert sorted(set(training[0] + training[1])) == RECORDS and training[0] != RECORDS[0::2]

    assert results[0]["gathered"] == results[1]["gathered"] == ["failure on rank 1"]
    assert [r["broadcast"] for r in results] == [1.5, 1.5]  # rank 0's value everywhere
    assert [r["validation"] for r in results] == [RECORDS[0::2], RECORDS[1::2]]
    assert [r["validation_few"] for r in results] == [RECORDS[:1]] * 2  # fewer subjects than ranks: all on each
    # rank 0's clock decides the budget for both: 6 iterations of its 10 s, though rank 1's clock ran twice as fast
    assert [r["budget_iterations"] for r in results] == [6, 6]
    # sharded validation, reduced: the mean over all five subjects on every rank
    assert [r["mean"] for r in results] == [pytest.approx(7.2), pytest.approx(7.2)]
