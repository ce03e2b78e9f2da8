"""Image decoding to RGB and the train/val transforms (crop, flip, blur + JPEG augmentation).

Crops keep the pixel grid: images are only up-scaled when smaller than the crop, because the
traces of generator up-sampling live in exactly the high frequencies a resize would smear. The
optional train-time down-scale (`resize_prob`) is anti-aliased and never goes below the crop:
it moves those traces to other frequencies, the way a re-sized fake on the web carries them.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from fakedet.data.images import at_least, check_crops, eval_views
from fakedet.data.images import load_rgb as load_rgb  # re-exported: its old home
from fakedet.data.processing import ProcessingAugment


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8. Batches cross from workers as uint8, a quarter of float32's bytes, and
    become [0, 1] floats on the training device (`pixels_to_float`)."""
    # np.array copies, so the tensor owns writable memory. (torchvision's pil_to_tensor does
    # the same, but importing torchvision costs seconds of start-up for one line.)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def pixels_to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 (B, 3, H, W) or (B, views, 3, H, W) batch on `device` as float32 in [0, 1]; a
    float batch (a probe's cached features) as it is."""
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
    ) -> None:
        self.img_size = img_size
        self.processing = processing  # everyday processing of the whole image, before the crop
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

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        if self.processing is not None:
            image = self.processing(image, generator)
        image = at_least(image, self.img_size)
        if self.resize_prob > 0 and float(torch.rand(1, generator=generator)) < self.resize_prob:
            image = self._downscale(image, generator)
        width, height = image.size
        left = int(torch.randint(width - self.img_size + 1, (1,), generator=generator))
        top = int(torch.randint(height - self.img_size + 1, (1,), generator=generator))
        image = image.crop((left, top, left + self.img_size, top + self.img_size))
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
    """Deterministic: upscale only if smaller than the crop, then a centre crop (3, S, S); with
    `crops` 5, the centre and the four corners (5, 3, S, S), for images larger than the crop."""

    def __init__(self, img_size: int, crops: int = 1) -> None:
        self.img_size = img_size
        self.crops = check_crops(crops)

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        views = [to_tensor(view) for view in eval_views(image, self.img_size, self.crops)]
        return views[0] if self.crops == 1 else torch.stack(views)
