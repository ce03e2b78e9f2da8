"""Dataset discovery, labels, robust decoding, augmentation and the sampler."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_folder_dataset, write_image
from fakedet.data.dataset import ImageDataset, collate
from fakedet.data.loader import EpochSampler, make_loader
from fakedet.data.transforms import EvalTransform, TooSmallError, TrainTransform, load_rgb
from fakedet.errors import DataError, UsageError
from fakedet.sources.layouts import build_index


def test_folder_layout_labels_real_as_one(folder_dataset: Path) -> None:
    index = build_index(folder_dataset, use_csv=False, val_split=0.1, seed=0)
    assert index.layout == "real/fake"
    assert index.val_source == "folder 'val'"
    assert len(index.train) == 16 and len(index.val) == 16
    for sample in index.train + index.val:
        assert sample.label == (1.0 if "/real/" in sample.path else 0.0)


def test_without_val_folder_a_seeded_stratified_split(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", per_class=10, with_val=False)
    first = build_index(root, False, val_split=0.2, seed=3)
    again = build_index(root, False, val_split=0.2, seed=3)
    assert first.val == again.val
    assert sum(s.label for s in first.val) == 2 and len(first.val) == 4
    assert not {s.path for s in first.val} & {s.path for s in first.train}


@pytest.mark.parametrize(
    ("real_dir", "fake_dir", "val_dir"),
    [
        ("train/airplane/0_real", "train/airplane/1_fake", "val/airplane"),
        ("sdv4/train/nature", "sdv4/train/ai", "sdv4/val"),
        ("train/REAL", "train/FAKE", "test"),
    ],
)
def test_public_layouts_map_fake_folders_to_zero(
    tmp_path: Path, real_dir: str, fake_dir: str, val_dir: str
) -> None:
    root = tmp_path / "public"
    real_name, fake_name = Path(real_dir).name, Path(fake_dir).name
    for number in range(3):
        write_image(root / real_dir / f"r{number}.png", number)
        write_image(root / fake_dir / f"f{number}.png", 10 + number)
        write_image(root / val_dir / real_name / f"r{number}.png", 20 + number)
        write_image(root / val_dir / fake_name / f"f{number}.png", 30 + number)
    index = build_index(root, False, 0.1, 0)
    assert len(index.train) == 6 and len(index.val) == 6
    for sample in index.train + index.val:
        expected = 1.0 if Path(sample.path).parent.name == real_name else 0.0
        assert sample.label == expected


def test_missing_root_and_missing_class_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build_index(tmp_path / "nope", False, 0.1, 0)
    for number in range(4):
        write_image(tmp_path / "only" / "train" / "real" / f"{number}.png", number)
    with pytest.raises(DataError, match="no fake images"):
        build_index(tmp_path / "only", False, 0.1, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No labelled images"):
        build_index(tmp_path / "empty", False, 0.1, 0)


def test_bad_files_are_skipped_with_reasons(folder_dataset: Path) -> None:
    (folder_dataset / "train" / "real" / "zero.png").write_bytes(b"")
    (folder_dataset / "train" / "fake" / "text.jpg").write_text("not an image")
    index = build_index(folder_dataset, False, 0.1, 0)
    reasons = dict(index.skipped)
    assert len(reasons) == 2
    assert "0 bytes" in reasons[str(folder_dataset / "train" / "real" / "zero.png")]
    assert len(index.train) == 16


def test_truncated_image_is_dropped_by_collate(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    write_image(good, 1)
    truncated = tmp_path / "bad.png"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    from fakedet.sources.samples import Sample

    dataset = ImageDataset([Sample(str(good), 1.0), Sample(str(truncated), 0.0)], EvalTransform(64))
    batch = collate([dataset[0], dataset[1]])
    assert batch["images"].shape == (1, 3, 64, 64)
    assert batch["skipped"][0][0] == str(truncated)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_pillow_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        array = np.asarray(base.convert("L"), dtype=np.float32) * (257 if mode == "I;16" else 1)
        image = Image.fromarray(
            array.astype(np.uint16 if mode == "I;16" else np.int32 if mode == "I" else np.float32)
        )
        if mode == "I":
            image = image.convert("I")
    else:
        image = base.convert(mode)
    suffix = ".tif" if mode in ("CMYK", "I;16", "I", "F") else ".png"
    path = tmp_path / f"image{suffix}"
    image.save(path)
    rgb = load_rgb(str(path))
    assert rgb.mode == "RGB" and rgb.size == (50, 40)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 30), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(buffer.getvalue())
    assert load_rgb(str(path)).size == (30, 60)


def test_transforms_output_crops_and_never_upscale_small_images() -> None:
    small = Image.new("RGB", (100, 70))
    large = Image.new("RGB", (300, 200))
    generator = torch.Generator().manual_seed(0)
    train = TrainTransform(128, hflip=True, blur_prob=1.0, jpeg_prob=1.0)
    assert train(small, generator).shape == (3, 64, 96)  # native, cut to multiples of 32
    assert train(large, generator).shape == (3, 128, 128)
    assert EvalTransform(128)(large).shape == (3, 128, 128)
    with pytest.raises(TooSmallError):
        EvalTransform(128)(Image.new("RGB", (40, 30)))


def test_five_crops_are_the_centre_and_the_four_corners() -> None:
    pixels = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(80, 100, 3) % 251
    image = Image.fromarray(pixels.astype(np.uint8))  # 100 wide, 80 high
    views = EvalTransform(64, crops=5)(image)
    assert views.shape == (5, 3, 64, 64)
    whole = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    assert torch.equal(views[0], EvalTransform(64)(image))  # the centre crop, as with crops=1
    corners = [(0, 0), (0, 36), (16, 0), (16, 36)]  # (top, left): right and bottom edges touch
    for view, (top, left) in zip(views[1:], corners, strict=True):
        assert torch.equal(view, whole[:, top : top + 64, left : left + 64])
    with pytest.raises(UsageError, match="--crops 3 is not 1 or 5"):
        EvalTransform(64, crops=3)


def test_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochSampler(20, shuffle=True, seed=5)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    second = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == first
    assert first != second
    sampler.set_epoch(1, skip=7)
    assert list(sampler) == first[7:]


def test_same_seed_gives_same_batches_with_zero_and_two_workers(folder_dataset: Path) -> None:
    index = build_index(folder_dataset, False, 0.1, 0)
    batches = []
    for workers in (0, 2):
        loader = make_loader(
            index.train,
            TrainTransform(64, True, 0.5, 0.5),
            4,
            True,
            7,
            workers,
            False,
            False,
            2,
            True,
        )
        loader.batch_sampler.sampler.set_epoch(1)
        batches.append([batch["images"] for batch in loader])
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""
    buffer = io.BytesIO()
    Image.new("1", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # IHDR: 8-byte signature, 4-byte length, b"IHDR", then width and height, then its CRC.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_decompression_bomb_is_refused_and_skipped(folder_dataset: Path) -> None:
    bomb = folder_dataset / "train" / "fake" / "bomb.png"
    _png_claiming_size(bomb, 30_000, 30_000)  # 900M pixels, over Pillow's 179M refusal limit
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(str(bomb))
    index = build_index(folder_dataset, False, 0.1, 0)
    reasons = dict(index.skipped)
    assert "decompression bomb" in reasons[str(bomb)]
    assert str(bomb) not in {sample.path for sample in index.train}


def test_large_images_load_and_bombs_found_late_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that. A large image within the
    limit is cropped like any other; one over it, met only when a batch decodes it (the header
    scan ran under another limit), is dropped from the batch with its reason."""
    from fakedet.sources.samples import Sample

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    large, bomb = tmp_path / "large.png", tmp_path / "bomb.png"
    Image.new("RGB", (150, 100), (10, 20, 30)).save(large)  # 15k pixels: warned, allowed
    Image.new("RGB", (300, 200)).save(bomb)  # 60k pixels: refused
    dataset = ImageDataset([Sample(str(large), 1.0), Sample(str(bomb), 0.0)], EvalTransform(64))
    batch = collate([dataset[0], dataset[1]])
    assert batch["images"].shape == (1, 3, 64, 64)
    assert batch["images"][0, :, 0, 0].tolist() == [10, 20, 30]
    assert batch["skipped"][0][0] == str(bomb)
    assert "decompression bomb" in batch["skipped"][0][1].lower()


