"""Test-only fake families of the demo that hide the usual up-sampling traces.

A detector trained on the demo's up-sampling families learns (among other things) the periodic
grid and the missing high frequencies that up-sampling leaves. These families keep a
generator's fake but take those cues away, the way real-world fakes lose them:

- `laundered`: made at a larger size, then down-scaled with an anti-aliasing filter (the grid
  of the up-sampler falls between the new pixels) and JPEG-compressed; real images of the
  family go through the same steps, so processing is no cue.
- `spectrum_matched`: each fake's azimuthally averaged amplitude spectrum is equalised, per
  colour channel, to that of a real crop of the same photo; phases are kept. The radial
  spectrum, the feature a spectral detector reads, is then the real one's.

They are written only under `test/` (`fakedet demo-data --holdout laundered,spectrum_matched`):
no detector trains on them, and they must not be tuned against.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

HARD_FAMILIES = ("laundered", "spectrum_matched")
# laundered: the share of the larger image that the final size keeps, and the JPEG qualities.
LAUNDER_SCALE = (0.6, 0.85)
LAUNDER_QUALITY = (85, 95)


def launder_size(img_size: int, smallest_side: int, rng: random.Random) -> int:
    """The side to make a laundered pair at, before down-scaling to `img_size`."""
    return min(round(img_size / rng.uniform(*LAUNDER_SCALE)), smallest_side)


def launder(image: Image.Image, img_size: int, quality: int) -> Image.Image:
    """Down-scale `image` to `img_size` (Lanczos, anti-aliased), then a JPEG round trip."""
    small = image.resize((img_size, img_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _radial_bins(height: int, width: int) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None] * height
    fx = np.fft.rfftfreq(width)[None, :] * width
    return np.rint(np.sqrt(fy**2 + fx**2)).astype(np.int64)


def match_spectrum(fake: Image.Image, real: Image.Image) -> Image.Image:
    """`fake` with its per-channel radial amplitude spectrum set to `real`'s (phases kept)."""
    fake_pixels = np.asarray(fake, np.float64)
    real_pixels = np.asarray(real, np.float64)
    height, width, _ = fake_pixels.shape
    bins = _radial_bins(height, width)
    counts = np.bincount(bins.ravel())
    out = np.empty_like(fake_pixels)
    for channel in range(3):
        fake_spectrum = np.fft.rfft2(fake_pixels[..., channel])
        real_amplitude = np.abs(np.fft.rfft2(real_pixels[..., channel]))
        fake_radial = np.bincount(bins.ravel(), np.abs(fake_spectrum).ravel()) / counts
        real_radial = np.bincount(bins.ravel(), real_amplitude.ravel()) / counts
        gain = real_radial / np.maximum(fake_radial, 1e-8)
        gain[0] = 1.0  # the mean brightness stays the fake's
        matched = np.fft.irfft2(fake_spectrum * gain[bins], s=(height, width))
        out[..., channel] = matched
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")
