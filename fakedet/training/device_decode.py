"""The training process's side of `gpu_decode`: a batch's JPEGs that the loader workers left
encoded are decoded together on the device (nvJPEG on CUDA, libjpeg-turbo on a CPU), cut to
the crop boxes the workers drew, and joined to the batch's decoded images.

The crops are the ones the CPU path would cut (the same draws, see TrainTransform.crop_only);
nvJPEG's pixels may differ from libjpeg-turbo's by a few levels (its IDCT and chroma
up-sampling are its own). A JPEG that nvJPEG refuses is decoded on the CPU instead; one that
fails there too is skipped and reported like any other unreadable file, with its label.
"""

from __future__ import annotations

from typing import Any

import torch

from fakedet.data.dataset import stack_images
from fakedet.data.decode import torchvision_io


def _decode_each(
    data: list[torch.Tensor], paths: list[str], device: torch.device
) -> tuple[list[torch.Tensor | None], list[tuple[str, str]]]:
    """Image by image: on `device`, else on the CPU (libjpeg-turbo takes some files nvJPEG
    refuses), else skipped with the CPU decoder's reason."""
    io = torchvision_io()
    pixels: list[torch.Tensor | None] = []
    skipped: list[tuple[str, str]] = []
    for one, path in zip(data, paths, strict=True):
        try:
            pixels.append(io.decode_jpeg(one, mode=io.ImageReadMode.RGB, device=device))
            continue
        except RuntimeError:
            pass
        try:
            decoded = io.decode_jpeg(one, mode=io.ImageReadMode.RGB)
            pixels.append(decoded.to(device, non_blocking=True))
        except RuntimeError as exc:
            pixels.append(None)
            skipped.append((path, f"{exc}"))
    return pixels, skipped


def decode_on_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """`batch` (from data.dataset.collate) with its `encoded` JPEGs decoded on `device` and
    cropped: `images` then holds every image on `device` as uint8 (a (B, 3, S, S) tensor, or
    a list where sizes differ), in `labels`' order; failed decodes are left out and added to
    `skipped`. A batch without `encoded` is returned as it is."""
    encoded = batch.get("encoded")
    if not encoded:
        return batch
    io = torchvision_io()
    data, paths = encoded["data"], encoded["paths"]
    try:
        # One call for the batch: nvJPEG decodes a list in one batched pass.
        pixels: list[torch.Tensor | None] = list(
            io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device)
        )
        failed: list[tuple[str, str]] = []
    except RuntimeError:  # the batched call fails whole: find the bad files one by one
        pixels, failed = _decode_each(data, paths, device)
    decoded = batch["images"]
    images: list[torch.Tensor] = []
    if isinstance(decoded, torch.Tensor):  # one copy for the stacked ones
        images = list(decoded.to(device, non_blocking=True).unbind(0))
    elif decoded is not None:
        images = [image.to(device, non_blocking=True) for image in decoded]
    keep = [True] * len(images)
    for image, (left, top, right, bottom) in zip(pixels, encoded["crops"], strict=True):
        keep.append(image is not None)
        if image is not None:
            images.append(image[:, top:bottom, left:right])
    mask = torch.tensor(keep)
    return {
        "images": stack_images(images) if images else None,
        "labels": batch["labels"][mask] if images else None,
        "indices": batch["indices"][mask] if images else None,
        "skipped": [*batch["skipped"], *failed],
    }
