"""Many processes, one run: torchrun's environment, the process group, and the few collectives
the trainer needs. With one process every helper is a no-op, so the trainer has one code path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank 0 alone writes files and prints."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); one process: no-op."""
    if not launched_by_torchrun():
        return DistContext()
    context = DistContext(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    return context


def any_rank(context: DistContext, flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one."""
    if not context.enabled:
        return flag
    # NCCL reduces CUDA tensors only; gloo takes CPU ones.
    device = torch.device("cuda", context.local_rank) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather(context: DistContext, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not context.enabled:
        return [value]
    values: list[Any] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sync_buffers(context: DistContext, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    Each rank updates its own statistics in its last training forward; before validation they
    are made rank 0's, so every shard is scored by the model that rank 0 saves.
    """
    if not context.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
