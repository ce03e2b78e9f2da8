"""`gpu_decode`: the loader workers leave plain JPEGs encoded with the crop they drew, and the
training process decodes each batch of them on its device. On a CPU device the same code runs
libjpeg-turbo, so the batches must equal the workers' own decoding pixel for pixel."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_train_args
from fakedet.cli import app
from fakedet.data.decode import encoded_crop
from fakedet.data.loader import make_loader
from fakedet.data.transforms import TrainTransform
from fakedet.sources.samples import Sample
from fakedet.training.device_decode import decode_on_device

pytest.importorskip("torchvision")
runner = CliRunner()
SIZE = 96


def _photo(seed: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def _samples(root: Path) -> list[Sample]:
    """Plain JPEGs (one narrower than the crop: scored at its own size), a PNG, a JPEG with a
    rotating EXIF orientation, a greyscale JPEG, and a JPEG cut short after its header."""
    root.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, int]] = []
    for number, (width, height) in enumerate([(128, 112), (112, 160), (96, 96), (140, 100)]):
        path = root / f"plain{number}.jpg"
        _photo(number, width, height).save(path, quality=90)
        files.append((str(path), number % 2))
    narrow = root / "narrow.jpg"  # 72 px wide: below the 96 px crop, above MIN_SIDE
    _photo(7, 72, 128).save(narrow, quality=85)
    png = root / "lossless.png"
    _photo(8, 100, 100).save(png)
    rotated = root / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: nvJPEG would not rotate it
    _photo(9, 128, 96).save(rotated, quality=90, exif=exif)
    grey = root / "grey.jpg"
    _photo(10, 112, 112).convert("L").save(grey, quality=90)
    files += [(str(narrow), 1), (str(png), 0), (str(rotated), 1), (str(grey), 0)]
    return [Sample(path=path, label=label) for path, label in files]


def _truncated(root: Path) -> Sample:
    path = root / "truncated.jpg"
    full = root / "whole.jpg"
    _photo(11, 128, 128).save(full, quality=90)
    path.write_bytes(full.read_bytes()[:400])  # the header parses, the scan data is gone
    return Sample(path=str(path), label=1)


def _transform(resize_prob: float = 0.0) -> TrainTransform:
    # What the workers keep with gpu_augment on: the crop (and any down-scale) only.
    return TrainTransform(SIZE, hflip=False, blur_prob=0.0, jpeg_prob=0.0, resize_prob=resize_prob)


def _loader(samples: list[Sample], transform: TrainTransform, defer: bool, seed: int = 3):
    """One batch of every sample, its epoch set; JPEGs left encoded with `defer`."""
    loader = make_loader(
        samples, transform, batch_size=len(samples), train=True, seed=seed, num_workers=0,
        pin_memory=torch.cuda.is_available(), persistent_workers=False, prefetch_factor=2,
        drop_last=False,
        defer=partial(encoded_crop, crop_only=transform.crop_only) if defer else None,
    )  # fmt: skip
    loader.batch_sampler.sampler.set_epoch(1)
    return loader


def _batches(samples: list[Sample], transform: TrainTransform, defer: bool) -> list[dict]:
    loader = _loader(samples, transform, defer)
    return [decode_on_device(batch, torch.device("cpu")) for batch in loader]


def _by_index(batch: dict) -> dict[int, tuple[torch.Tensor, float]]:
    images = batch["images"]
    images = list(images.unbind(0)) if isinstance(images, torch.Tensor) else images
    indices, labels = batch["indices"].tolist(), batch["labels"].tolist()
    return {
        index: (image, label) for index, image, label in zip(indices, images, labels, strict=True)
    }


@pytest.mark.parametrize("resize_prob", [0.0, 0.5])
def test_deferred_jpegs_decode_to_the_workers_pixels(tmp_path: Path, resize_prob: float) -> None:
    samples = _samples(tmp_path / "files")
    transform = _transform(resize_prob)
    [plain] = _batches(samples, transform, defer=False)
    [deferred] = _batches(samples, transform, defer=True)
    expected, got = _by_index(plain), _by_index(deferred)
    assert sorted(got) == sorted(expected) == list(range(len(samples)))
    for index, (image, label) in expected.items():
        assert got[index][1] == label
        assert got[index][0].dtype == torch.uint8
        assert torch.equal(got[index][0], image), samples[index].path
    # The narrow JPEG keeps its native width, cut to a multiple of 32 (never resampled).
    assert expected[4][0].shape == (3, SIZE, 64)


def test_only_plain_upright_jpegs_stay_encoded(tmp_path: Path) -> None:
    samples = _samples(tmp_path / "files")
    loader = _loader(samples, _transform(), defer=True, seed=0)
    [batch] = list(loader)
    names = sorted(Path(path).name for path in batch["encoded"]["paths"])
    # The PNG and the rotated JPEG were decoded by the worker; greyscale JPEGs decode as RGB.
    assert names == ["grey.jpg", "narrow.jpg", "plain0.jpg", "plain1.jpg", "plain2.jpg",
                     "plain3.jpg"]  # fmt: skip
    assert batch["images"].shape[0] == 2
    for data, (left, top, right, bottom) in zip(
        batch["encoded"]["data"], batch["encoded"]["crops"], strict=True
    ):
        assert data.dtype == torch.uint8 and data.dim() == 1
        assert right - left in (64, SIZE) and bottom - top == SIZE


def test_a_jpeg_that_fails_to_decode_is_skipped_with_its_label(tmp_path: Path) -> None:
    samples = [*_samples(tmp_path / "files")[:4], _truncated(tmp_path / "files")]
    [batch] = _batches(samples, _transform(), defer=True)
    assert [Path(path).name for path, _ in batch["skipped"]] == ["truncated.jpg"]
    assert sorted(batch["indices"].tolist()) == [0, 1, 2, 3]
    assert batch["images"].shape == (4, 3, SIZE, SIZE)
    labels = dict(zip(batch["indices"].tolist(), batch["labels"].tolist(), strict=True))
    assert labels == {i: float(samples[i].label) for i in range(4)}


def test_a_jpeg_the_device_refuses_is_decoded_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nvJPEG refuses some files libjpeg-turbo reads: those must be decoded, not skipped.
    from fakedet.data.decode import torchvision_io

    io = torchvision_io()
    real_decode = io.decode_jpeg
    samples = _samples(tmp_path / "files")[:4]
    refused = Path(samples[2].path).read_bytes()

    def picky(data, mode=None, **kwargs):  # type: ignore[no-untyped-def]
        # The device's decoder (called with a device) refuses one file; the CPU's reads it.
        batch = data if isinstance(data, list) else [data]
        if "device" in kwargs and any(bytes(one.numpy()) == refused for one in batch):
            raise RuntimeError("nvjpeg: unsupported")
        return real_decode(data, mode=mode, **kwargs)

    monkeypatch.setattr(io, "decode_jpeg", picky)
    transform = _transform()
    [expected] = _batches(samples, transform, defer=False)
    batch = decode_on_device(
        next(iter(_loader(samples, transform, defer=True))), torch.device("cpu")
    )
    assert batch["skipped"] == []
    got, want = _by_index(batch), _by_index(expected)
    assert sorted(got) == [0, 1, 2, 3]
    for index, (image, _) in want.items():
        assert torch.equal(got[index][0], image)


def test_crop_only_draws_the_crop_the_transform_cuts() -> None:
    image = _photo(0, 120, 90)
    transform = _transform()
    for seed in range(5):
        box = transform.crop_only(120, 90, torch.Generator().manual_seed(seed), 1)
        cut = transform(image, torch.Generator().manual_seed(seed), 1)
        expected = torch.from_numpy(np.array(image.crop(box))).permute(2, 0, 1)
        assert torch.equal(cut, expected)
    flips = TrainTransform(SIZE, hflip=True, blur_prob=0.0, jpeg_prob=0.0)
    assert flips.crop_only(120, 90, torch.Generator().manual_seed(0), 1) is None


def test_gpu_decode_without_gpu_augment_is_refused(folder_dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, tiny_train_args(folder_dataset, tmp_path / "run", "--gpu-decode"))
    assert result.exit_code == 2, result.output
    assert "gpu_decode needs gpu_augment" in result.output
    assert "--gpu-augment" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_decodes_close_to_libjpeg_turbo_and_trains(tmp_path: Path) -> None:
    samples = _samples(tmp_path / "files")
    transform = _transform()
    loader = _loader(samples, transform, defer=True)
    [batch] = list(loader)
    on_cuda = _by_index(decode_on_device(batch, torch.device("cuda")))
    on_cpu = _by_index(_batches(samples, transform, defer=False)[0])
    for index, (image, _) in on_cpu.items():
        assert on_cuda[index][0].is_cuda
        difference = (on_cuda[index][0].cpu().float() - image.float()).abs().mean()
        assert difference < 2.0, (samples[index].path, float(difference))
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("real", "fake"):
            for number in range(8):
                (data / split / label).mkdir(parents=True, exist_ok=True)
                _photo(number + 20 * (label == "fake"), 80, 80).save(
                    data / split / label / f"{number}.jpg", quality=90
                )
    args = [*tiny_train_args(data, tmp_path / "run", "--gpu-augment", "--gpu-decode")]
    args[args.index("--device") + 1] = "cuda"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
