"""Work spread over processes: phantoms and DRRs, one subject per task.

Processes are spawned, not forked: a fork of a process whose torch or OpenMP thread pool is running can hang.
Each task's inputs (seeds, geometries, noise indices) are fixed by the caller before any task runs, so what a
task writes does not depend on how many processes share the work or in which order they finish.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

__all__ = ["available_cores", "map_in_processes"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one: ``taskset`` and container
    limits count, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _call_with_threads(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    # cap torch's pool so that the processes together use the cores once, not once each: torch imported
    # already (with fn's module or the main one) is set here, one imported later reads the variable
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return fn(*args)


def map_in_processes(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int, progress: bool = False,
                     desc: str = "", unit: str = "task", on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """``[fn(*job) for job in jobs]``, the jobs run ``workers`` at a time (1: in this process, in order).

    With ``workers`` > 1 each job runs in a spawned process (at most ``len(jobs)``) whose torch uses
    ``available_cores() // workers`` threads (at least 1); ``fn`` and the jobs must pickle (a module-level
    function, or a ``functools.partial`` of one). ``on_result`` is called in this process with each result as
    it arrives (in order of completion; e.g. a progress count). Results come back in job order. A job that
    raises raises here, after the jobs already running have finished.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = max(1, min(workers, len(jobs)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc + (f" ({workers} processes)" if workers > 1 else ""), unit=unit)

    def done(result: Any) -> Any:
        if on_result is not None:
            on_result(result)
        if bar is not None:
            bar.update(1)
        return result

    try:
        if workers == 1:
            return [done(fn(*job)) for job in jobs]
        threads = max(1, available_cores() // workers)
        results: list[Any] = [None] * len(jobs)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_call_with_threads, threads, fn, tuple(job)): i for i, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = done(future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return results
    finally:
        if bar is not None:
            bar.close()
