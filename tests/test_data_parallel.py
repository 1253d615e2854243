"""pipeline.data.parallel: jobs spread over spawned processes come back in job order, the same as in one process;
a failing job raises its own error; each process's torch gets its share of the cores."""

from __future__ import annotations

import os

import pytest

# Light imports only: the worker processes import this module to find the job functions.
from pipeline.data.parallel import available_cores, map_in_processes


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"job {x}: cannot do this one")
    return x


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_results_in_job_order_whatever_the_workers():
    jobs = [(i,) for i in range(6)]
    seen = []
    one = map_in_processes(_square_and_pid, jobs, workers=1, on_result=seen.append)
    two = map_in_processes(_square_and_pid, jobs, workers=2)
    assert [r for r, _ in one] == [r for r, _ in two] == [0, 1, 4, 9, 16, 25]
    assert {pid for _, pid in one} == {os.getpid()} and os.getpid() not in {pid for _, pid in two}
    assert seen == one  # on_result saw every result, in order with one worker


def test_a_failing_job_raises_its_error():
    for workers in (1, 2):
        with pytest.raises(ValueError, match="job 3: cannot do this one"):
            map_in_processes(_fail_on_three, [(i,) for i in range(5)], workers=workers)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        map_in_processes(_fail_on_three, [(1,)], workers=0)


def test_each_process_gets_its_share_of_the_cores():
    import torch  # the parent has torch: the workers import it with this module, then are capped

    assert available_cores() >= 1
    threads = map_in_processes(_torch_threads, [(), ()], workers=2)
    assert threads == [max(1, available_cores() // 2)] * 2
    assert torch.get_num_threads() >= 1  # the parent's own pool is left as it was
