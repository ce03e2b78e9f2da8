"""Everyday processing of photos: the re-saves, re-sizes, sharpening, screenshots and crops a
real photo goes through on its way to a detector. `evaluate --processing` runs the suite on a
test set to show how often processed real photos are called fake; training can draw the same
kinds as augmentation (`ProcessingAugment`, per-kind probabilities).

Every kind is deterministic given its key: the only random choices (the screenshot's display
scale, the crop's position) come from a seed derived from the key (the image's path in
evaluation, a draw of the sample's generator in training).
"""

from __future__ import annotations

import io
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from PIL import Image, ImageFilter

from fakedet.errors import UsageError

# Display scales a screenshot of an image shown in a browser or image viewer is taken at:
# zoomed out, and the 110-150% of laptop and high-density screens.
SCREENSHOT_SCALES = (0.8, 0.9, 1.1, 1.25, 1.5)


@dataclass(frozen=True)
class Processing:
    """One everyday processing step: `label` names it (jpeg60), `operation` says what it does
    and `level` how strongly (quality, scale or kept share)."""

    label: str
    operation: str  # jpeg, webp, downscale, unsharp, screenshot, crop
    level: float = 0.0

    @property
    def name(self) -> str:
        """How reports name it, beside the `--perturb` levels: "processing:jpeg60"."""
        return f"processing:{self.label}"

    def apply(self, image: Image.Image, key: str) -> Image.Image:
        """The processed RGB image; `key` seeds the random choices (the same key, the same
        image)."""
        if self.operation in ("jpeg", "webp"):
            buffer = io.BytesIO()
            image.save(buffer, format=self.operation.upper(), quality=int(self.level))
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                return decoded.convert("RGB")
        if self.operation == "downscale":
            # Anti-aliased, as Pillow's thumbnail and most web pipelines shrink.
            return _resized(image, self.level, Image.Resampling.LANCZOS)
        if self.operation == "unsharp":
            # Pillow's defaults (radius 2, 150%, threshold 3): a phone or editor "sharpen".
            return image.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=3))
        chooser = random.Random(zlib.crc32(f"{key}|{self.label}".encode()))
        if self.operation == "screenshot":
            # Shown at a display scale and captured losslessly: one bilinear resampling.
            return _resized(image, chooser.choice(SCREENSHOT_SCALES), Image.Resampling.BILINEAR)
        width, height = image.size
        kept_width, kept_height = (
            max(1, round(width * self.level)),
            max(1, round(height * self.level)),
        )
        left = chooser.randint(0, width - kept_width)
        top = chooser.randint(0, height - kept_height)
        return image.crop((left, top, left + kept_width, top + kept_height))


def _resized(image: Image.Image, scale: float, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, resample)


SUITE = (
    Processing("jpeg95", "jpeg", 95),
    Processing("jpeg75", "jpeg", 75),
    Processing("jpeg60", "jpeg", 60),
    Processing("downscale0.75", "downscale", 0.75),
    Processing("downscale0.5", "downscale", 0.5),
    Processing("webp80", "webp", 80),
    Processing("webp70", "webp", 70),
    Processing("unsharp", "unsharp"),
    Processing("screenshot", "screenshot"),
    Processing("crop50", "crop", 0.5),
)
BY_LABEL = {processing.label: processing for processing in SUITE}
# Augmentation applies what it draws in the order a photo meets it: re-framing and re-sizing,
# then sharpening, then the lossy save last.
AUGMENT_ORDER = ("crop", "downscale", "screenshot", "unsharp", "jpeg", "webp")


def check_probabilities(probabilities: Mapping[str, float]) -> dict[str, float]:
    """The per-kind probabilities, checked.

    Raises:
        UsageError: an unknown kind or a probability outside [0, 1].
    """
    for label, probability in probabilities.items():
        if label not in BY_LABEL:
            raise UsageError(
                f"Processing kind {label!r} is unknown; use one of {', '.join(BY_LABEL)}."
            )
        if not 0.0 <= probability <= 1.0:
            raise UsageError(f"Processing probability {label}: {probability:g} is outside [0, 1].")
    return dict(probabilities)


class ProcessingAugment:
    """Training augmentation: each kind applied with its own probability, drawn from the
    sample's generator (so a seeded run draws the same processing every time)."""

    def __init__(self, probabilities: Mapping[str, float]) -> None:
        checked = check_probabilities(probabilities)
        self.steps = sorted(
            ((BY_LABEL[label], p) for label, p in checked.items() if p > 0),
            key=lambda step: (AUGMENT_ORDER.index(step[0].operation), step[0].label),
        )

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        for processing, probability in self.steps:
            if float(torch.rand(1, generator=generator)) < probability:
                key = str(int(torch.randint(2**31 - 1, (1,), generator=generator)))
                image = processing.apply(image, key)
        return image
