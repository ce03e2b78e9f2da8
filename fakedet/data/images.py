"""Decoding image files to RGB and the deterministic views scored of them: no torch here, so
scoring an ONNX export needs none."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from fakedet.errors import UsageError

# Pillow's own guard (about 179M pixels raises) stays on: larger files are refused as bombs.
_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _high_bit_to_l(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16"):
        scaled = array / 257.0
    else:
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def image_source(path: str) -> str | io.BytesIO:
    """The file, or the bytes of a shard sample (`SHARD.tar#MEMBER`, `SHARD.parquet#ROW`)."""
    if "#" not in path:  # a plain file: the shard reader is never imported
        return path
    from fakedet.sources.shards.keys import is_shard_key
    from fakedet.sources.shards.reading import read_shard_bytes

    return io.BytesIO(read_shard_bytes(path)) if is_shard_key(path) else path


def load_rgb(path: str) -> Image.Image:
    """Decode any image Pillow opens into RGB, with its EXIF orientation applied.

    Raises:
        OSError: unreadable or truncated data (Pillow's errors), or a decompression bomb.
    """
    with warnings.catch_warnings():
        # Large-but-allowed images warn; the hard limit still raises DecompressionBombError.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(image_source(path)) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_BIT_MODES:
        image = _high_bit_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        # Transparent pixels become white rather than whatever colour they happened to store.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    return image.convert("RGB")


# Every built-in detector downsamples by 32 and runs at any multiple of it from 64 up.
INPUT_MULTIPLE = 32
MIN_SIDE = 64
TOO_SMALL = "too small"  # how a TooSmallError's message begins, and predict's verdict for it


class TooSmallError(ValueError):
    """An image with a side below the minimum the detector can score without resampling."""

    def __init__(self, width: int, height: int, min_side: int) -> None:
        super().__init__(
            f"{TOO_SMALL}: {width}x{height} px is below the {min_side} px minimum side this "
            "detector scores without resampling; no verdict (give the original, larger image)"
        )


def crop_shape(width: int, height: int, img_size: int, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(width, height) of the crop an image of that size is scored on: `img_size` per side
    where it fits, else the side's largest multiple of INPUT_MULTIPLE (native pixels).

    Raises:
        TooSmallError: a side below `min_side` (and below `img_size`: a crop that fits is taken).
    """
    if min(width, height) < min(min_side, img_size):
        raise TooSmallError(width, height, min_side)
    return (
        min(img_size, width // INPUT_MULTIPLE * INPUT_MULTIPLE),
        min(img_size, height // INPUT_MULTIPLE * INPUT_MULTIPLE),
    )


CROP_CHOICES = (1, 5)


def check_crops(crops: int) -> int:
    """Raises: UsageError: `crops` is not one of CROP_CHOICES."""
    if crops not in CROP_CHOICES:
        choices = " or ".join(str(c) for c in CROP_CHOICES)
        raise UsageError(f"--crops {crops} is not {choices} (the centre, or centre and corners).")
    return crops


def eval_views(
    image: Image.Image, size: int, crops: int = 1, min_side: int = MIN_SIDE
) -> list[Image.Image]:
    """The views validation and scoring take of `image`: its centre crop of `size`, and with
    `crops` 5 also the four corners. Never resampled: a side shorter than `size` is taken at its
    native size (`crop_shape`; see fakedet/data/transforms.py for the rule).

    Raises:
        TooSmallError: a side below `min_side` (MIN_SIDE; `size` for a fixed-size export).
    """
    width, height = image.size
    size_x, size_y = crop_shape(width, height, size, min_side)
    corners = [((width - size_x) // 2, (height - size_y) // 2)]
    if crops == 5:
        corners += [
            (0, 0),
            (width - size_x, 0),
            (0, height - size_y),
            (width - size_x, height - size_y),
        ]
    return [image.crop((x, y, x + size_x, y + size_y)) for x, y in corners]
