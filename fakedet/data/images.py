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


def _source(path: str) -> str | io.BytesIO:
    """The file, or the bytes of a shard sample (`SHARD.tar#MEMBER`, `SHARD.parquet#ROW`)."""
    if "#" not in path:  # a plain file: the shard reader is never imported
        return path
    from fakedet.data.shards import is_shard_key, read_shard_bytes

    return io.BytesIO(read_shard_bytes(path)) if is_shard_key(path) else path


def load_rgb(path: str) -> Image.Image:
    """Decode any image Pillow opens into RGB, with its EXIF orientation applied.

    Raises:
        OSError: unreadable or truncated data (Pillow's errors), or a decompression bomb.
    """
    with warnings.catch_warnings():
        # Large-but-allowed images warn; the hard limit still raises DecompressionBombError.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(_source(path)) as image:
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


def at_least(image: Image.Image, size: int) -> Image.Image:
    """`image`, up-scaled (bicubic) only when its shorter side is below `size`."""
    width, height = image.size
    if min(width, height) >= size:
        return image
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image.resize(new_size, Image.Resampling.BICUBIC)


CROP_CHOICES = (1, 5)


def check_crops(crops: int) -> int:
    """Raises: UsageError: `crops` is not one of CROP_CHOICES."""
    if crops not in CROP_CHOICES:
        choices = " or ".join(str(c) for c in CROP_CHOICES)
        raise UsageError(f"--crops {crops} is not {choices} (the centre, or centre and corners).")
    return crops


def eval_views(image: Image.Image, size: int, crops: int = 1) -> list[Image.Image]:
    """The views validation and scoring take of `image`: its centre crop of `size`, and with
    `crops` 5 also the four corners (up-scaled first only when smaller than `size`)."""
    image = at_least(image, size)
    width, height = image.size
    corners = [((width - size) // 2, (height - size) // 2)]
    if crops == 5:
        corners += [(0, 0), (width - size, 0), (0, height - size), (width - size, height - size)]
    return [image.crop((x, y, x + size, y + size)) for x, y in corners]
