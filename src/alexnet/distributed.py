"""Many processes, one job: the one process-group set-up (torchrun's environment), the samplers that split a data
set between ranks, and the gather / all-reduce helpers that make every rank's figures whole again.

Training uses `EpochSampler` (torch's DistributedSampler, shuffled per epoch, able to skip what an interrupted epoch
already did); evaluation uses `eval_sampler`, which gives every sample to exactly one rank so that the counts are
exact after an all-reduce (pytorch/examples' imagenet ``validate`` adds the tail a DistributedSampler would pad).
A plain run is rank 0 of 1, and every helper here is then a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from .errors import AlexnetError
from .runtime import env_local_rank

__all__ = [
    "DistInfo",
    "EpochSampler",
    "ShardSampler",
    "all_gather",
    "any_rank",
    "eval_sampler",
    "gather_lists",
    "joined_group",
    "reduce_max",
    "reduce_sums",
    "setup_distributed",
    "shutdown_distributed",
]


@dataclass
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  # `setup_distributed` initialised the process group (and `shutdown_distributed` ends it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun describes through RANK / WORLD_SIZE / LOCAL_RANK (NCCL for a CUDA
    ``device``, gloo otherwise), or the group already started by the caller; a plain run is rank 0 of 1."""
    local_rank = env_local_rank()
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(local_rank=local_rank)
    if not dist.is_available():
        raise AlexnetError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, started_here=True)


def joined_group() -> DistInfo:
    """This process's place in the process group its caller started (a command under torchrun:
    `setup_distributed`), or rank 0 of 1 when none is started: a library function joins a group, never starts
    one."""
    local_rank = env_local_rank()
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    return DistInfo(local_rank=local_rank)


def shutdown_distributed(info: DistInfo) -> None:
    """End the process group if `setup_distributed` started it (one the caller started stays theirs)."""
    if info.started_here and dist.is_initialized():
        dist.destroy_process_group()


# --- samplers -----------------------------------------------------------------------------------------------------
class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (a permutation seeded by ``seed + epoch``, ranks taking interleaved shares) that
    can skip the first ``skip`` indices of this rank's share: the steps an interrupted epoch has already done.

    A single process uses it too (world size 1), so the data order depends only on (seed, epoch): a resumed run
    sees exactly the batches an uninterrupted one would, and rank r of N sees batch b's share of the same global
    batch that one process with N times the batch would see.
    """

    def __init__(self, dataset: Any, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        it = super().__iter__()
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


class ShardSampler(Sampler[int]):
    """Rank ``rank`` of ``world_size`` gets indices ``rank, rank + world_size, ...``: disjoint shares that cover
    every index exactly once (unlike DistributedSampler, which pads the last share with repeats)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def eval_sampler(dataset: Any, rank: int, world_size: int) -> ShardSampler:
    """A sampler that counts every sample exactly once across ``world_size`` ranks."""
    return ShardSampler(len(dataset), rank, world_size)


# --- gather / reduce ----------------------------------------------------------------------------------------------
def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a plain run."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_lists(items: list[Any], info: DistInfo) -> list[Any]:
    """Every rank's ``items`` joined, in rank order."""
    return [x for part in all_gather(items, info) for x in part]


def reduce_sums(values: Sequence[float], info: DistInfo, device: torch.device) -> list[float]:
    """``values`` summed over every rank (float64, so counts stay exact)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if info.distributed:
        dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def reduce_max(value: float, info: DistInfo, device: torch.device) -> float:
    """The largest ``value`` of any rank (the slowest rank's seconds are the job's)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def any_rank(flags: Sequence[bool], buffer: torch.Tensor) -> list[bool]:
    """Whether any rank raised each flag, summed in ``buffer`` (a float tensor of ``len(flags)`` on the device,
    reused from step to step): every rank must stop at the same step, or the next all-reduce hangs."""
    for i, f in enumerate(flags):
        buffer[i] = float(f)
    dist.all_reduce(buffer)
    return [bool(buffer[i] > 0) for i in range(len(flags))]
