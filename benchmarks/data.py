"""Does the data pipeline keep up with the model? One interleaved run, medians over repetitions.

On the demo data (built in a temporary folder unless --data is given) it measures:

1. loader only: decode + transform images/s of the training DataLoader at each worker count;
2. model only: the Trainer's own training epoch fed from the same batches cached in memory;
3. end to end: that epoch fed by the real DataLoader at each worker count;

and prints end-to-end time over model-only time, for each decoder: Pillow (`load_rgb`, the
default), torchvision.io (`decode_rgb`: JPEGs through libjpeg-turbo; `--jpeg` re-saves the demo
as JPEG so that it has some), the decoded cache (`fakedet cache`, built before the timing) and
`device` (`--gpu-decode`: the workers send JPEG bytes and crops, the batch decodes on the training
device, nvJPEG on CUDA; needs --jpeg). Target: <= 1.10x for the fast model at the
workers the advisor recommends. Everything is measured in turn (A, B, C, ... A, B, C, ...)
because shared machines are noisy; the ratios are medians of per-repetition ratios.

    python benchmarks/data.py                         # fast model, 256 px, batch 16
    python benchmarks/data.py --mode full --repeats 5 --workers 0 1 2 4
    python benchmarks/data.py --jpeg --decoders pil torchvision cache   # decoders compared
    python benchmarks/data.py --jpeg --gpu-augment --decoders pil device --workers 4  # nvJPEG
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fakedet.advisor import detect_hardware, recommend
from fakedet.config import TrainingConfig
from fakedet.data.decode import decode_rgb, encoded_crop
from fakedet.data.decoded_cache import build_decoded_cache, open_decoded_cache
from fakedet.data.images import load_rgb
from fakedet.data.loader import loader_options, make_loader
from fakedet.data.transforms import TrainTransform
from fakedet.demo.dataset import build_demo_dataset
from fakedet.sources.layouts import index_dataset
from fakedet.training.build import build_runtime, build_training, seed_everything
from fakedet.training.checkpointer import Checkpointer
from fakedet.training.device_decode import decode_on_device
from fakedet.training.logging import Reporter
from fakedet.training.trainer import Trainer


class CachedLoader:
    """Stands in for the training DataLoader: the same batches, decoded once, kept in memory."""

    def __init__(self, loader: DataLoader) -> None:
        loader.batch_sampler.sampler.set_epoch(1)
        self.batches = [decode_on_device(batch, torch.device("cpu")) for batch in loader]
        self.batch_sampler = loader.batch_sampler  # the trainer calls its sampler's set_epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        return iter(self.batches)


class Stamped:
    """Wraps a loader and notes when each batch reaches the trainer, so that an epoch's steady
    rate can leave out its first batches (the workers' first batch is latency, not rate: an
    epoch of thousands of batches pays it once, a measured epoch of a few would be ruled by it)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.batch_sampler = loader.batch_sampler
        self.stamps: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        self.stamps = []
        for batch in self.loader:
            self.stamps.append(time.perf_counter())
            yield batch


def loader_rate(loader: DataLoader, epoch: int, device: torch.device) -> float:
    """Images/s of the loader, with each batch's JPEGs decoded on `device` for `device`."""
    loader.batch_sampler.sampler.set_epoch(epoch)
    started = time.perf_counter()
    images = 0
    for batch in loader:
        batch = decode_on_device(batch, device)
        images += len(batch["labels"]) if batch["images"] is not None else 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - started)


