"""What a backbone probe costs: feature extraction rate, the per-epoch time from the cache, and
the wall time of a 20-epoch probe against a 1-epoch one (target < 1.6x on the demo).

A tiny randomly initialised backbone (timm resnet18 unless --backbone) is saved to a local file
and loaded through --weights, as a user's weights are. Each repetition runs 1 epoch then 20
epochs (interleaved), each from an empty feature cache, so both pay the extraction; the ratio
is the median of per-repetition ratios, and the cost of an epoch after the first (training,
validation, saving) is the difference of the median walls over 19. Peak memory is the
process's max RSS. `--busy N` runs N busy-loop processes beside the runs, as on a shared
machine, where a loop of tiny ops suffers most.

    python benchmarks/backbones.py                        # demo, timm:resnet18 at 64 px
    python benchmarks/backbones.py --img-size 224 --repeats 3
    python benchmarks/backbones.py --repeats 3 --busy 1   # beside one busy process
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fakedet.config_files import build_config
from fakedet.training.logging import Reporter


class Notes(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)


def _weights(backbone: str, folder: Path) -> Path:
    source, _, name = backbone.partition(":")
    path = folder / "weights.pth"
    if source == "timm":
        import timm

        torch.save(timm.create_model(name).state_dict(), path)
    else:
        import torchvision

        torch.save(torchvision.models.get_model(name).state_dict(), path)
    return path


def _run(
    data: Path, weights: Path, backbone: str, epochs: int, img_size: int, out: Path, device: str
) -> dict:
    from fakedet.training.run import train

    shutil.rmtree(data / ".fakedet" / "features", ignore_errors=True)
    config = build_config(
        {
            "data_root": data,
            "backbone": backbone,
            "weights": weights,
            "img_size": img_size,
            "epochs": epochs,
            "output_dir": out,
            "use_tensorboard": False,
            "plots": False,
            "early_stopping_patience": 0,
            "device": device,
        }
    )
    notes = Notes()
    started = time.perf_counter()
    result = train(config, notes)
    wall = time.perf_counter() - started
    extraction = next(line for line in notes.lines if line.startswith("probe features"))
    rate = float(extraction.split("(")[1].split(" img/s")[0])
    del result
    history = json.loads((out / "training_history.json").read_text())
    epoch_times = [row["epoch_time_s"] for row in history]
    return {"wall": wall, "rate": rate, "epoch_s": statistics.median(epoch_times)}


def _spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="timm:resnet18")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the runs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (as train's --device)")
    args = parser.parse_args()
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for process in busy:
        process.start()
    with tempfile.TemporaryDirectory(prefix="fakedet-bench-") as folder:
        root = Path(folder)
        data = args.data
        if data is None:
            from fakedet.demo.dataset import build_demo_dataset

            data = root / "demo"
            build_demo_dataset(data, seed=0)
        weights = _weights(args.backbone, root)
        ratios, rows = [], []
        for repeat in range(args.repeats):
            one = _run(
                data, weights, args.backbone, 1, args.img_size, root / f"one{repeat}", args.device
            )
            twenty = _run(
                data, weights, args.backbone, 20, args.img_size, root / f"twenty{repeat}",
                args.device,
            )  # fmt: skip
            ratios.append(twenty["wall"] / one["wall"])
            rows += [one, twenty]
    for process in busy:
        process.terminate()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(
        f"backbone {args.backbone} at {args.img_size} px on {args.device}, demo data, "
        f"{args.repeats} repeats, "
        f"{args.busy} busy processes beside"
    )
    print(f"extraction: median {statistics.median(r['rate'] for r in rows):.1f} img/s")
    print(f"epoch from the cache: median {statistics.median(r['epoch_s'] for r in rows):.3f} s")
    walls = [r["wall"] for r in rows]
    one_epoch, twenty_epochs = statistics.median(walls[0::2]), statistics.median(walls[1::2])
    print(
        f"wall 1 epoch: {one_epoch:.1f} s, 20 epochs: {twenty_epochs:.1f} s, ratio (median) "
        f"{statistics.median(ratios):.2f}x (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(f"each epoch after the first: {(twenty_epochs - one_epoch) / 19:.3f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
