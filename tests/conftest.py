"""Tiny datasets built in tmp folders: 64 px images, a few dozen of them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int, size: int = 64, smooth: bool = False) -> None:
    """A random RGB PNG; `smooth` images are 2x nearest-upsampled (a crude 'fake')."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if smooth:
        half = rng.integers(0, 256, (size // 2, size // 2, 3), dtype=np.uint8)
        pixels = half.repeat(2, axis=0).repeat(2, axis=1)
    else:
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_folder_dataset(
    root: Path, per_class: int = 8, with_val: bool = True, size: int = 64
) -> Path:
    """root/train/{real,fake} (+ root/val/{real,fake}) with `per_class` images each."""
    splits = ("train", "val") if with_val else ("train",)
    seed = 0
    for split in splits:
        for label in ("real", "fake"):
            for number in range(per_class):
                seed += 1
                write_image(
                    root / split / label / f"{number}.png", seed, size, smooth=label == "fake"
                )
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fakedet.demo.dataset import build_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    build_demo_dataset(root, num_images=64, img_size=64, seed=0)
    return root


def tiny_train_args(
    data_root: Path, output_dir: Path, *extra: str, plots: bool = False
) -> list[str]:
    """`fakedet train` arguments for a run of a few seconds on CPU (no plots unless asked)."""
    return [
        "train",
        str(data_root),
        "--output-dir",
        str(output_dir),
        "--img-size",
        "64",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--no-use-tensorboard",
        "--plots" if plots else "--no-plots",
        *extra,
    ]


def fakedet_command(*args: str) -> list[str]:
    """A command line running the fakedet CLI in a subprocess with this interpreter."""
    return [sys.executable, "-m", "fakedet", *args]


def signal_when_written(
    command: list[str], watched: Path, after: float = 0.0, timeout: float = 180.0
) -> tuple[int, str]:
    """Start `command`, send SIGTERM once `watched` exists (plus `after` seconds), wait.

    Returns the exit code and the combined output.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while not watched.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def poisoned_loss(real_loss: Callable[..., Any], calls_to_poison: set[int]) -> Callable[..., Any]:
    """`real_loss`, made non-finite (its logged total and its objective) on the given calls,
    1-based."""
    from fakedet.models.losses import LossTerms

    counter = {"calls": 0}

    def poisoned(outputs: dict[str, Any], labels: Any) -> LossTerms:
        terms = real_loss(outputs, labels)
        counter["calls"] += 1
        if counter["calls"] in calls_to_poison:
            nan = terms.total * float("nan")
            return LossTerms(nan, terms.regression, terms.classification, terms.ranking, nan)
        return terms

    return poisoned