def test_dataset_with_no_readable_images_fails_before_training(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for label in ("real", "fake"):
            for number in range(3):
                path = tmp_path / "data" / split / label / f"{number}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"" if number else b"not an image at all")
    with pytest.raises(
        DataError, match=r"train split of .* has no readable images.*12 files could not be read"
    ):
        build_index(tmp_path / "data", False, 0.1, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_options_follow_the_worker_count(folder_dataset: Path, workers: int) -> None:
    index = build_index(folder_dataset, False, 0.1, 0)
    train = make_loader(
        index.train, EvalTransform(64), 4, True, 0, workers, False, True, 3, drop_last=True
    )
    val = make_loader(
        index.val, EvalTransform(64), 5, False, 0, workers, False, True, 3, drop_last=True
    )
    assert train.batch_sampler.drop_last is True
    assert val.batch_sampler.drop_last is False  # every val image is scored
    assert len(val) == 4  # 16 images in batches of 5: the partial last batch is kept
    assert train.persistent_workers is (workers > 0)
    assert train.prefetch_factor == (3 if workers else None)


def test_default_workers_follow_the_os_the_cores_and_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from fakedet import hardware
    from fakedet.config import TrainingConfig
    from fakedet.distributed.torchrun import DistContext
    from fakedet.training.build import resolve_num_workers

    def workers(device: str, world_size: int = 1) -> int:
        runtime = SimpleNamespace(device=torch.device(device), dist=DistContext(0, 0, world_size))
        return resolve_num_workers(TrainingConfig(data_root=Path(".")).num_workers, runtime)

    assert TrainingConfig(data_root=Path(".")).num_workers is None  # resolved at start
    monkeypatch.setattr(hardware.platform, "system", lambda: "Windows")
    assert workers("cpu") == workers("cuda") == 0
    monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 16)
    assert workers("cpu") == 4
    assert workers("cuda") == 12  # the GPU waits on decoding
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert workers("cuda", world_size=4) == 4  # four processes share the 16 cores
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)
    assert workers("cpu") == 2
    runtime = SimpleNamespace(device=torch.device("cuda"), dist=DistContext())
    assert resolve_num_workers(3, runtime) == 3  # a set value is kept
    # The advisor plans for another machine with the same rule.
    assert hardware.default_num_workers("Windows", 16) == 0
    assert hardware.default_num_workers("Darwin", 8) == 4
    assert hardware.default_num_workers("Linux", 8, "cuda") == 8