def epoch_seconds(trainer: Trainer, loader: Any, epoch: int, skip: int = 0) -> float:
    """Seconds of one training epoch over `loader`; with `skip`, seconds from the arrival of
    batch `skip` to the epoch's end (the rate over the batches after the first `skip`)."""
    stamped = Stamped(loader)
    trainer.parts.train_loader = stamped
    trainer.parts.batches_per_epoch = len(loader)
    started = time.perf_counter()
    trainer.train_epoch(epoch)
    ended = time.perf_counter()
    return ended - (stamped.stamps[skip] if skip else started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: a fresh demo set)")
    parser.add_argument("--mode", default="fast", choices=("fast", "full"))
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="batches per measured epoch")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--decoders",
        nargs="+",
        default=["pil", "cache"],
        choices=("pil", "torchvision", "cache", "device"),
    )
    parser.add_argument("--jpeg", action="store_true", help="re-save the demo images as JPEG")
    parser.add_argument(
        "--gpu-augment",
        action="store_true",
        help="on CUDA: workers only crop; flip, blur and JPEG run on the batch (--gpu-augment)",
    )
    parser.add_argument("--use-amp", action="store_true", help="train under autocast")
    parser.add_argument("--channels-last", action="store_true", help="train channels-last")
    parser.add_argument(
        "--skip",
        type=int,
        default=0,
        help="leave each epoch's first N batches out of its time (steady rate; 0: whole epoch)",
    )
    args = parser.parse_args()

    hardware = detect_hardware()
    advised = recommend(hardware, args.mode).num_workers
    print(
        f"machine: {platform.machine()} {hardware.device_name}, {hardware.cpu_cores} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device "
        f"{hardware.device}; advisor's workers: {advised}; gpu augment: {args.gpu_augment}, "
        f"amp: {args.use_amp}"
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
        if args.jpeg:
            for png in list(data_root.rglob("*.png")):
                load_rgb(str(png)).save(png.with_suffix(".jpg"), quality=95)
                png.unlink()
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
            gpu_augment=args.gpu_augment,
            use_amp=args.use_amp,
            channels_last=args.channels_last,
            output_dir=Path(scratch) / "run",
        )
        seed_everything(config.seed)
        runtime = build_runtime(config.device, config.use_amp, config.amp_dtype)
        index = index_dataset(config)
        parts, state = build_training(config, runtime, index, Reporter())
        checkpointer = Checkpointer(Path(config.output_dir))
        trainer = Trainer(config, parts, state, checkpointer)
        wanted = args.batches * args.batch_size
        samples = list(itertools.islice(itertools.cycle(index.train), wanted))
        if len(index.train) < wanted:
            print(
                f"{len(index.train)} training images, each used up to {-(-wanted // len(index.train))} times"
            )
        if parts.augment is None:
            transform = TrainTransform(args.img_size, True, config.blur_prob, config.jpeg_prob)
        else:  # as build_training makes it: the workers crop, the device does the rest
            transform = TrainTransform(args.img_size, False, 0.0, 0.0)
        paths = list(dict.fromkeys(sample.path for sample in samples))
        decoders = {"pil": load_rgb, "torchvision": decode_rgb, "device": load_rgb}
        defer = partial(encoded_crop, crop_only=transform.crop_only)
        if "device" in args.decoders and not (args.jpeg and parts.augment is not None):
            parser.error("--decoders device needs --jpeg and --gpu-augment on CUDA")
        if "cache" in args.decoders:
            built = build_decoded_cache(data_root, paths)
            print(f"decoded cache: {built.images} images, {built.megabytes:.0f} MB")
            decoders["cache"] = open_decoded_cache(data_root).reader(paths)
        loaders = {
            (decoder, workers): make_loader(
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
                decode=decoders[decoder],
                defer=defer if decoder == "device" else None,
            )
            for decoder in args.decoders
            for workers in args.workers
        }
        cached = CachedLoader(next(iter(loaders.values())))
        images = len(cached) * args.batch_size
        print(f"{len(cached)} batches of {args.batch_size} ({images} images) per measured epoch")
        if not 0 <= args.skip < len(cached):
            parser.error(f"--skip must be below the {len(cached)} batches of an epoch")
        measured = (len(cached) - args.skip) * args.batch_size
        if args.skip:
            print(f"rates over the last {measured} images of each epoch (--skip {args.skip})")

        epoch = 1
        for loader in loaders.values():  # warm-up: worker start-up, allocator, caches
            loader_rate(loader, epoch, runtime.device)
        epoch_seconds(trainer, cached, epoch)

        loader_rates: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
        ratios: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
        end_to_end: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
        model_only: list[float] = []
        for repetition in range(args.repeats):
            epoch += 1
            model_seconds = epoch_seconds(trainer, cached, epoch, args.skip)
            model_only.append(measured / model_seconds)
            for key, loader in loaders.items():
                loader_rates[key].append(loader_rate(loader, epoch, runtime.device))
                seconds = epoch_seconds(trainer, loader, epoch, args.skip)
                end_to_end[key].append(measured / seconds)
                ratios[key].append(seconds / model_seconds)
            print(
                f"  repetition {repetition + 1}/{args.repeats}: model only "
                f"{model_only[-1]:.1f} img/s",
                flush=True,
            )

    model_rate = statistics.median(model_only)
    print(
        f"\nmodel only ({args.mode}, batch {args.batch_size}, {args.img_size} px): "
        f"{model_rate:.1f} img/s (median of {args.repeats})\n"
    )
    print(
        "| decoder | workers | loader only img/s | per worker img/s | end to end img/s "
        "| end to end / model only |"
    )
    print("|---|---|---|---|---|---|")
    for (decoder, workers), rates in loader_rates.items():
        mark = " (advised)" if workers == advised else ""
        rate = statistics.median(rates)
        print(
            f"| {decoder} | {workers}{mark} | {rate:.0f} | {rate / max(workers, 1):.0f} | "
            f"{statistics.median(end_to_end[decoder, workers]):.1f} | "
            f"{statistics.median(ratios[decoder, workers]):.2f}x |"
        )
    for decoder in args.decoders:
        if (decoder, advised) in ratios:
            ratio = statistics.median(ratios[decoder, advised])
            verdict = "met" if ratio <= 1.10 else "NOT met"
            print(
                f"target <= 1.10x at the advised {advised} workers, {decoder}: {ratio:.2f}x, {verdict}"
            )
    print(f"(os.cpu_count() = {os.cpu_count()})")


if __name__ == "__main__":
    main()
