"""What a process started by ``torchrun`` needs to know: its rank, its share of the subjects, the others' results.

Every function also works without ``torch.distributed`` (a plain single-process run): rank 0 of a world of
one, which holds every record. Training and inference shard the same way, through :func:`rank_shard`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def is_distributed() -> bool:
    """True inside an initialised process group (``torchrun`` + ``init_process_group``)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank_shard(records: Sequence, *, seed: int = 0, equal_sizes: bool = True) -> list:
    """This process's share of ``records`` (all of them without a process group).

    - ``equal_sizes=True`` (training): a seeded shuffle spreads centres over the ranks, then shards of
      equal size (MONAI ``partition_dataset`` with ``even_divisible``: a few records repeat), so every
      rank runs the same number of iterations. Each rank caches only its own subjects: memory per process
      does not grow with the number of GPUs.
    - ``equal_sizes=False`` (inference): every record in exactly one shard, none repeated (a subject
      written twice would race on its files), dealt in order: rank r gets records r, r + N, r + 2N, ...
    """
    if not is_distributed():
        return list(records)
    from monai.data import partition_dataset

    shards = partition_dataset(list(records), num_partitions=world_size(), shuffle=equal_sizes, seed=seed,
                               even_divisible=equal_sizes)
    return shards[rank()]


def validation_shard(records: Sequence) -> list:
    """This process's validation subjects: each subject on one rank (:func:`rank_shard`, dealt in order) when
    there are at least as many subjects as ranks; otherwise every rank validates all of them. Either way the
    mean over subjects reduced over the ranks (ignite's metrics all-reduce their sums and counts) is the
    mean over all subjects, and every rank has work: a rank without a batch could not join the reduction."""
    records = list(records)
    return rank_shard(records, equal_sizes=False) if len(records) >= world_size() else records


def broadcast_float(value: float, *, source: int = 0) -> float:
    """``value`` as rank ``source`` has it, on every rank (``value`` itself without a process group). A
    collective: every rank must call it. E.g. rank 0's clock decides a time budget for all ranks, so that
    they run the same iterations, learning rates and last iteration."""
    if not is_distributed():
        return float(value)
    on_gpu = torch.distributed.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch.distributed.broadcast(tensor, src=source)
    return float(tensor.item())


def gather_lists(items: Sequence) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order; ``items`` itself without a process group.

    A collective: every rank must call it, and each returns the same list (e.g. the failures of all ranks,
    so that one rank can report them all).
    """
    if not is_distributed():
        return list(items)
    gathered: list = [None] * world_size()
    torch.distributed.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]