def _niceness_image(image: Image.Image, generator: torch.Generator, label: float) -> torch.Tensor:
    return torch.full((3, 4, 4), os.nice(0), dtype=torch.uint8)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="os.nice is POSIX only")
def test_workers_can_run_at_a_lower_priority(folder_dataset: Path) -> None:
    index = build_index(folder_dataset, False, 0.1, 0)
    base = os.nice(0)
    loader = make_loader(
        index.train, _niceness_image, 4, True, 0, 1, False, False, 2, True, worker_nice=5
    )
    loader.batch_sampler.sampler.set_epoch(1)
    batch = next(iter(loader))
    assert int(batch["images"].max()) == min(base + 5, 19)
    assert os.nice(0) == base  # the main process keeps its priority


def test_blur_sigma_max_bounds_the_training_blur() -> None:
    from fakedet.data.transforms import TrainTransform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))

    def to_float(pixels: torch.Tensor) -> torch.Tensor:
        return pixels.float()

    sharp = to_float(TrainTransform(32, False, 0.0, 0.0)(image, torch.Generator().manual_seed(0)))

    def detail_left(sigma_max: float) -> float:
        transform = TrainTransform(32, False, 1.0, 0.0, blur_sigma_max=sigma_max)
        blurred = to_float(transform(image, torch.Generator().manual_seed(0)))
        return float(blurred.diff(dim=-1).abs().mean() / sharp.diff(dim=-1).abs().mean())

    assert detail_left(0.05) > 0.99  # sigma at most 0.05: nearly untouched
    assert detail_left(10.0) < detail_left(1.0) < detail_left(0.05)  # same draw, scaled


def test_train_downscale_shrinks_by_a_drawn_factor_and_never_below_the_crop() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))  # value = x: slope 1 per pixel
    image = Image.fromarray(np.stack([ramp] * 3, axis=-1))
    train = TrainTransform(64, False, 0.0, 0.0, resize_prob=1.0, resize_min_scale=0.5)
    generator = torch.Generator().manual_seed(0)
    slopes = []
    for _ in range(12):
        crop = train(image, generator)[0].float()
        # A crop of an image down-scaled by s: the ramp climbs 1/s per pixel.
        slopes.append(float((crop[:, 1:] - crop[:, :-1]).mean()))
    assert all(0.99 <= slope <= 2.05 for slope in slopes)
    assert max(slopes) > 1.3 and len({round(slope, 2) for slope in slopes}) > 3
    small = Image.fromarray(np.stack([ramp[:64, :64]] * 3, axis=-1))
    # An image the size of the crop cannot shrink: it comes back unchanged.
    assert torch.equal(train(small, generator), torch.from_numpy(np.array(small)).permute(2, 0, 1))


def test_processing_on_real_only_leaves_fakes_untouched() -> None:
    from fakedet.data.processing import ProcessingAugment
    from fakedet.data.transforms import TrainTransform

    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8), "RGB"
    )
    always = ProcessingAugment({"jpeg60": 1.0})
    plain = TrainTransform(64, False, 0.0, 0.0)
    real_only = TrainTransform(64, False, 0.0, 0.0, processing=always, processing_real_only=True)
    both = TrainTransform(64, False, 0.0, 0.0, processing=always)

    def run(transform: TrainTransform, label: float) -> torch.Tensor:
        return transform(image, torch.Generator().manual_seed(5), label)

    assert torch.equal(run(real_only, 0.0), run(plain, 0.0))  # a fake keeps its pixels
    assert not torch.equal(run(real_only, 1.0), run(plain, 1.0))  # a real one is re-saved
    assert torch.equal(run(real_only, 1.0), run(both, 1.0))
    assert not torch.equal(run(both, 0.0), run(plain, 0.0))
