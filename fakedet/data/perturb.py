"""Perturbations for robustness evaluation: JPEG, WebP, Gaussian blur, resize and noise.

Each is applied to the decoded image before the crop, identically to real and fake images, and
deterministically: its randomness (noise only) comes from a seed derived from the image's path.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from fakedet.errors import UsageError

# kind -> (lowest, highest) level accepted, and what a level means.
LEVEL_RANGES: dict[str, tuple[float, float, str]] = {
    "jpeg": (1, 100, "JPEG quality"),
    "webp": (1, 100, "WebP quality"),
    "blur": (0, 100, "Gaussian sigma in pixels (> 0)"),
    "resize": (0.1, 4.0, "scale factor"),
    "noise": (0, 255, "Gaussian sigma in 0-255 units (> 0)"),
}
EXAMPLE = "jpeg:95,75,50 blur:1,2 resize:0.5 webp:75 noise:5"


@dataclass(frozen=True)
class Perturbation:
    """One kind at one level; `none` is the unperturbed image."""

    kind: str
    level: float = 0.0

    @property
    def name(self) -> str:
        """The spelling used in tables and JSON: "none" or "kind:level" (e.g. "jpeg:75")."""
        if self.kind == "none":
            return "none"
        return f"{self.kind}:{self.level:g}"

    def apply(self, image: Image.Image, key: str) -> Image.Image:
        """The perturbed RGB image; `key` (the image's path) seeds any randomness."""
        if self.kind == "none":
            return image
        if self.kind in ("jpeg", "webp"):
            buffer = io.BytesIO()
            image.save(buffer, format=self.kind.upper(), quality=int(self.level))
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                return decoded.convert("RGB")
        if self.kind == "blur":
            return image.filter(ImageFilter.GaussianBlur(self.level))  # radius = sigma
        if self.kind == "resize":
            width, height = image.size
            size = (max(1, round(width * self.level)), max(1, round(height * self.level)))
            return image.resize(size, Image.Resampling.BICUBIC)
        seed = zlib.crc32(f"{key}|{self.name}".encode())
        noise = np.random.default_rng(seed).normal(0.0, self.level, (image.height, image.width, 3))
        pixels = np.asarray(image, dtype=np.float32) + noise
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")


NONE = Perturbation("none")


def parse_perturbations(specs: list[str]) -> list[Perturbation]:
    """`["jpeg:95,75", "blur:1"]` -> none first, then each kind:level in the order given.

    Raises:
        UsageError: an unknown kind, a level that is not a number, or one out of range.
    """
    parsed = [NONE]
    for spec in specs:
        kind, _, levels = spec.partition(":")
        kind = kind.strip().lower()
        if kind not in LEVEL_RANGES:
            raise UsageError(
                f"--perturb {spec!r}: unknown kind {kind!r}; use one of "
                f"{', '.join(LEVEL_RANGES)} as KIND:LEVEL[,LEVEL...] (e.g. {EXAMPLE})."
            )
        low, high, meaning = LEVEL_RANGES[kind]
        if not levels.strip():
            raise UsageError(f"--perturb {spec!r} has no level: write {kind}:LEVEL ({meaning}).")
        for text in levels.split(","):
            try:
                level = float(text)
            except ValueError:
                raise UsageError(
                    f"--perturb {spec!r}: level {text!r} is not a number ({meaning})."
                ) from None
            positive = kind in ("blur", "noise")
            if not low <= level <= high or (positive and level <= 0):
                bound = f"> {low:g}" if positive else f">= {low:g}"
                raise UsageError(
                    f"--perturb {spec!r}: level {level:g} is out of range for {kind} "
                    f"({meaning}: {bound} and <= {high:g})."
                )
            if kind in ("jpeg", "webp") and level != int(level):
                raise UsageError(f"--perturb {spec!r}: {kind} quality must be a whole number.")
            perturbation = Perturbation(kind, level)
            if perturbation not in parsed:
                parsed.append(perturbation)
    return parsed
