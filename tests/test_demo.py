"""The demo dataset: real crops vs simulated generator up-sampling, reproducible, split by photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakedet.data.demo import UPSAMPLERS, build_demo_dataset, simulate_generator
from fakedet.errors import DataError


def test_layout_counts_and_identical_format(demo_dataset: Path) -> None:
    info = json.loads((demo_dataset / "demo_info.json").read_text())
    for split in ("train", "val"):
        for label in ("real", "fake"):
            files = sorted((demo_dataset / split / label).glob("*.png"))
            assert len(files) == info["images"][split][label] > 0
            for path in files[:3]:
                with Image.open(path) as image:
                    assert image.size == (64, 64) and image.mode == "RGB" and image.format == "PNG"


def test_train_and_val_come_from_different_photos(demo_dataset: Path) -> None:
    def photos(split: str) -> set[str]:
        return {
            p.name.rsplit("_", 2)[0] if "_0" in p.name else p.stem
            for p in (demo_dataset / split).rglob("*.png")
        }

    info = json.loads((demo_dataset / "demo_info.json").read_text())
    assert not set(info["photos"]["train"]) & set(info["photos"]["val"])
    for split in ("train", "val"):
        for path in (demo_dataset / split).rglob("*.png"):
            assert any(path.name.startswith(name + "_") for name in info["photos"][split])


def test_fakes_use_at_least_four_upsampling_families(demo_dataset: Path) -> None:
    names = [path.stem for path in (demo_dataset / "train" / "fake").glob("*.png")]
    used = {method for method in UPSAMPLERS for name in names if name.endswith(method)}
    assert len(used) >= 4


def test_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    build_demo_dataset(tmp_path / "a", num_images=12, img_size=64, seed=4)
    build_demo_dataset(tmp_path / "b", num_images=12, img_size=64, seed=4)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


@pytest.mark.parametrize("method", UPSAMPLERS)
def test_each_upsampler_keeps_size_and_removes_detail(method: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    fake = simulate_generator(image, method, torch.Generator().manual_seed(0))
    assert fake.size == image.size and fake.mode == "RGB"
    original = np.asarray(image, dtype=np.float32)
    faked = np.asarray(fake, dtype=np.float32)
    # Up-sampling from half resolution cannot restore pixel-level noise: less high-frequency energy.
    assert np.abs(np.diff(faked, axis=1)).mean() < np.abs(np.diff(original, axis=1)).mean()


def test_too_few_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least 8"):
        build_demo_dataset(tmp_path, num_images=2)
