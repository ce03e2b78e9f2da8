"""Where in an image the detector sees a real photo or a fake: the image cut into a grid of crops
at the model's own size (half a crop apart), each crop scored on its own, and the calibrated
realness painted back over the image as a PNG overlay.

Each crop is read at the pixel grid the model was trained on (no resize, which would smear the
high-frequency traces it looks for). The map says which regions the model's score comes from; it
does not say why, and a region's colour is the mean of the crops that cover it, so regions
smaller than half a crop are not resolved.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fakedet.data.transforms import EvalTransform, to_tensor

MAX_CROPS_PER_SIDE = 16  # a 4000 px photo at 256 px would be 31 x 31 crops; 16 x 16 bounds it
OVERLAY_SIDE = 384  # longest side of the returned PNG, in pixels
# Calibrated realness 0 (fake) to 1 (real): orange to blue, apart for colour-blind readers too.
FAKE_COLOUR = np.array([230.0, 97.0, 0.0])
REAL_COLOUR = np.array([0.0, 114.0, 178.0])
OVERLAY_OPACITY = 0.5


@dataclass
class CropGrid:
    """The crops of one image, (N, 3, S, S) uint8, and where each lies: (left, top) in pixels."""

    pixels: torch.Tensor
    corners: list[tuple[int, int]]
    size: int


def _positions(length: int, size: int) -> list[int]:
    steps = math.ceil((length - size) / max(1, size // 2)) + 1
    steps = min(steps, MAX_CROPS_PER_SIDE)
    return sorted({round(float(p)) for p in np.linspace(0, length - size, steps)})


def crop_grid(image: Image.Image, size: int) -> CropGrid:
    """Crops of `size` half a crop apart over the whole image (at most MAX_CROPS_PER_SIDE a
    side, spread evenly); an image smaller than a crop is one crop, read as predict reads it."""
    width, height = image.size
    if min(width, height) < size:
        return CropGrid(EvalTransform(size)(image).unsqueeze(0), [(0, 0)], max(width, height))
    corners = [(x, y) for y in _positions(height, size) for x in _positions(width, size)]
    pixels = torch.stack([to_tensor(image.crop((x, y, x + size, y + size))) for x, y in corners])
    return CropGrid(pixels, corners, size)


def overlay_png(image: Image.Image, grid: CropGrid, realness: list[float]) -> bytes:
    """The image (longest side OVERLAY_SIDE at most) under the crops' calibrated realness: each
    pixel coloured by the mean of the crops that cover it, as a PNG."""
    width, height = image.size
    scale = min(1.0, OVERLAY_SIDE / max(width, height))
    shown = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    total = np.zeros((shown.height, shown.width))  # (h, w)
    covered = np.zeros_like(total)
    for (x, y), value in zip(grid.corners, realness, strict=True):
        left, top = math.floor(x * scale), math.floor(y * scale)
        right = math.ceil((x + grid.size) * scale)
        bottom = math.ceil((y + grid.size) * scale)
        total[top:bottom, left:right] += value
        covered[top:bottom, left:right] += 1
    mean = np.divide(total, covered, out=np.full_like(total, np.nan), where=covered > 0)
    colour = FAKE_COLOUR + np.nan_to_num(mean)[..., None] * (REAL_COLOUR - FAKE_COLOUR)  # (h, w, 3)
    opacity = np.where(covered > 0, OVERLAY_OPACITY, 0.0)[..., None]
    pixels = np.asarray(shown, dtype=np.float64) * (1 - opacity) + colour * opacity
    buffer = io.BytesIO()
    Image.fromarray(pixels.round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
