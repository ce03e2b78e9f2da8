"""The map-style dataset: decodes one sample, survives a bad file, and augments reproducibly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from fakedet.data.transforms import load_rgb
from fakedet.sources.samples import Sample

Transform = Callable[[Image.Image, torch.Generator, int], torch.Tensor]  # image, rng, label


class ImageDataset(Dataset):
    """Indexed by (index, sample_seed) pairs from `EpochSampler` (or a plain index).

    Each sample's augmentation draws from its own generator seeded by the sampler, so the same
    run seed gives the same images whatever the number of workers or where an epoch resumes.
    A file that fails to decode yields None plus its reason; `collate` drops and reports it.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform,
        decode: Callable[[str], Image.Image] = load_rgb,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.decode = decode  # a path -> RGB image (the decoded cache's reader, when built)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, sample_seed = key if isinstance(key, tuple) else (key, key)
        sample = self.samples[index]
        generator = torch.Generator().manual_seed(int(sample_seed))
        try:
            image = self.transform(self.decode(sample.path), generator, sample.label)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return {
                "image": None,
                "label": sample.label,
                "index": index,
                "error": (sample.path, f"{exc}"),
            }
        return {"image": image, "label": sample.label, "index": index, "error": None}


def stack_images(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One (B, ...) tensor when every image has the same shape, as almost always; else the list
    as it is (images smaller than the crop are scored at their own size: see transforms)."""
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    return images


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples of a batch; list the bad ones under `skipped` as (path, reason)."""
    good = [item for item in items if item["image"] is not None]
    skipped = [item["error"] for item in items if item["image"] is None]
    if not good:
        return {"images": None, "labels": None, "indices": None, "skipped": skipped}
    return {
        "images": stack_images([item["image"] for item in good]),  # (B, 3, H, W) or a list
        "labels": torch.tensor([item["label"] for item in good], dtype=torch.float32),  # (B,)
        "indices": torch.tensor([item["index"] for item in good]),
        "skipped": skipped,
    }
