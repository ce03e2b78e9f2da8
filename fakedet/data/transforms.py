"""Image decoding to RGB and the train/val transforms (crop, flip, blur + JPEG augmentation).

Crops keep the pixel grid, and nothing is ever up-scaled: the traces of generator up-sampling
live in exactly the high frequencies a resize would smear, and up-scaling a real photo
manufactures them (every small real photo was called fake when small images were up-scaled).

The small-image rule, the same in train, validate, evaluate, predict and export:
- a side at least the crop (`img_size`) is cropped to it, as always;
- a side shorter than the crop but at least MIN_SIDE is scored at its native size, cut to the
  largest multiple of INPUT_MULTIPLE that fits (at most 31 pixels of border dropped, no pixel
  resampled): the built-in detectors are convolutional with global pooling and every branch
  works at any such size;
- an image with a side below MIN_SIDE gets no verdict: `TooSmallError` ("too small"), which the
  loaders report like an unreadable file. A fixed-size export (ONNX, TorchScript) takes only its
  own size, so there the minimum is `img_size`.

The optional train-time down-scale (`resize_prob`) is anti-aliased and never goes below the
crop: it moves those traces to other frequencies, the way a re-sized fake on the web carries
them.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from fakedet.data.images import (
    INPUT_MULTIPLE,
    MIN_SIDE,
    TOO_SMALL,
    TooSmallError,
    check_crops,
    crop_shape,
    eval_views,
    load_rgb,
)
from fakedet.data.processing import ProcessingAugment

# Re-exported: load_rgb's and check_crops' old home, and the small-image rule beside the
# transforms that apply it.
__all__ = [
    "INPUT_MULTIPLE",
    "MIN_SIDE",
    "TOO_SMALL",
    "EvalTransform",
    "TooSmallError",
    "TrainTransform",
    "check_crops",
    "crop_shape",
    "load_rgb",
    "pixels_to_float",
    "to_tensor",
]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8. Batches cross from workers as uint8, a quarter of float32's bytes, and
    become [0, 1] floats on the training device (`pixels_to_float`)."""
    # np.array copies, so the tensor owns writable memory. (torchvision's pil_to_tensor does
    # the same, but importing torchvision costs seconds of start-up for one line.)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def pixels_to_float(
    images: torch.Tensor | list[torch.Tensor], device: torch.device
) -> torch.Tensor | list[torch.Tensor]:
    """A uint8 (B, 3, H, W) or (B, views, 3, H, W) batch on `device` as float32 in [0, 1]; a
    float batch (a probe's cached features) as it is; a batch of mixed sizes (a list of
    per-image tensors, see `collate`) image by image."""
    if isinstance(images, list):
        return [image.to(device, non_blocking=True).float().div_(255.0) for image in images]
    if images.is_floating_point():
        return images.to(device, non_blocking=True).float()
    return images.to(device, non_blocking=True).float().div_(255.0)


# Down-scaling filters drawn from (all anti-aliased in Pillow): what web pipelines use.
_RESIZE_FILTERS = (
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
    Image.Resampling.BOX,
)


class TrainTransform:
    """Optional down-scale, random crop, horizontal flip, and Wang et al. (2020) blur + JPEG,
    from a per-sample generator."""

    def __init__(
        self,
        img_size: int,
        hflip: bool,
        blur_prob: float,
        jpeg_prob: float,
        blur_sigma_max: float = 3.0,
        resize_prob: float = 0.0,
        resize_min_scale: float = 0.5,
        processing: ProcessingAugment | None = None,
        processing_real_only: bool = False,
    ) -> None:
        self.img_size = img_size
        self.processing = processing  # everyday processing of the whole image, before the crop
        self.processing_real_only = processing_real_only  # then fakes are never processed
        self.resize_prob = resize_prob
        self.resize_min_scale = resize_min_scale
        self.hflip = hflip
        self.blur_prob = blur_prob
        self.jpeg_prob = jpeg_prob
        self.blur_sigma_max = blur_sigma_max

    def _downscale(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        # Drawn even when the image cannot shrink, so every sample uses the same random stream.
        scale = _uniform(generator, self.resize_min_scale, 1.0)
        choice = int(torch.randint(len(_RESIZE_FILTERS), (1,), generator=generator))
        scale = max(scale, self.img_size / min(image.size))
        if scale >= 1.0:
            return image
        width, height = image.size
        new_size = (
            max(self.img_size, round(width * scale)),
            max(self.img_size, round(height * scale)),
        )
        return image.resize(new_size, _RESIZE_FILTERS[choice])

    def _crop_box(
        self, width: int, height: int, generator: torch.Generator
    ) -> tuple[int, int, int, int]:
        crop_width, crop_height = crop_shape(width, height, self.img_size)
        left = int(torch.randint(width - crop_width + 1, (1,), generator=generator))
        top = int(torch.randint(height - crop_height + 1, (1,), generator=generator))
        return left, top, left + crop_width, top + crop_height

    def crop_only(
        self, width: int, height: int, generator: torch.Generator, label: int | None = None
    ) -> tuple[int, int, int, int] | None:
        """The (left, top, right, bottom) crop that `__call__` with this `generator` would cut
        from a `width` x `height` image when a crop is all it would do to the pixels; None where
        it would process, down-scale, flip, blur or re-encode them. For decoding after the
        crop is drawn (on the GPU): the draws are `__call__`'s, so both give the same crop.

        Raises:
            TooSmallError: as `__call__`.
        """
        if self.processing is not None or self.hflip or self.blur_prob or self.jpeg_prob:
            return None
        if self.resize_prob > 0 and float(torch.rand(1, generator=generator)) < self.resize_prob:
            return None
        return self._crop_box(width, height, generator)

    def __call__(
        self, image: Image.Image, generator: torch.Generator, label: int | None = None
    ) -> torch.Tensor:
        """`label` (1 real, 0 fake) matters only with `processing_real_only`."""
        if self.processing is not None and (not self.processing_real_only or label == 1):
            image = self.processing(image, generator)
        if self.resize_prob > 0 and float(torch.rand(1, generator=generator)) < self.resize_prob:
            image = self._downscale(image, generator)
        image = image.crop(self._crop_box(*image.size, generator))
        if self.hflip and float(torch.rand(1, generator=generator)) < 0.5:
            image = ImageOps.mirror(image)
        if float(torch.rand(1, generator=generator)) < self.blur_prob:
            sigma = _uniform(generator, 0.0, self.blur_sigma_max)
            image = image.filter(ImageFilter.GaussianBlur(sigma))
        if float(torch.rand(1, generator=generator)) < self.jpeg_prob:
            quality = int(torch.randint(30, 101, (1,), generator=generator))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
            buffer.seek(0)
            image = Image.open(buffer).convert("RGB")
        return to_tensor(image)


# Views `--crops` can score: the centre crop alone, or the centre and the four corners.


class EvalTransform:
    """Deterministic: a centre crop (3, S, S) of S = `img_size`, or of the image's native size
    where it is smaller (see the module's small-image rule); with `crops` 5, the centre and the
    four corners (5, 3, S, S).

    Raises (when called):
        TooSmallError: a side below `min_side` (MIN_SIDE; `img_size` for a fixed-size export).
    """

    def __init__(self, img_size: int, crops: int = 1, min_side: int = MIN_SIDE) -> None:
        self.img_size = img_size
        self.crops = check_crops(crops)
        self.min_side = min_side

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None, label: int | None = None
    ) -> torch.Tensor:
        views = [
            to_tensor(view) for view in eval_views(image, self.img_size, self.crops, self.min_side)
        ]
        return views[0] if self.crops == 1 else torch.stack(views)
