"""The demo dataset: real crops vs simulated generator up-sampling, reproducible, split by photo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fakedet.cli import app
from fakedet.demo.dataset import UPSAMPLERS, build_demo_dataset, simulate_generator
from fakedet.errors import DataError


def _fine_detail(path: Path) -> float:
    """Mean absolute difference of neighbouring pixels: high where pixel-level detail is kept."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


def test_layout_counts_and_identical_format(demo_dataset: Path) -> None:
    info = json.loads((demo_dataset / "demo_info.json").read_text())
    for split in ("train", "val"):
        for label in ("real", "fake"):
            files = sorted((demo_dataset / split / label).glob("*.png"))
            assert len(files) == info["images"][split][label] > 0
            for path in files[:3]:
                with Image.open(path) as image:
                    assert image.size == (64, 64) and image.mode == "RGB" and image.format == "PNG"
    # Exactly the requested images, all of them counted in demo_info.json, and nothing else.
    counted = sum(
        info["images"][split][label]
        for split in ("train", "val")
        for label in info["images"][split]
    )
    # Besides the images: the masks of partial fakes, one per spliced or inpainted fake.
    images = [p for p in demo_dataset.rglob("*.png") if "masks" not in p.parts]
    masks = list((demo_dataset / "masks").rglob("*.png"))
    assert counted == len(images) == 64
    assert {mask.name for mask in masks} == {
        p.name for p in images if p.stem.endswith(("spliced", "inpainted"))
    }
    assert (info["img_size"], info["seed"]) == (64, 0)
    assert {p.relative_to(demo_dataset).parent.as_posix() for p in images} == {
        "train/real",
        "train/fake",
        "val/real",
        "val/fake",
    }


def test_train_and_val_come_from_different_photos(demo_dataset: Path) -> None:
    def photos(split: str) -> set[str]:
        """The source photo of each file: `<photo>_<5-digit number>[_<upsampler>].png`."""
        names = set()
        for path in (demo_dataset / split).rglob("*.png"):
            match = re.fullmatch(r"(.+?)_\d{5}(_[a-z_]+)?", path.stem)
            assert match, path.name
            names.add(match.group(1))
        return names

    info = json.loads((demo_dataset / "demo_info.json").read_text())
    assert not set(info["photos"]["train"]) & set(info["photos"]["val"])
    # demo_info.json lists exactly the photos each split's files were cut from.
    assert photos("train") == set(info["photos"]["train"])
    assert photos("val") == set(info["photos"]["val"])
    assert not photos("train") & photos("val")
    for split in ("train", "val"):
        for path in (demo_dataset / split).rglob("*.png"):
            assert any(path.name.startswith(name + "_") for name in info["photos"][split])


def test_fakes_use_at_least_four_upsampling_families(demo_dataset: Path) -> None:
    names = [path.stem for path in (demo_dataset / "train" / "fake").glob("*.png")]
    used = {method for method in UPSAMPLERS for name in names if name.endswith(method)}
    assert len(used) >= 4


def test_fakes_have_less_fine_detail_than_real_crops(demo_dataset: Path) -> None:
    # Real crops keep camera-level detail; interpolating up-samplers smooth it away (the
    # random-weight sub-pixel decoders and the families of fakedet/demo/families.py can add
    # detail of their own: checkerboards, left-over noise).
    for split in ("train", "val"):
        real = [_fine_detail(p) for p in (demo_dataset / split / "real").glob("*.png")]
        fake = [
            _fine_detail(p)
            for p in (demo_dataset / split / "fake").glob("*.png")
            if p.stem.endswith(("nearest", "bilinear", "bicubic", "transposed_conv"))
        ]
        assert np.mean(fake) < 0.85 * np.mean(real), (split, np.mean(fake), np.mean(real))


def test_demo_data_command_reports_what_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo-data", str(out), "--num-images", "8", "--img-size", "64", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "demo_info.json").read_text())
    counts = info["images"]
    assert sum(counts[split][label] for split in counts for label in counts[split]) == 8
    assert len(list(out.rglob("*.png"))) == 8 and info["seed"] == 1
    for split in ("train", "val"):
        for label in ("real", "fake"):
            assert len(list((out / split / label).glob("*.png"))) == counts[split][label] > 0
    train, val = counts["train"], counts["val"]
    expected = [
        f"Wrote 8 images (64 px) to {out}:",
        f"train {train['real']} real / {train['fake']} fake",
        f"val {val['real']} real / {val['fake']} fake",
        f"fakedet train {out}",
    ]
    squashed = "".join(result.output.split())  # immune to the console's line wrapping
    for text in expected:
        assert "".join(text.split()) in squashed, (text, result.output)


def test_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    build_demo_dataset(tmp_path / "a", num_images=12, img_size=64, seed=4)
    build_demo_dataset(tmp_path / "b", num_images=12, img_size=64, seed=4)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


def test_up_sampling_runs_on_one_thread_and_restores_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More threads sum in another order and round a few pixels otherwise: the same seed would
    not write the same files on machines with other core counts."""
    seen: list[int] = []
    real_interpolate = torch.nn.functional.interpolate

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return real_interpolate(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        image = Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8))
        simulate_generator(image, "bilinear", torch.Generator().manual_seed(0))
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


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


def _radial_amplitude(pixels: np.ndarray) -> np.ndarray:
    from fakedet.demo.hard_fakes import _radial_bins

    bins = _radial_bins(*pixels.shape)
    amplitude = np.abs(np.fft.rfft2(pixels))
    return np.bincount(bins.ravel(), amplitude.ravel()) / np.bincount(bins.ravel())


def test_spectrum_matching_gives_the_fake_the_real_radial_spectrum() -> None:
    from fakedet.demo.hard_fakes import match_spectrum

    rng = np.random.default_rng(0)
    real = Image.fromarray(rng.integers(80, 176, (64, 64, 3), dtype=np.uint8))  # never clipped
    fake = simulate_generator(real, "bilinear", torch.Generator().manual_seed(0))
    matched = match_spectrum(fake, real)
    channel = [np.asarray(image, np.float64)[..., 0] for image in (real, fake, matched)]
    real_profile, fake_profile, matched_profile = map(_radial_amplitude, channel)
    high = slice(20, 32)  # what up-sampling removes
    assert fake_profile[high].mean() < 0.5 * real_profile[high].mean()
    # Within the rounding to 8-bit pixels, and the clipping of a few.
    np.testing.assert_allclose(matched_profile[1:33], real_profile[1:33], rtol=0.15)
    assert matched.size == fake.size and matched.mode == "RGB"


def test_hard_families_are_test_only_and_processed_alike(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = build_demo_dataset(
        out, num_images=16, img_size=64, seed=1, holdout=["laundered", "spectrum_matched"]
    )
    assert summary["upsamplers"] == list(UPSAMPLERS)  # no up-sampler held out of training
    for family in ("laundered", "spectrum_matched"):
        for label in ("real", "fake"):
            files = sorted((out / "test" / family / label).glob("*.png"))
            assert files, (family, label)
            with Image.open(files[0]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
    assert not list((out / "train").rglob("*laundered*"))
    with pytest.raises(DataError, match="laundered, spectrum_matched"):
        build_demo_dataset(tmp_path / "bad", num_images=16, img_size=64, holdout=["gan"])
