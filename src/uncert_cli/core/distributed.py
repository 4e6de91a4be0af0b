"""Scale-out under ``torchrun``: each process takes a shard of the data, sums are all-reduced.

``torchrun --nproc-per-node K -m uncert_cli fit ...`` sets RANK/WORLD_SIZE; we then join a process
group (gloo on CPU, nccl on CUDA), give each rank a contiguous shard, all-reduce the curvature sums
before they are turned into means, and let rank 0 alone write the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world_size) if self.world_size > 1 else None

    def all_reduce_sum(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over all ranks, in place (no-op in a single process)."""
        if self.world_size == 1:
            return
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_from_environment(device: torch.device) -> DistributedContext:
    """Join the torchrun process group if this process was started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
