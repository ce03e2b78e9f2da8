"""Samplers and DataLoaders: per-epoch seeded order, resumable mid-epoch, split across ranks."""

from __future__ import annotations

import functools
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from fakedet import hardware
from fakedet.data.dataset import Deferral, ImageDataset, Transform, collate
from fakedet.data.images import load_rgb
from fakedet.sources.samples import Sample
from fakedet.sources.shards.reading import SHUFFLE_WINDOW_GROUPS, read_groups


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, sample_seed): the order and the seeds are a pure function of (seed, epoch).

    That is what makes a resume exact: nothing about the data order needs saving but the epoch
    and how many samples of it were already consumed (`skip`).

    With `groups` (sample indices that one read brings in, as Parquet row groups), the shuffle
    is two-level: the groups in a seeded order, then the samples of each window of
    SHUFFLE_WINDOW_GROUPS groups in a seeded order, so each window's groups are read once.
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        groups: list[list[int]] | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.groups = groups
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(num_samples / world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order; `skip` drops that many of this rank's first samples."""
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle and self.groups is not None:
            order = self._window_order(self.groups, generator)
        elif self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        seeds = torch.randint(2**62, (self.num_samples,), generator=generator).tolist()
        # Pad by wrapping so every rank gets the same number of samples (DDP needs equal steps).
        padded = (order * math.ceil(self.per_rank * self.world_size / max(len(order), 1)))[
            : self.per_rank * self.world_size
        ]
        mine = padded[self.rank :: self.world_size][self.skip :]
        if not self.shuffle:
            # Evaluation seeds do not depend on the epoch: the val set is scored identically.
            return iter([(index, index) for index in mine])
        return iter([(index, seeds[index]) for index in mine])

    @staticmethod
    def _window_order(groups: list[list[int]], generator: torch.Generator) -> list[int]:
        shuffled = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        order: list[int] = []
        for start in range(0, len(shuffled), SHUFFLE_WINDOW_GROUPS):
            window = [
                index
                for group in shuffled[start : start + SHUFFLE_WINDOW_GROUPS]
                for index in group
            ]
            order += [window[i] for i in torch.randperm(len(window), generator=generator).tolist()]
        return order


def init_worker(worker_id: int, nice: int = 0) -> None:
    """A loader worker's start: one intra-op thread, niceness, seeded Python and NumPy RNGs."""
    # One thread per worker: the main process's intra-op threads already own the cores.
    torch.set_num_threads(1)
    if nice and hasattr(os, "nice"):
        # When the model trains on the same CPU cores, a worker that pre-empts one intra-op
        # thread stalls the whole parallel region at its barrier; a niced worker mostly runs
        # in the gaps instead (benchmarks/data.py).
        os.nice(nice)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    samples: Sequence[Sample],
    transform: Transform,
    batch_size: int,
    train: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    prefetch_factor: int,
    drop_last: bool,
    rank: int = 0,
    world_size: int = 1,
    worker_nice: int = 0,
    decode: Callable[[str], Any] | None = None,
    defer: Deferral | None = None,
) -> DataLoader:
    """A DataLoader over `samples` whose sampler is an `EpochSampler` (call its set_epoch).

    `worker_nice` lowers the workers' CPU priority: for training on the CPU itself. `decode`
    replaces Pillow's decoding (`load_rgb`), e.g. by the decoded cache's reader; `defer` leaves
    the samples it accepts encoded, for decoding on the device (`ImageDataset`).
    """
    dataset = ImageDataset(samples, transform, decode or load_rgb, defer)
    groups = read_groups(samples) if train else None  # Parquet shards: read by row group
    sampler = EpochSampler(len(dataset), train, seed, rank, world_size, groups)
    # drop_last only when a full batch remains, so a tiny train split still yields one batch.
    drop = drop_last and train and len(sampler) >= batch_size
    batch_sampler = BatchSampler(sampler, batch_size, drop_last=drop)
    extra: dict[str, object] = {}
    if num_workers > 0:
        extra = {"persistent_workers": persistent_workers, "prefetch_factor": prefetch_factor}
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        # Worker base seeds come from this generator, not the global RNG: starting workers then
        # never shifts the dropout stream, which keeps a resumed run equal to an unbroken one.
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=functools.partial(init_worker, nice=worker_nice),
        **extra,
    )


def loader_options(
    device: torch.device,
    num_workers: int,
    pin_memory: bool = True,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
) -> dict[str, Any]:
    """The DataLoader settings that depend on the device (pinning, worker niceness)."""
    return {
        "num_workers": num_workers,
        "pin_memory": pin_memory and device.type == "cuda",
        "persistent_workers": persistent_workers,
        "prefetch_factor": prefetch_factor,
        "worker_nice": hardware.worker_nice(device.type),
    }
