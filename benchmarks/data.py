"""Does the data pipeline keep up with the model? One interleaved run, medians over repetitions.

On the demo data (built in a temporary folder unless --data is given) it measures:

1. loader only: decode + transform images/s of the training DataLoader at each worker count;
2. model only: the Trainer's own training epoch fed from the same batches cached in memory;
3. end to end: that epoch fed by the real DataLoader at each worker count;

and prints end-to-end time over model-only time. Target: <= 1.10x for the fast model at the
workers the advisor recommends. Everything is measured in turn (A, B, C, ... A, B, C, ...)
because shared machines are noisy; the ratios are medians of per-repetition ratios.

    python benchmarks/data.py                         # fast model, 256 px, batch 16
    python benchmarks/data.py --mode full --repeats 5 --workers 0 1 2 4
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fakedet.advisor import detect_hardware, recommend
from fakedet.config import TrainingConfig
from fakedet.data.demo import build_demo_dataset
from fakedet.data.layouts import index_dataset
from fakedet.data.loader import loader_options, make_loader
from fakedet.data.transforms import TrainTransform
from fakedet.training.build import build_runtime, build_training, seed_everything
from fakedet.training.checkpointer import Checkpointer
from fakedet.training.logging import Reporter
from fakedet.training.trainer import Trainer


class CachedLoader:
    """Stands in for the training DataLoader: the same batches, decoded once, kept in memory."""

    def __init__(self, loader: DataLoader) -> None:
        loader.batch_sampler.sampler.set_epoch(1)
        self.batches = list(loader)
        self.batch_sampler = loader.batch_sampler  # the trainer calls its sampler's set_epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        return iter(self.batches)


def loader_rate(loader: DataLoader, epoch: int) -> float:
    loader.batch_sampler.sampler.set_epoch(epoch)
    started = time.perf_counter()
    images = sum(batch["images"].shape[0] for batch in loader if batch["images"] is not None)
    return images / (time.perf_counter() - started)


def epoch_seconds(trainer: Trainer, loader: Any, epoch: int) -> float:
    trainer.parts.train_loader = loader
    trainer.parts.batches_per_epoch = len(loader)
    started = time.perf_counter()
    trainer.train_epoch(epoch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: a fresh demo set)")
    parser.add_argument("--mode", default="fast", choices=("fast", "full"))
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="batches per measured epoch")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    hardware = detect_hardware()
    advised = recommend(hardware, args.mode).num_workers
    print(
        f"machine: {platform.machine()} {hardware.device_name}, {hardware.cpu_cores} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device "
        f"{hardware.device}; advisor's workers: {advised}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        data_root = args.data
        if data_root is None:
            data_root = Path(scratch) / "demo"
            count = args.batches * args.batch_size * 2
            started = time.perf_counter()
            build_demo_dataset(data_root, num_images=count, img_size=args.img_size)
            print(
                f"built {count} demo images at {args.img_size} px in "
                f"{time.perf_counter() - started:.1f} s"
            )
        config = TrainingConfig(
            data_root=data_root,
            mode=args.mode,
            img_size=args.img_size,
            batch_size=args.batch_size,
            epochs=10_000,
            lr=1e-4,
            warmup_epochs=0,
            num_workers=0,
            use_tensorboard=False,
            output_dir=Path(scratch) / "run",
        )
        seed_everything(config.seed)
        runtime = build_runtime(config.device)
        index = index_dataset(config)
        parts, state = build_training(config, runtime, index, Reporter())
        checkpointer = Checkpointer(Path(config.output_dir))
        trainer = Trainer(config, parts, state, checkpointer)
        samples = index.train[: args.batches * args.batch_size]
        transform = TrainTransform(args.img_size, True, config.blur_prob, config.jpeg_prob)
        loaders = {
            workers: make_loader(
                samples,
                transform,
                args.batch_size,
                train=True,
                seed=config.seed,
                drop_last=True,
                # Pinning and worker niceness as the trainer's own loaders have them.
                **loader_options(
                    runtime.device,
                    workers,
                    pin_memory=False,
                    prefetch_factor=config.prefetch_factor,
                ),
            )
            for workers in args.workers
        }
        cached = CachedLoader(loaders[args.workers[0]])
        images = len(cached) * args.batch_size
        print(f"{len(cached)} batches of {args.batch_size} ({images} images) per measured epoch")

        epoch = 1
        for loader in loaders.values():  # warm-up: worker start-up, allocator, caches
            loader_rate(loader, epoch)
        epoch_seconds(trainer, cached, epoch)

        loader_rates: dict[int, list[float]] = {w: [] for w in args.workers}
        ratios: dict[int, list[float]] = {w: [] for w in args.workers}
        end_to_end: dict[int, list[float]] = {w: [] for w in args.workers}
        model_only: list[float] = []
        for repetition in range(args.repeats):
            epoch += 1
            model_seconds = epoch_seconds(trainer, cached, epoch)
            model_only.append(images / model_seconds)
            for workers, loader in loaders.items():
                loader_rates[workers].append(loader_rate(loader, epoch))
                seconds = epoch_seconds(trainer, loader, epoch)
                end_to_end[workers].append(images / seconds)
                ratios[workers].append(seconds / model_seconds)
            per_workers = ", ".join(
                f"{workers} workers {ratios[workers][-1]:.2f}x" for workers in args.workers
            )
            print(
                f"  repetition {repetition + 1}/{args.repeats}: model only "
                f"{model_only[-1]:.1f} img/s; end to end / model only: {per_workers}",
                flush=True,
            )

    model_rate = statistics.median(model_only)
    print(
        f"\nmodel only ({args.mode}, batch {args.batch_size}, {args.img_size} px): "
        f"{model_rate:.1f} img/s (median of {args.repeats})\n"
    )
    print("| workers | loader only img/s | end to end img/s | end to end / model only |")
    print("|---|---|---|---|")
    for workers in args.workers:
        mark = " (advised)" if workers == advised else ""
        print(
            f"| {workers}{mark} | {statistics.median(loader_rates[workers]):.0f} | "
            f"{statistics.median(end_to_end[workers]):.1f} | "
            f"{statistics.median(ratios[workers]):.2f}x |"
        )
    if advised in ratios:
        ratio = statistics.median(ratios[advised])
        verdict = "met" if ratio <= 1.10 else "NOT met"
        print(f"\ntarget <= 1.10x at the advised {advised} workers: {ratio:.2f}x, {verdict}")
    print(f"(os.cpu_count() = {os.cpu_count()})")


if __name__ == "__main__":
    main()
