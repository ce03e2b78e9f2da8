"""Shards against folders, in one interleaved run (medians over repetitions, shared machines are
noisy):

1. training input: images/s of the training DataLoader (decode + augment, seeded shuffle) over
   the demo data as a folder, as WebDataset tar shards and as Parquet shards (`fakedet convert`);
   goal: shards >= 1.0x the folder;
2. predict: images/s of predict over the folder with results kept in memory (CSV at the end)
   and streamed to Parquet (`scan_to_parquet`); goal: Parquet output costs < 5%.

    python benchmarks/shards.py                      # 512 images of 128 px, 3 repeats
    python benchmarks/shards.py --images 2000 --img-size 256 --workers 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fakedet.checkpoints.calibration import IDENTITY
from fakedet.data.loader import loader_options, make_loader
from fakedet.data.transforms import TrainTransform
from fakedet.demo.dataset import build_demo_dataset
from fakedet.inference.predictor import predict_images
from fakedet.inference.scan import scan_to_parquet
from fakedet.models.loading import build_model
from fakedet.sources.layouts import build_index
from fakedet.sources.shards.convert import convert_dataset


def loader_rate(samples: list, img_size: int, workers: int, epoch: int) -> tuple[float, float]:
    """(images/s of wall time, CPU ms of this process per image) of one training epoch; with 0
    workers the CPU time is all the input pipeline's work, and it holds on a busy machine where
    wall time does not."""
    loader = make_loader(
        samples,
        TrainTransform(img_size, True, 0.1, 0.1),
        32,
        train=True,
        seed=0,
        drop_last=False,
        **loader_options(torch.device("cpu"), workers, persistent_workers=False),
    )
    loader.batch_sampler.sampler.set_epoch(epoch)
    # One intra-op thread, as in a loader worker (DataLoader gives each worker one): with more,
    # OpenMP spin-waits on a busy machine are counted as the pipeline's CPU time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started, cpu = time.perf_counter(), time.process_time()
    count = sum(len(batch["labels"]) for batch in loader if batch["labels"] is not None)
    torch.set_num_threads(threads)
    return count / (time.perf_counter() - started), (time.process_time() - cpu) * 1e3 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        build_demo_dataset(root / "folder", args.images, args.img_size, seed=0)
        convert_dataset(root / "folder", root / "wds", "webdataset", 256 * 2**20)
        convert_dataset(root / "folder", root / "parquet", "parquet", 256 * 2**20)
        sources = {name: build_index(root / name, False, 0.1, 0).train for name in
                   ("folder", "wds", "parquet")}  # fmt: skip
        rates: dict[str, list[float]] = {name: [] for name in sources}
        cpu_ms: dict[str, list[float]] = {name: [] for name in sources}
        model = build_model("fast", args.img_size, torch.device("cpu")).eval()
        paths = sorted((root / "folder").rglob("*.png"))
        predict_rates: dict[str, list[float]] = {"memory": [], "parquet": []}
        for repeat in range(args.repeats):
            # Each repeat starts with the next source, so none always runs first (a cold cache,
            # a CPU still clocking up) or last.
            names = list(sources)
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                rate, cpu = loader_rate(sources[name], args.img_size, args.workers, repeat)
                rates[name].append(rate)
                cpu_ms[name].append(cpu)
            started = time.perf_counter()
            predict_images(model, paths, args.img_size, IDENTITY, None, 32, args.workers)
            predict_rates["memory"].append(len(paths) / (time.perf_counter() - started))
            started = time.perf_counter()
            scan_to_parquet(model, [str(p) for p in paths], args.img_size,
                            root / f"scores-{repeat}.parquet", batch_size=32,
                            num_workers=args.workers)  # fmt: skip
            predict_rates["parquet"].append(len(paths) / (time.perf_counter() - started))
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_ms.items()}
    print(f"training input, {len(sources['folder'])} images, {args.workers} workers:")
    for name in sources:
        # Ratios of medians; the paired figure (median of per-repeat ratios) beside it.
        paired = statistics.median(a / b for a, b in zip(rates[name], rates["folder"], strict=True))
        print(f"  {name:8s} {median[name]:8.1f} img/s   {median[name] / median['folder']:.2f}x "
              f"folder (paired {paired:.2f}x)   CPU {cpu[name]:.3f} ms/img in this process "
              f"({cpu['folder'] / cpu[name]:.2f}x folder's speed)")  # fmt: skip
    memory, parquet = (statistics.median(predict_rates[k]) for k in ("memory", "parquet"))
    print(f"predict, {len(paths)} images (img/s): in memory {memory:.1f}, Parquet {parquet:.1f}"
          f" (Parquet / in memory: {parquet / memory:.2f}x, ratio of medians)")  # fmt: skip


if __name__ == "__main__":
    main()
