"""Detectors that see more than up-sampling: the small-image rule in every command, the demo's
new fake families and processed reals, and the patch read with top-k pooling."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_train_args
from fakedet.cli import app
from fakedet.data.dataset import collate
from fakedet.data.transforms import (
    EvalTransform,
    TooSmallError,
    TrainTransform,
    crop_shape,
    to_tensor,
)
from fakedet.demo.dataset import available_photos, build_demo_dataset
from fakedet.demo.families import (
    denoise_resynthesis,
    partial_fake,
    process_real,
    region_mask,
    subpixel_decoder,
)
from fakedet.inference.exported import ExportedModel
from fakedet.inference.predictor import min_input_side, score_views
from fakedet.models.detector import PatchRead
from fakedet.models.loading import build_model, forward_batch
from fakedet.models.registry import create_model

runner = CliRunner()


def photo_crop(side: int = 128) -> Image.Image:
    """A real photo's centre, scaled to `side` with an anti-aliasing filter."""
    with Image.open(available_photos()["astronaut"]) as photo:
        photo = photo.convert("RGB")
    width, height = photo.size
    centre = photo.crop((width // 2 - 128, height // 2 - 128, width // 2 + 128, height // 2 + 128))
    return centre.resize((side, side), Image.Resampling.LANCZOS)


def high_band_detector(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """A stand-in detector of up-sampling: realness from the share of the spectrum's top band
    (past 0.55 of Nyquist) against its middle; 2x up-scaled images have almost none there."""
    gray = images.mean(dim=1)
    gray = gray - gray.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(gray).abs() ** 2
    fy = torch.fft.fftfreq(gray.shape[1])[:, None]
    fx = torch.fft.fftfreq(gray.shape[2])[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / 0.5
    top = (power * ((radius > 0.55) & (radius <= 1))).sum(dim=(1, 2))
    middle = (power * ((radius > 0.25) & (radius <= 0.45))).sum(dim=(1, 2))
    return {"score": torch.sigmoid(20.0 * (top / middle - 0.3))}


def scored(image: Image.Image, img_size: int = 128) -> float:
    pixels = EvalTransform(img_size)(image)[None].float() / 255.0
    return float(high_band_detector(pixels)["score"][0])


# The rule itself


def test_crop_shape_keeps_native_sizes_from_the_minimum_up() -> None:
    assert crop_shape(300, 200, 128) == (128, 128)
    assert crop_shape(100, 70, 128) == (96, 64)  # multiples of 32, never up-scaled
    with pytest.raises(TooSmallError, match="40x90 px is below the 64 px minimum"):
        crop_shape(40, 90, 128)
    with pytest.raises(TooSmallError, match="128 px minimum"):
        crop_shape(96, 96, 128, min_side=128)  # a fixed-size export


def test_eval_transform_scores_a_small_image_on_its_own_pixels() -> None:
    image = photo_crop(100)
    crop = EvalTransform(128)(image)
    assert crop.shape == (3, 96, 96)
    assert torch.equal(crop, to_tensor(image.crop((2, 2, 98, 98))))


def test_train_transform_crops_small_images_natively() -> None:
    transform = TrainTransform(128, hflip=False, blur_prob=0.0, jpeg_prob=0.0)
    generator = torch.Generator().manual_seed(0)
    assert transform(photo_crop(80), generator).shape == (3, 64, 64)
    with pytest.raises(TooSmallError):
        transform(photo_crop(48), generator)


def test_a_real_photo_halved_with_anti_aliasing_keeps_its_real_verdict() -> None:
    full, half = photo_crop(128), photo_crop(64)
    assert scored(full) > 0.5
    assert scored(half) > 0.5  # scored at its native 64 px
    # What up-scaling small images did: the same photo made "fake" by the resize alone.
    upscaled = half.resize((128, 128), Image.Resampling.BICUBIC)
    assert scored(upscaled) < 0.5


def test_mixed_size_batches_score_as_each_image_alone() -> None:
    torch.manual_seed(0)
    model = create_model("fast", img_size=128).eval()
    images = [torch.rand(3, 128, 128), torch.rand(3, 64, 96), torch.rand(3, 128, 128)]
    batch = collate(
        [
            {"image": image, "label": 1.0, "index": i, "error": None}
            for i, image in enumerate(images)
        ]
    )
    assert isinstance(batch["images"], list)
    with torch.no_grad():
        together = forward_batch(model, batch["images"])
        alone = [model(image[None])["score"][0] for image in images]
        views = score_views(model, batch["images"])
    torch.testing.assert_close(together["score"], torch.stack(alone))
    torch.testing.assert_close(views, torch.stack(alone))


def test_fixed_size_exports_take_only_their_own_size() -> None:
    onnx = ExportedModel(runner=None, fmt="onnx", device=torch.device("cpu"))
    assert min_input_side(onnx, 128) == 128
    assert min_input_side(create_model("fast", img_size=128), 128) == 64


# The rule in every command


def write_photo(path: Path, side: int, seed: int, fake: bool = False) -> None:
    """A real photo crop of `side` px, or a fake: the crop 2x nearest up-sampled."""
    rng = random.Random(seed)
    names = sorted(available_photos())
    with Image.open(available_photos()[names[seed % len(names)]]) as photo:
        photo = photo.convert("RGB")
    left = rng.randint(0, photo.size[0] - side)
    top = rng.randint(0, photo.size[1] - side)
    image = photo.crop((left, top, left + side, top + side))
    if fake:
        image = image.resize((side // 2, side // 2), Image.Resampling.BOX)
        image = image.resize((side, side), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 128 px fast model trained 1 epoch on a set whose images are 128, 96 and 64 px, plus
    one of 40 px (too small); and a folder of images to score."""
    root = tmp_path_factory.mktemp("small")
    data = root / "data"
    seed = 0
    for split, count in (("train", 6), ("val", 3)):
        for label in ("real", "fake"):
            for number, side in enumerate([128, 96, 64, 128, 128, 96][:count]):
                seed += 1
                write_photo(data / split / label / f"{number}.png", side, seed, label == "fake")
    write_photo(data / "train" / "real" / "tiny.png", 40, 99)
    run = root / "run"
    result = runner.invoke(
        app, tiny_train_args(data, run, "--img-size", "128", "--batch-size", "6", "--epochs", "1")
    )
    assert result.exit_code == 0, result.output
    images = root / "images"
    write_photo(images / "big.png", 160, 7)
    write_photo(images / "half.png", 64, 7)
    write_photo(images / "tiny.png", 48, 7)
    return {"data": data, "run": run, "images": images, "root": root}


def test_train_uses_small_images_and_skips_too_small_ones(small_world: dict[str, Path]) -> None:
    log = (small_world["run"] / "skipped_files.txt").read_text(encoding="utf-8")
    assert "tiny.png" in log and "too small" in log and "64 px minimum" in log


def test_predict_scores_small_images_natively_and_too_small_ones_not(
    small_world: dict[str, Path],
) -> None:
    explained = small_world["root"] / "maps"
    result = runner.invoke(
        app,
        [
            "predict",
            str(small_world["run"] / "best_model.pt"),
            str(small_world["images"]),
            "--json",
            "--num-workers",
            "0",
            "--explain",
            str(explained),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {Path(row["path"]).name: row for row in json.loads(result.stdout)}
    assert rows["half.png"]["verdict"] in ("real", "fake") and rows["half.png"]["realness"]
    assert rows["tiny.png"]["verdict"] == "too small" and rows["tiny.png"]["realness"] is None
    assert "64 px minimum" in rows["tiny.png"]["error"]
    grids = {Path(json.loads(p.read_text())["image"]).name: p for p in explained.glob("*.json")}
    assert set(grids) == {"big.png", "half.png"}
    half = json.loads(grids["half.png"].read_text())
    assert half["crop"] == [64, 64] and half["map"] == "patch read"
    assert np.array(half["realness"]).shape == (2, 2)  # one cell per 32 px
    with Image.open(grids["big.png"].with_suffix(".png")) as overlay:
        assert overlay.size == (128, 128)


def test_evaluate_and_validate_count_small_images(small_world: dict[str, Path]) -> None:
    checkpoint = str(small_world["run"] / "best_model.pt")
    maps = small_world["root"] / "evaluate-maps"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(small_world["data"] / "val"),
            checkpoint,
            "--json",
            "--num-workers",
            "0",
            "--explain",
            str(maps),
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["n_real"] == 3 and row["n_fake"] == 3  # the 96 and 64 px images are scored
    assert len(list((maps / "0" / "val").glob("*.png"))) == 6
    result = runner.invoke(
        app, ["validate", checkpoint, str(small_world["data"]), "--json", "--num-workers", "0"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 6


def test_a_torchscript_export_gives_smaller_images_no_verdict(
    small_world: dict[str, Path],
) -> None:
    checkpoint = small_world["run"] / "best_model.pt"
    exported = small_world["root"] / "model.ts"
    result = runner.invoke(
        app, ["export", str(checkpoint), "--format", "torchscript", "--output", str(exported)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["predict", str(exported), str(small_world["images"]), "--json", "--num-workers", "0"]
    )
    assert result.exit_code == 0, result.output
    rows = {Path(row["path"]).name: row for row in json.loads(result.stdout)}
    assert rows["big.png"]["verdict"] in ("real", "fake")
    assert rows["half.png"]["verdict"] == "too small"
    assert "128 px minimum" in rows["half.png"]["error"]


# The demo's families


def test_demo_data_writes_every_new_family_with_masks_and_processed_reals(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        [
            "demo-data",
            str(out),
            "--num-images",
            "24",
            "--img-size",
            "64",
            "--seed",
            "3",
            "--families",
            "nearest,spliced,denoised",
            "--holdout",
            "inpainted,subpixel,resynthesised,processed_half,processed_jpeg",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "demo_info.json").read_text())
    assert info["families"] == ["nearest", "spliced", "denoised"]
    names = [p.stem for p in (out / "train" / "fake").glob("*.png")]
    used = {family for family in info["families"] for name in names if name.endswith(family)}
    assert used == {"nearest", "spliced", "denoised"}
    assert len(names) == info["images"]["train"]["fake"] > 0
    for name in [p.name for p in (out / "train" / "fake").glob("*spliced.png")]:
        assert (out / "masks" / "train" / name).is_file()
    inpainted = sorted((out / "test" / "inpainted" / "fake").glob("*.png"))
    assert inpainted and all(
        (out / "masks" / "test" / "inpainted" / p.name).is_file() for p in inpainted
    )
    assert not (out / "test" / "processed_half" / "fake").exists()
    with Image.open(next((out / "test" / "processed_half" / "real").glob("*.png"))) as small:
        assert small.size == (32, 32)


def test_a_familys_test_images_do_not_depend_on_the_train_mix(tmp_path: Path) -> None:
    for name, mix in (("a", ["nearest"]), ("b", ["bilinear", "denoised"])):
        build_demo_dataset(
            tmp_path / name, num_images=16, img_size=64, seed=5, families=mix, holdout=["subpixel"]
        )
    files = sorted((tmp_path / "a" / "test").rglob("*.png"))
    assert files
    for path in files:
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert twin.read_bytes() == path.read_bytes()


def test_demo_data_refuses_test_only_families_for_training(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo-data", str(tmp_path / "d"), "--families", "nearest,processed_jpeg"]
    )
    assert result.exit_code == 2 and "test-only" in result.output


def test_partial_fakes_change_only_the_masked_region() -> None:
    crop = photo_crop(64)
    mask = region_mask(64, random.Random(0))
    fake, binary = partial_fake(crop, Image.new("RGB", (64, 64), (255, 0, 0)), mask)
    changed = np.any(np.asarray(fake) != np.asarray(crop), axis=2)
    inside = np.asarray(binary) > 0
    assert changed.any() and not (changed & ~inside).any()


def test_denoiser_resynthesis_moves_further_with_strength() -> None:
    crop = photo_crop(64)
    original = np.asarray(crop, dtype=float)
    for family in ("denoised", "resynthesised"):
        gaps = [
            np.abs(
                np.asarray(denoise_resynthesis(crop, family, s, random.Random(1))) - original
            ).mean()
            for s in (0.03, 0.12)
        ]
        assert 0 < gaps[0] < gaps[1]


def test_subpixel_decoder_and_processing_keep_sizes() -> None:
    crop = photo_crop(64)
    assert subpixel_decoder(crop, torch.Generator().manual_seed(0)).size == (64, 64)
    assert process_real(crop, "processed_half", random.Random(0)).size == (32, 32)
    assert process_real(crop, "processed_jpeg", random.Random(0)).size == (64, 64)
    assert process_real(crop, "processed_resaved", random.Random(0)).size[0] < 64


def test_the_spectrum_read_sees_the_same_spectrum_at_any_size() -> None:
    """White noise has a flat spectrum at every size: its radial log power must not move with
    the pixel count, or a small real photo scored natively looks like another spectrum."""
    from fakedet.models.coherence import SpectralCoherenceBranch

    branch = SpectralCoherenceBranch(reference_side=128)
    generator = torch.Generator().manual_seed(0)
    profiles = [
        branch.profiles(torch.rand(4, 3, side, side, generator=generator))[1].mean(dim=0)
        for side in (64, 128)
    ]
    assert (profiles[0] - profiles[1]).abs().mean() < 0.1  # sampling noise of a few images
    assert (
        profiles[0] - SpectralCoherenceBranch().profiles(torch.rand(4, 3, 64, 64))[1]
    ).abs().mean() > 1.0


# The patch read


def test_top_k_pooling_is_the_mean_of_the_most_suspicious_patches() -> None:
    read = PatchRead(4, 8, topk=0.25)
    logits = torch.arange(16.0).view(1, 4, 4)
    read.head = torch.nn.Identity()  # features are the logits themselves
    patches, pooled = read(logits.unsqueeze(1).expand(1, 4, 4, 4)[:, :1])
    assert patches.shape == (1, 4, 4)
    assert pooled.item() == pytest.approx((0 + 1 + 2 + 3) / 4)


@pytest.mark.parametrize("name", ["fast", "full"])
def test_models_give_patch_maps_and_keep_their_top_k_share(name: str) -> None:
    model = create_model(name, img_size=128, patch_topk=0.5).eval()
    with torch.no_grad():
        assert model.patch_logits(torch.rand(1, 3, 128, 64)).shape[0] == 1
    rebuilt = build_model(name, 128, torch.device("cpu"), model.state_dict())
    assert float(rebuilt.patch_read.topk) == 0.5
    without = create_model(name, img_size=128, patch_topk=0.0)
    assert without.patch_read is None
    old = build_model(name, 128, torch.device("cpu"), without.state_dict())
    assert old.patch_read is None  # weights from before the patch read load as they were
