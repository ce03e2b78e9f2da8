"""The built-in demo dataset: real photo crops vs. fakes made from the same crops, offline, from
photos that installed packages ship: simulated generator up-sampling (AutoGAN, Zhang et al. 2019)
and the families of fakedet/demo/families.py (partial fakes with masks, denoiser re-synthesis,
sub-pixel decoders), plus test-only hard fakes and processed reals.

It shows that the tool works end to end; it is no claim about detecting real generators.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from fakedet.demo.families import (
    DECODER_FAMILIES,
    DENOISE_FAMILIES,
    PARTIAL_FAMILIES,
    PROCESSED_FAMILIES,
    make_fake,
    process_real,
)
from fakedet.demo.hard_fakes import (
    HARD_FAMILIES,
    LAUNDER_QUALITY,
    launder,
    launder_size,
    match_spectrum,
)
from fakedet.errors import DataError
from fakedet.io import ensure_folder

# (package, folder inside it, file) of real photographs shipped inside installed wheels.
PHOTO_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data", "astronaut.png"),
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "coffee.png"),
    ("skimage", "data", "motorcycle_left.png"),
    ("skimage", "data", "motorcycle_right.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "hubble_deep_field.jpg"),
    ("skimage", "data", "retina.jpg"),
    ("skimage", "data", "ihc.png"),
    ("skimage", "data", "camera.png"),
    ("skimage", "data", "coins.png"),
    ("skimage", "data", "grass.png"),
    ("skimage", "data", "gravel.png"),
    ("sklearn", "datasets/images", "china.jpg"),
    ("sklearn", "datasets/images", "flower.jpg"),
)

UPSAMPLERS = ("nearest", "bilinear", "bicubic", "transposed_conv", "pixel_shuffle")
# Fakes that train and val can hold, and the default mix of `demo-data`: every generator kind.
GENERATOR_FAMILIES = (*UPSAMPLERS, *PARTIAL_FAMILIES, *DENOISE_FAMILIES, *DECODER_FAMILIES)
DEFAULT_FAMILIES = GENERATOR_FAMILIES
# For --holdout only: fakes with the traces hidden, and real photos after everyday processing.
TEST_ONLY_FAMILIES = (*HARD_FAMILIES, *PROCESSED_FAMILIES)
ALL_FAMILIES = (*GENERATOR_FAMILIES, *TEST_ONLY_FAMILIES)


def available_photos() -> dict[str, Path]:
    """Name -> path of the shipped photos that are installed here."""
    found: dict[str, Path] = {}
    for package, folder, filename in PHOTO_SOURCES:
        # find_spec locates the package without importing it (importing sklearn takes seconds).
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / folder / filename
        if path.is_file():
            found[Path(filename).stem] = path
    return found


def _random_crop(photo: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A crop of `size` from the photo scaled by a random factor in [0.5, 1].

    Never upscaled: an upscaled "real" crop would carry the very traces the fakes are made of.
    """
    width, height = photo.size
    scale = rng.uniform(max(0.5, size / min(width, height)), 1.0)
    # Crop the region that shrinks to `size` first: resizing only it is far cheaper.
    region = min(math.ceil(size / scale), width, height)
    left = rng.randint(0, width - region)
    top = rng.randint(0, height - region)
    crop = photo.crop((left, top, left + region, top + region))
    if region != size:
        crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def _transposed_conv(low: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Stride-2 4x4 transposed conv with random weights near bilinear, each output phase summing to 1."""
    bilinear_1d = torch.tensor([0.25, 0.75, 0.75, 0.25])
    kernel = bilinear_1d[:, None] * bilinear_1d[None, :]
    kernel = kernel + 0.15 * torch.randn(4, 4, generator=generator)
    for phase_y in range(2):
        for phase_x in range(2):
            kernel[phase_y::2, phase_x::2] /= kernel[phase_y::2, phase_x::2].sum()
    weight = kernel.view(1, 1, 4, 4).repeat(3, 1, 1, 1)  # depthwise: (C, 1, 4, 4)
    return F.conv_transpose2d(low, weight, stride=2, padding=1, groups=3)


def _pixel_shuffle(low: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random 3x3 conv to 4 sub-pixel maps per channel (near identity), then pixel shuffle."""
    weight = torch.zeros(12, 1, 3, 3)
    weight[:, 0, 1, 1] = 1.0
    weight = weight + 0.12 * torch.randn(12, 1, 3, 3, generator=generator)
    weight = weight / weight.sum(dim=(2, 3), keepdim=True)
    expanded = F.conv2d(
        F.pad(low, (1, 1, 1, 1), mode="replicate"), weight, groups=3
    )  # (1, 12, h, w)
    return F.pixel_shuffle(expanded, 2)


def simulate_generator(image: Image.Image, method: str, generator: torch.Generator) -> Image.Image:
    """Down-sample by 2, then up-sample the way a generator's decoder would.

    Runs on one thread: with more, interpolate and conv sum in another order and a few pixels
    round to another value (seen on the 2-core machine: 82 of 1,200 files differed between a 1-
    and a 2-thread run), so the same seed would not write the same files everywhere.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _simulate_generator(image, method, generator)
    finally:
        torch.set_num_threads(threads)


def _simulate_generator(image: Image.Image, method: str, generator: torch.Generator) -> Image.Image:
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    low = F.avg_pool2d(pixels, 2)  # (1, 3, H/2, W/2)
    upsamplers: dict[str, Callable[[], torch.Tensor]] = {
        "nearest": lambda: F.interpolate(low, scale_factor=2, mode="nearest"),
        "bilinear": lambda: F.interpolate(
            low, scale_factor=2, mode="bilinear", align_corners=False
        ),
        "bicubic": lambda: F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False),
        "transposed_conv": lambda: _transposed_conv(low, generator),
        "pixel_shuffle": lambda: _pixel_shuffle(low, generator),
    }
    high = upsamplers[method]()
    array = (high[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def _check_families(families: Sequence[str], holdout: Sequence[str]) -> list[str]:
    """The train and val fake families: `families` less those held out.

    Raises:
        DataError: an unknown family, a test-only one asked for training, or none left.
    """
    unknown = [name for name in (*families, *holdout) if name not in ALL_FAMILIES]
    if unknown:
        raise DataError(
            f"{','.join(unknown)} is not a family of the demo; use some of "
            f"{', '.join(GENERATOR_FAMILIES)} (fakes), or for --holdout only "
            f"{', '.join(TEST_ONLY_FAMILIES)}."
        )
    test_only = [name for name in families if name in TEST_ONLY_FAMILIES]
    if test_only:
        raise DataError(
            f"--families {','.join(test_only)} is test-only; give it to --holdout instead."
        )
    kept = [name for name in families if name not in holdout]
    if not kept:
        raise DataError("--holdout names every family of --families; keep one for training.")
    return kept


def _job_random(seed: int, split: str) -> tuple[random.Random, torch.Generator]:
    """Random streams of one split, from the seed and the split's name only: a family's test
    images are the same whatever the train mix (before/after comparisons score the same set)."""
    key = zlib.crc32(f"{seed}/{split}".encode())
    return random.Random(key), torch.Generator().manual_seed(key)


def _make_image(
    family: str | None,
    label: str,
    photo: Image.Image,
    img_size: int,
    method: str,
    rng: random.Random,
    generator: torch.Generator,
) -> tuple[Image.Image, Image.Image | None]:
    """One image of a job: a real crop (processed for a processed family) or a fake of
    `method` (the hard families hide its traces); and the mask of a partial fake."""
    if family == "laundered":
        size = launder_size(img_size, min(photo.size), rng) // 2 * 2
        crop = _random_crop(photo, size, rng)
        if label == "fake":
            crop = simulate_generator(crop, method, generator)
        return launder(crop, img_size, rng.randint(*LAUNDER_QUALITY)), None
    crop = _random_crop(photo, img_size, rng)
    if family in PROCESSED_FAMILIES:
        return process_real(crop, family, rng), None
    if label == "real":
        return crop, None
    if method in UPSAMPLERS:
        fake = simulate_generator(crop, method, generator)
        return (match_spectrum(fake, crop) if family == "spectrum_matched" else fake), None
    # spliced regions come from a decoder that training also sees
    spliced_method = UPSAMPLERS[rng.randrange(len(UPSAMPLERS))]
    return make_fake(
        method,
        crop,
        rng,
        generator,
        lambda image: simulate_generator(image, spliced_method, generator),
    )


def build_demo_dataset(
    out_dir: Path,
    num_images: int = 800,
    img_size: int = 256,
    seed: int = 0,
    val_fraction: float = 0.2,
    on_progress: Callable[[int, int], None] | None = None,
    holdout: Sequence[str] = (),
    families: Sequence[str] = DEFAULT_FAMILIES,
) -> dict[str, object]:
    """Write `out_dir/{train,val}/{real,fake}/*.png`, split by source photo.

    With `holdout`, those families are kept out of train and val and written under
    `out_dir/test/<family>/{real,fake}/` instead, from photos that train and val do not use: a
    cross-generator test set. Each family gets as many test images as val has. The masks of
    partial fakes go to `out_dir/masks/<split>/<name>.png` (white: the generated region).

    Args:
        out_dir: output folder (created; existing demo files are overwritten).
        num_images: total images, half real and half fake.
        img_size: side of every (square) image (processed_half's are half of it).
        seed: seed of every random choice: the same seed writes the same files.
        val_fraction: share of the source photos that go to val only.
        on_progress: called with (done, total) after each image.
        holdout: families for the test set only: any of GENERATOR_FAMILIES (then kept out of
            train and val), and the test-only ones: the hard families of
            hard_fakes.HARD_FAMILIES (fakes of every up-sampler with their traces hidden) and
            the processed reals of families.PROCESSED_FAMILIES (real images only).
        families: the fake families of train and val (before `holdout` is taken out).

    Returns:
        A summary (counts per split and class, photos per split, families).

    Raises:
        DataError: bad sizes, unknown families, or too few shipped photos installed.
    """
    if num_images < 8:
        raise DataError(f"--num-images {num_images} is too small; use at least 8.")
    if img_size < 32 or img_size > 512 or img_size % 4:
        raise DataError(f"--img-size {img_size} is out of range; use a multiple of 4, 32 to 512.")
    kept = _check_families(families, holdout)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / "demo_info.json").is_file():
            raise DataError(
                f"{out_dir} already holds files that are not a demo dataset; give a new or empty "
                "folder."
            )
        # An earlier demo: replaced whole, so old and new images never mix.
        for split in ("train", "val", "test", "masks"):
            shutil.rmtree(out_dir / split, ignore_errors=True)
    loaded = {}
    for name, path in sorted(available_photos().items()):
        with Image.open(path) as photo:
            if min(photo.size) >= img_size:
                loaded[name] = photo.convert("RGB")
    if len(loaded) < 3:
        raise DataError(
            f"Fewer than 3 shipped photos of at least {img_size} px were found "
            "(scikit-image / scikit-learn missing, or --img-size too large); use --img-size 256."
        )
    rng = random.Random(seed)
    names = sorted(loaded)
    rng.shuffle(names)
    num_val_photos = max(1, round(len(names) * val_fraction))
    photo_split = {"val": sorted(names[:num_val_photos]), "train": sorted(names[num_val_photos:])}
    if holdout:  # test photos unseen in train and val
        photo_split = {
            "val": sorted(names[:num_val_photos]),
            "test": sorted(names[num_val_photos : 2 * num_val_photos]),
            "train": sorted(names[2 * num_val_photos :]),
        }

    num_val = max(4, round(num_images * val_fraction))
    # (folder, photos, number of images, the family, the fakes' methods)
    jobs: list[tuple[str, list[str], int, str | None, list[str]]] = [
        ("train", photo_split["train"], num_images - num_val, None, kept),
        ("val", photo_split["val"], num_val, None, kept),
    ]
    for family in holdout:
        # Hard families hide the traces of every up-sampler; processed ones have no fakes.
        methods = list(UPSAMPLERS) if family in HARD_FAMILIES else [family]
        jobs.append((f"test/{family}", photo_split["test"], num_val, family, methods))
    total_images = sum(
        count // 2 if family in PROCESSED_FAMILIES else count for _, _, count, family, _ in jobs
    )
    counts: dict[str, dict[str, int]] = {}
    done = 0
    for split, photos, total, family, methods in jobs:
        job_rng, job_generator = _job_random(seed, split)
        labels = ("real",) if family in PROCESSED_FAMILIES else ("real", "fake")
        counts[split] = dict.fromkeys(labels, 0)
        for label in labels:
            ensure_folder(out_dir / split / label)
        for number in range(total):
            label = "real" if number % 2 == 0 else "fake"
            if label not in labels:
                continue
            source = photos[(number // 2) % len(photos)]
            method = methods[(number // 2) % len(methods)]
            image, mask = _make_image(
                family, label, loaded[source], img_size, method, job_rng, job_generator
            )
            name = (
                f"{source}_{number:05d}_{method}.png"
                if label == "fake"
                else f"{source}_{number:05d}.png"
            )
            image.save(out_dir / split / label / name, compress_level=1)
            if mask is not None:
                mask.save(ensure_folder(out_dir / "masks" / split) / name, compress_level=1)
            counts[split][label] += 1
            done += 1
            if on_progress is not None:
                on_progress(done, total_images)
    summary = {
        "images": counts,
        "img_size": img_size,
        "seed": seed,
        "photos": photo_split,
        "upsamplers": [name for name in kept if name in UPSAMPLERS],
        "families": kept,
        "holdout": list(holdout),
    }
    (out_dir / "demo_info.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
