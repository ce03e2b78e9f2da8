"""Decoding for the training pipeline: JPEG through torchvision.io (libjpeg-turbo, straight to
a uint8 tensor), everything else, and whatever torchvision refuses, through Pillow's `load_rgb`.
With `gpu_decode` the workers leave plain JPEGs encoded (`encoded_crop`) and the training
process decodes each batch of them on the GPU (training/device_decode.py).

Both decoders give the same pixels for a baseline or progressive RGB / greyscale JPEG (libjpeg-
turbo under both; benchmarks/data.py checks and times them). Pillow reads the header first
either way: its decompression-bomb guard, its mode (CMYK and other rare JPEGs stay with Pillow,
which converts them as `load_rgb` always has) and EXIF orientation, which torchvision applies.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fakedet.data.images import image_source, load_rgb

# JPEG modes whose RGB conversion is the same in libjpeg-turbo's and Pillow's hands.
_TORCHVISION_JPEG_MODES = {"RGB", "L"}


@cache
def torchvision_io() -> Any:
    """torchvision.io, or None where torchvision is not installed or its image decoders are
    gone (imported on first use: it costs seconds of start-up). torchvision 0.29 deprecates
    them for TorchCodec; a release without them then decodes through Pillow, as without
    torchvision, instead of failing on the first JPEG."""
    try:
        from torchvision import io
    except ImportError:
        return None
    if not all(hasattr(io, name) for name in ("decode_jpeg", "read_file", "ImageReadMode")):
        return None
    return io


def _is_torchvision_jpeg(source: str | BytesIO) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(source) as image:  # the header only; raises on a bomb
            return image.format == "JPEG" and image.mode in _TORCHVISION_JPEG_MODES


def decode_rgb(path: str, backend: str = "torchvision") -> Image.Image:
    """The file (or shard sample) as an RGB image, decoded by torchvision.io for JPEGs when `backend` is
    "torchvision" and torchvision is installed; by Pillow (`load_rgb`) otherwise.

    Raises:
        OSError: unreadable or truncated data, or a decompression bomb (as `load_rgb`).
    """
    io = torchvision_io() if backend == "torchvision" else None
    source = image_source(path)  # a file, or a shard sample's bytes
    if io is None or not _is_torchvision_jpeg(source):
        return load_rgb(path)
    if isinstance(source, BytesIO):
        import torch

        data = torch.frombuffer(bytearray(source.getvalue()), dtype=torch.uint8)
    else:
        data = io.read_file(path)
    try:
        pixels = io.decode_jpeg(
            data, mode=io.ImageReadMode.RGB, apply_exif_orientation=True
        )  # (3, H, W) uint8
    except RuntimeError:
        return load_rgb(path)  # what libjpeg-turbo refuses, Pillow decodes or explains
    return Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()))


# EXIF orientation "normal": the stored pixels are the image as shown (nvJPEG does not rotate).
_UPRIGHT = 1


def encoded_crop(
    path: str,
    generator: Any,
    label: int,
    crop_only: Callable[..., tuple[int, int, int, int] | None],
) -> tuple[Any, tuple[int, int, int, int]] | None:
    """A plain JPEG's bytes (a 1-D uint8 tensor) and the crop box `crop_only` draws for it,
    when that crop is all the train transform would do; None for anything else (other
    formats and modes, a rotated EXIF orientation, or a sample the transform processes),
    which then takes the usual path with a fresh generator.

    Raises:
        OSError: an unreadable header, or a decompression bomb (as `load_rgb`).
    """
    source = image_source(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(source) as image:  # the header only; raises on a bomb
            plain = image.format == "JPEG" and image.mode in _TORCHVISION_JPEG_MODES
            if not plain or image.getexif().get(0x0112, _UPRIGHT) != _UPRIGHT:
                return None
            width, height = image.size
    box = crop_only(width, height, generator, label)
    if box is None:
        return None
    import torch

    raw = source.getvalue() if isinstance(source, BytesIO) else Path(path).read_bytes()
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8), box
