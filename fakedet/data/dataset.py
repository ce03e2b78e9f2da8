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
Deferral = Callable[[str, torch.Generator, int], tuple[torch.Tensor, tuple[int, ...]] | None]


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
        defer: Deferral | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.decode = decode  # a path -> RGB image (the decoded cache's reader, when built)
        # (path, generator, label) -> (JPEG bytes, crop box) to decode on the GPU, or None.
        self.defer = defer

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, sample_seed = key if isinstance(key, tuple) else (key, key)
        sample = self.samples[index]
        item: dict[str, Any] = {"label": sample.label, "index": index, "error": None}
        try:
            if self.defer is not None:
                generator = torch.Generator().manual_seed(int(sample_seed))
                deferred = self.defer(sample.path, generator, sample.label)
                if deferred is not None:
                    encoded, box = deferred
                    return {**item, "image": None, "encoded": encoded, "crop": box,
                            "path": sample.path}  # fmt: skip
            generator = torch.Generator().manual_seed(int(sample_seed))
            image = self.transform(self.decode(sample.path), generator, sample.label)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return {**item, "image": None, "error": (sample.path, f"{exc}")}
        return {**item, "image": image}


def stack_images(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One (B, ...) tensor when every image has the same shape, as almost always; else the list
    as it is (images smaller than the crop are scored at their own size: see transforms)."""
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    return images


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples of a batch; list the bad ones under `skipped` as (path, reason).

    Samples left encoded (`ImageDataset`'s `defer`) go under `encoded` (bytes, crop boxes,
    paths), after the decoded ones in `labels` and `indices`; they become pixels on the
    training device (training/device_decode.py).
    """
    good = [item for item in items if item["image"] is not None]
    encoded = [item for item in items if item.get("encoded") is not None]
    skipped = [item["error"] for item in items if item["error"] is not None]
    if not good and not encoded:
        return {"images": None, "labels": None, "indices": None, "skipped": skipped}
    kept = good + encoded
    batch = {
        "images": stack_images([item["image"] for item in good]) if good else None,
        "labels": torch.tensor([item["label"] for item in kept], dtype=torch.float32),  # (B,)
        "indices": torch.tensor([item["index"] for item in kept]),
        "skipped": skipped,
    }
    if encoded:
        batch["encoded"] = {
            "data": [item["encoded"] for item in encoded],
            "crops": [item["crop"] for item in encoded],
            "paths": [item["path"] for item in encoded],
        }
    return batch
