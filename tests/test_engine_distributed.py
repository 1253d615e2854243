"""Tests for pipeline.engine.distributed: shards and gathering without a process group and in a real 2-process
gloo group (spawned here: the bundle tests run the same code under ``torchrun``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing

from pipeline.engine.distributed import gather_lists, is_distributed, rank, rank_shard, world_size

RECORDS = [f"S{i}" for i in range(7)]  # odd: the shards cannot be equal without repeating a record


def test_single_process_is_rank_zero_of_one_and_holds_everything():
    assert not is_distributed() and (rank(), world_size()) == (0, 1)
    for equal_sizes in (True, False):
        assert rank_shard(tuple(RECORDS), equal_sizes=equal_sizes) == RECORDS
    assert gather_lists(("a", "b")) == ["a", "b"]


def _worker(index: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=index, world_size=world)
    try:
        result = {
            "rank": rank(), "world_size": world_size(),
            "inference": rank_shard(RECORDS, equal_sizes=False),
            "training": rank_shard(RECORDS, seed=3),
            "gathered": gather_lists([f"failure on rank {index}"] * index),  # rank 0 has none
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
