"""Patch-score maps and their heatmap overlays (fakedet/inference/explain.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fakedet.errors import UsageError
from fakedet.inference.explain import explain_maps, overlay_png, patch_starts, pixel_map
from fakedet.models.registry import create_model


def red_is_fake(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """A stand-in detector: realness is 1 minus the patch's mean red."""
    return {"score": 1.0 - images[:, 0].mean(dim=(1, 2))}


def image_with_red_square() -> torch.Tensor:
    images = torch.zeros(1, 3, 128, 96)
    images[:, 0, 64:128, 32:96] = 1.0  # a fully red block, bottom right
    return images


def test_patch_starts_cover_every_pixel_and_end_flush() -> None:
    assert patch_starts(128, 64, 32) == [0, 32, 64]
    assert patch_starts(100, 64, 32) == [0, 32, 36]
    assert patch_starts(40, 64, 32) == [0]


def test_explain_maps_scores_each_patch_on_the_grid() -> None:
    realness = explain_maps(red_is_fake, image_with_red_square(), patch=64, stride=32)
    assert realness.shape == (1, 3, 2)  # rows 0, 32, 64; columns 0, 32
    assert realness[0, 2, 1] == pytest.approx(0.0)  # the red block itself
    assert realness[0, 0, 0] == pytest.approx(1.0)  # the clean top left
    assert realness[0, 2, 0] == pytest.approx(0.5)  # half red


def test_explain_maps_batches_do_not_change_the_map() -> None:
    images = torch.rand(2, 3, 96, 96)
    whole = explain_maps(red_is_fake, images, patch=32, stride=16, batch_size=1000)
    chunked = explain_maps(red_is_fake, images, patch=32, stride=16, batch_size=3)
    np.testing.assert_allclose(whole, chunked, rtol=0, atol=1e-6)


def test_explain_maps_runs_a_builtin_detector_on_native_patches() -> None:
    torch.manual_seed(0)
    model = create_model("fast", img_size=64).eval()
    realness = explain_maps(model, torch.rand(2, 3, 128, 128), patch=64, stride=64)
    assert realness.shape == (2, 2, 2)
    assert np.isfinite(realness).all() and (realness >= 0).all() and (realness <= 1).all()


def test_explain_maps_refuses_a_bad_grid() -> None:
    with pytest.raises(UsageError, match="stride 0"):
        explain_maps(red_is_fake, torch.rand(1, 3, 64, 64), patch=32, stride=0)


def test_pixel_map_averages_the_patches_over_each_pixel() -> None:
    realness = explain_maps(red_is_fake, image_with_red_square(), patch=64, stride=32)[0]
    pixels = pixel_map(realness, 128, 96, patch=64, stride=32)
    assert pixels.shape == (128, 96)
    assert pixels[127, 95] == pytest.approx(0.0)
    assert pixels[0, 0] == pytest.approx(1.0)
    with pytest.raises(UsageError, match="not the 3x2 grid"):
        pixel_map(np.zeros((2, 2)), 128, 96, patch=64, stride=32)


def test_overlay_png_paints_suspect_patches_red() -> None:
    image = np.full((128, 96, 3), 128, dtype=np.uint8)
    realness = explain_maps(red_is_fake, image_with_red_square(), patch=64, stride=32)[0]
    for grid in ({"patch": 64, "stride": 32}, {}):
        png = overlay_png(image, realness, **grid)
        decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        assert decoded.shape == (128, 96, 3)
        fake_corner, real_corner = decoded[120, 90], decoded[4, 4]
        assert fake_corner[0] - fake_corner[2] > 50  # red over the fake block
        assert real_corner[2] > real_corner[0]  # blue where it looks real


def test_overlay_png_refuses_a_float_image() -> None:
    with pytest.raises(UsageError, match="uint8"):
        overlay_png(np.zeros((8, 8, 3), dtype=np.float32), np.ones((1, 1)))
