"""Flip, blur and JPEG-like augmentation of a whole batch on the training device (for CUDA),
instead of per image in the loader workers, where blur and JPEG re-encoding cost CPU time that
a GPU run is starved of.

Per-image parameters (flip or not, blur sigma, JPEG quality) are drawn on the device from a
generator seeded by the run's seed and the global step, so a resumed run draws what an unbroken
one would, and nothing in a step waits on the host (no `.item()`, no boolean indexing).
Cropping stays with the workers: a batch is stacked from equal crops of unequal images.

The JPEG is the codec's lossy part, batched: RGB -> YCbCr, 4:2:0 chroma, 8x8 DCT, the IJG
quantisation tables at the drawn quality, and back, rounded to 8-bit values; what entropy
coding adds is lossless. (torchvision's v2 JPEG and Gaussian blur take one quality or sigma
per call, so per-image draws would cost one call per image.)
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as F

# ITU-T T.81 Annex K: the luminance and chrominance tables that libjpeg scales by quality.
_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMINANCE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *(99,) * 32,
)  # fmt: skip
# JFIF's RGB -> YCbCr (before the +128 offset of the chroma planes).
_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
JPEG_QUALITY_RANGE = (30, 100)  # as the workers' augmentation draws


def quantisation_tables(quality: torch.Tensor) -> torch.Tensor:
    """(B,) integer qualities 1..100 -> (B, 2, 8, 8) luminance and chrominance tables, as
    libjpeg's jpeg_set_quality scales them (scale 5000/q below 50, else 200 - 2q)."""
    quality = quality.clamp(1, 100).to(torch.float32)
    scale = torch.where(quality < 50, torch.floor(5000 / quality), 200 - 2 * quality)
    base = _constants(quality.device, torch.float32)["tables"]
    tables = torch.floor((base[None] * scale[:, None, None] + 50) / 100).clamp(1, 255)
    return tables.view(-1, 2, 8, 8)


def _dct_matrix() -> torch.Tensor:
    """(8, 8) orthonormal DCT-II in float64: rows are frequencies."""
    steps = torch.arange(8, dtype=torch.float64)
    matrix = torch.cos((2 * steps[None, :] + 1) * steps[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix


@functools.cache
def _constants(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The codec's fixed matrices on `device`, made once per device and dtype: a tensor built
    from host values on a GPU is a copy the host waits for (and inverting a matrix there checks
    for errors on the host), so a step must find them already there."""
    to_ycbcr = torch.tensor(_TO_YCBCR, dtype=torch.float64)
    values = {
        "tables": torch.tensor([_LUMINANCE, _CHROMINANCE], dtype=torch.float64),
        "dct": _dct_matrix(),
        "to_ycbcr": to_ycbcr,
        "from_ycbcr": torch.linalg.inv(to_ycbcr),
    }
    return {name: value.to(device=device, dtype=dtype) for name, value in values.items()}


def _quantise_blocks(plane: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) level-shifted samples -> the same after 8x8 DCT, rounding to multiples of
    the (B, 1, 8, 8) tables, and inverse DCT."""
    batch, channels, height, width = plane.shape
    dct = _constants(plane.device, plane.dtype)["dct"]
    blocks = plane.reshape(batch, channels, height // 8, 8, width // 8, 8)
    coefficients = torch.einsum("uy,bcnymx,vx->bcnumv", dct, blocks, dct)
    step = tables[:, :, None, :, None, :]  # (B, 1, 1, 8, 1, 8)
    coefficients = torch.round(coefficients / step) * step
    blocks = torch.einsum("uy,bcnumv,vx->bcnymx", dct, coefficients, dct)
    return blocks.reshape(batch, channels, height, width)


def jpeg_like(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] with H and W multiples of 16, (B,) qualities -> each image after
    a JPEG round trip's losses at its quality, in [0, 1] on the 8-bit grid."""
    constants = _constants(images.device, images.dtype)
    ycbcr = torch.einsum(
        "kc,bchw->bkhw", constants["to_ycbcr"], images * 255.0
    )  # chroma centred on 0
    tables = quantisation_tables(quality)
    luma = _quantise_blocks(ycbcr[:, :1] - 128.0, tables[:, :1]) + 128.0
    chroma = F.avg_pool2d(ycbcr[:, 1:], 2)  # 4:2:0
    chroma = _quantise_blocks(chroma, tables[:, 1:])
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("ck,bkhw->bchw", constants["from_ycbcr"], torch.cat([luma, chroma], 1))
    return torch.round(rgb.clamp(0, 255)) / 255.0


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 3, H, W), (B,) sigmas -> each image blurred by its own separable Gaussian (sigma 0:
    unchanged), `radius` taps each side, reflected at the borders."""
    batch, channels, height, width = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    spread = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * spread**2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    planes = images.reshape(1, batch * channels, height, width)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    planes = F.conv2d(planes, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return planes.view(batch, channels, height, width)


class BatchAugment:
    """Flip, blur and JPEG-like augmentation of float batches in [0, 1], on their device."""

    def __init__(
        self, seed: int, hflip: bool, blur_prob: float, jpeg_prob: float, blur_sigma_max: float
    ) -> None:
        self.seed = seed
        self.hflip = hflip
        self.blur_prob = blur_prob
        self.jpeg_prob = jpeg_prob
        self.blur_sigma_max = blur_sigma_max
        self.radius = max(1, math.ceil(3 * blur_sigma_max))

    def __call__(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] -> the augmented batch; the draws depend on (seed,
        step) only."""
        batch = images.shape[0]
        generator = torch.Generator(device=images.device)
        generator.manual_seed(self.seed * 1_000_003 + step)
        draws = torch.rand(batch, 5, generator=generator, device=images.device)
        quality = (
            JPEG_QUALITY_RANGE[0]
            + (draws[:, 4] * (JPEG_QUALITY_RANGE[1] - JPEG_QUALITY_RANGE[0] + 1)).floor()
        )

        def selected(column: int, probability: float) -> torch.Tensor:
            return (draws[:, column] < probability).view(-1, 1, 1, 1)

        if self.hflip:
            images = torch.where(selected(0, 0.5), images.flip(-1), images)
        if self.blur_prob > 0:
            sigma = draws[:, 2] * self.blur_sigma_max
            blurred = gaussian_blur(images, sigma, self.radius)
            images = torch.where(selected(1, self.blur_prob), blurred, images)
        if self.jpeg_prob > 0:
            images = torch.where(selected(3, self.jpeg_prob), jpeg_like(images, quality), images)
        return images
