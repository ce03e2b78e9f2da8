"""Demo fake families made without a whole-image 2x up-sampling trace, and processed reals.

Beside the demo's up-sampling decoders (fakedet/demo/dataset.py) these are the other ways fakes
are made, built offline from the shipped photos with numpy and torch only:

- partial fakes: a region of a real photo replaced, the rest untouched, with the region's mask.
  `spliced` pastes a region that an up-sampling decoder regenerated; `inpainted` fills the
  region by noise then a denoiser, the way a diffusion inpainter re-synthesises a hole.
- denoiser re-synthesis: the whole photo with Gaussian noise added, then denoised, at several
  noise strengths (the last steps of a diffusion sampler, or SDEdit). `denoised` uses an
  edge-preserving bilateral filter, `resynthesised` a Wiener filter in the Fourier domain.
- `subpixel`: a two-stage sub-pixel-convolution decoder (ESPCN-style, x4): each stage a random
  near-identity 3x3 conv to four sub-pixel maps per channel, PixelShuffle, and a soft
  non-linearity between; the up-sampler of many GANs and super-resolution models.
- processed reals (`processed_half`, `processed_jpeg`, `processed_resaved`): real photos after
  everyday handling (down-scaled to half size with anti-aliasing, JPEG re-saves, a resize then
  a re-save). They have real images only and must stay real.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.nn import functional as F

PARTIAL_FAMILIES = ("spliced", "inpainted")
DENOISE_FAMILIES = ("denoised", "resynthesised")
DECODER_FAMILIES = ("subpixel",)
PROCESSED_FAMILIES = ("processed_half", "processed_jpeg", "processed_resaved")
# Noise std (on [0, 1] pixels) of denoiser re-synthesis: each fake draws one of these strengths.
DENOISE_STRENGTHS = (0.03, 0.06, 0.12)
# A partial fake's region covers this share of the image side, as a feathered ellipse.
REGION_SIDE = (0.3, 0.6)


def _to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), mode="RGB")


def bilateral_denoise(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """An edge-preserving 5x5 bilateral filter of (H, W, 3) pixels in [0, 1] whose range
    weights follow the noise std `sigma`."""
    padded = np.pad(pixels, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    height, width = pixels.shape[:2]
    total = np.zeros_like(pixels)
    weights = np.zeros((*pixels.shape[:2], 1))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            shifted = padded[2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]
            distance = ((shifted - pixels) ** 2).sum(axis=2, keepdims=True)
            weight = np.exp(-(dy * dy + dx * dx) / 4.5 - distance / (6.0 * sigma**2))
            total += weight * shifted
            weights += weight
    return total / weights


def wiener_denoise(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Wiener filter in the Fourier domain: each frequency kept in proportion to
    how much of its power is signal rather than white noise of std `sigma`."""
    height, width = pixels.shape[:2]
    out = np.empty_like(pixels)
    noise_power = sigma**2 * height * width
    for channel in range(3):
        spectrum = np.fft.fft2(pixels[..., channel])
        power = np.abs(spectrum) ** 2
        gain = np.maximum(power - noise_power, 0.0) / np.maximum(power, 1e-12)
        out[..., channel] = np.fft.ifft2(spectrum * gain).real
    return out


def denoise_resynthesis(
    image: Image.Image, family: str, strength: float, rng: random.Random
) -> Image.Image:
    """`image` with Gaussian noise of std `strength` added (seeded by `rng`), then denoised by
    the family's denoiser (`denoised`: bilateral, `resynthesised`: Wiener)."""
    pixels = _to_float(image)
    noise = np.random.default_rng(rng.getrandbits(63)).normal(0.0, strength, pixels.shape)
    noisy = np.clip(pixels + noise, 0.0, 1.0)
    denoiser = bilateral_denoise if family == "denoised" else wiener_denoise
    return _to_image(denoiser(noisy, strength))


def region_mask(size: int, rng: random.Random) -> Image.Image:
    """An 'L' mask (255 inside) of a feathered ellipse covering REGION_SIDE of the side."""
    width = round(size * rng.uniform(*REGION_SIDE))
    height = round(size * rng.uniform(*REGION_SIDE))
    left, top = rng.randint(0, size - width), rng.randint(0, size - height)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((left, top, left + width, top + height), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(2))


def partial_fake(
    image: Image.Image, region: Image.Image, mask: Image.Image
) -> tuple[Image.Image, Image.Image]:
    """`image` with `region`'s pixels inside the feathered `mask`; and the binary mask of the
    pixels that changed at all (what localisation is scored against)."""
    fake = Image.composite(region, image, mask)
    binary = mask.point(lambda value: 255 if value > 0 else 0)
    return fake, binary


def subpixel_decoder(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """Down-sample by 4, then decode back up by two sub-pixel-convolution stages."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical files on any machine (see simulate_generator)
    try:
        pixels = torch.from_numpy(_to_float(image).astype(np.float32)).permute(2, 0, 1)[None]
        features = F.avg_pool2d(pixels, 4)  # (1, 3, H/4, W/4)
        for stage in range(2):
            weight = torch.zeros(12, 1, 3, 3)
            weight[:, 0, 1, 1] = 1.0
            weight = weight + 0.1 * torch.randn(12, 1, 3, 3, generator=generator)
            weight = weight / weight.sum(dim=(2, 3), keepdim=True)
            bias = 0.02 * torch.randn(12, generator=generator)
            padded = F.pad(features, (1, 1, 1, 1), mode="replicate")
            features = F.pixel_shuffle(F.conv2d(padded, weight, bias, groups=3), 2)
            if stage == 0:  # a decoder's non-linearity between stages, near identity on [0, 1]
                features = features + 0.1 * torch.tanh(4.0 * (features - 0.5)) / 4.0
        array = features[0].permute(1, 2, 0).clamp(0, 1).numpy()
        return _to_image(array.astype(np.float64))
    finally:
        torch.set_num_threads(threads)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def process_real(image: Image.Image, family: str, rng: random.Random) -> Image.Image:
    """A real photo after everyday handling: `processed_half` down-scaled to half its side
    (Lanczos, anti-aliased); `processed_jpeg` re-saved as JPEG at quality 60-90;
    `processed_resaved` down-scaled to 60-90% and re-saved at quality 75-95."""
    width, height = image.size
    if family == "processed_half":
        return image.resize((width // 2, height // 2), Image.Resampling.LANCZOS)
    if family == "processed_jpeg":
        return _jpeg(image, rng.randint(60, 90))
    scale = rng.uniform(0.6, 0.9)
    smaller = image.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    return _jpeg(smaller, rng.randint(75, 95))


def make_fake(
    family: str,
    crop: Image.Image,
    rng: random.Random,
    generator: torch.Generator,
    upsample: Callable[[Image.Image], Image.Image],
) -> tuple[Image.Image, Image.Image | None]:
    """A fake of one of this module's families from a real `crop`, and its mask (partial fakes
    only). `upsample` regenerates an image with a train up-sampling decoder (for `spliced`)."""
    if family in DENOISE_FAMILIES:
        return denoise_resynthesis(crop, family, rng.choice(DENOISE_STRENGTHS), rng), None
    if family == "subpixel":
        return subpixel_decoder(crop, generator), None
    mask = region_mask(crop.size[0], rng)
    if family == "spliced":
        region = upsample(crop)
    else:  # inpainted: the hole re-synthesised from noise by a denoiser
        region = denoise_resynthesis(crop, "resynthesised", max(DENOISE_STRENGTHS), rng)
    return partial_fake(crop, region, mask)
